"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`): the protocol's JSON
messages, each ended by a NUL byte, on the browser's file descriptors 3 (commands in) and 4 (replies and events
out). Standard library only: no websocket client, no browser-automation package."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


class ProtocolError(RuntimeError):
    """The browser answered a command with an error, or stopped answering."""


class Browser:
    """`with Browser(chromium, profile) as browser:` one headless Chromium; `browser.page()` opens a tab."""

    def __init__(self, chromium: str, profile: Path, *, width: int = 1600, height: int = 1000) -> None:
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", f"--window-size={width},{height}", f"--user-data-dir={profile}", "about:blank"]
        # fds 3 and 4 of the browser are the two pipes: a small Python sets them up, then becomes the browser
        wiring = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
                  "os.execv(sys.argv[3], sys.argv[3:])")
        profile.mkdir(parents=True, exist_ok=True)
        self.log = (profile.parent / f"{profile.name}.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", wiring, str(commands_read), str(replies_write), chromium, *flags],
            pass_fds=(commands_read, replies_write), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        os.close(commands_read)
        os.close(replies_write)
        self.size = (width, height)
        self._next_id, self._buffer, self.events = 0, b"", []

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_: Any) -> None:
        with contextlib.suppress(ProtocolError, OSError):
            self.send("Browser.close", timeout=10)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()  # the browser this test started, by its own handle
            self.process.wait(timeout=20)
        for fd in (self._commands, self._replies):
            os.close(fd)
        self.log.close()

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = 30) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are kept in `events`)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {},
                   **({"sessionId": session} if session else {})}
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ProtocolError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise ProtocolError("the browser did not answer in time")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise ProtocolError("the browser closed its pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def page(self) -> Page:
        """A new tab, at the browser's window size, attached in flat mode (its iframes get sessions of their own)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for method in ("Page.enable", "Runtime.enable"):
            page.send(method)
        page.send("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": False, "flatten": True})
        width, height = self.size
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return page


class Page:
    """One tab: navigate, evaluate JavaScript (in the page or in one of its frames), wait, screenshot."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session

    def send(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 30) -> dict[str, Any]:
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str, *, session: str | None = None, context: int | None = None) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise), in the page or a frame's session
        or execution context."""
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True,
                  **({"contextId": context} if context is not None else {})}
        result = self.browser.send("Runtime.evaluate", params, session=session or self.session)
        if "exceptionDetails" in result:
            raise ProtocolError(f"{expression[:80]}: {result['exceptionDetails'].get('text')} "
                                f"{result['exceptionDetails'].get('exception', {}).get('description', '')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 90, what: str = "", **where: Any) -> Any:
        """Evaluate `expression` until it is truthy (the single-page app renders as its requests return)."""
        deadline, value = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression, **where)
            except ProtocolError:
                value = None  # a page between two documents, a frame not yet there
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what or expression}; last value {value!r}")

    def frame_sessions(self) -> list[str]:
        """Sessions of the out-of-process frames attached so far (a sandboxed iframe gets its own process)."""
        self.evaluate("1")  # drain pending events
        return [event["params"]["sessionId"] for event in self.browser.events
                if event["method"] == "Target.attachedToTarget" and event.get("sessionId") == self.session
                and event["params"]["targetInfo"]["type"] == "iframe"]

    def frame_contexts(self, frame_id: str) -> list[int]:
        """Execution contexts of an in-process frame, newest first."""
        self.evaluate("1")
        return [event["params"]["context"]["id"] for event in reversed(self.browser.events)
                if event["method"] == "Runtime.executionContextCreated" and event.get("sessionId") == self.session
                and event["params"]["context"].get("auxData", {}).get("frameId") == frame_id]

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"}, timeout=60)["data"]
        path.write_bytes(base64.b64decode(data))
        return path
