"""`bench ui`: the MLflow UI on the store bench wrote, its experiment's runs link printed, and that page opened in a
browser where there is one ($BROWSER here: a script that writes down what it was asked to open)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import time
import urllib.request
from pathlib import Path

import mlflow
from support import call_main

from bench.tracking.ui_server import can_open_browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _recording_browser(folder: Path) -> tuple[Path, Path]:
    """A `$BROWSER` that writes the URL it is given into a file, as a desktop browser would open it."""
    opened = folder / "opened.txt"
    script = folder / "browser.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s" "$1" > "{opened}"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, opened


def test_bench_ui_serves_the_store_and_opens_the_experiments_runs(tmp_path: Path, start) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = mlflow.MlflowClient(store).create_experiment("bench")
    port = _free_port()
    script, opened = _recording_browser(tmp_path)
    os.environ["BROWSER"] = str(script)  # the process started below inherits it (the fixture restores the env)
    try:
        process = start("ui", "--uri", store, "--port", str(port), cwd=tmp_path)
    finally:
        del os.environ["BROWSER"]
    page = f"http://127.0.0.1:{port}/#/experiments/{experiment_id}?workflowType=machine_learning"
    deadline = time.monotonic() + 180
    while not opened.is_file() and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.5)
    assert opened.read_text() == page  # opened once the UI answered, on the runs of the experiment
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        assert response.status == 200
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode in (0, 130, -signal.SIGTERM), err[-2000:]
    assert f"MLflow UI for {store}, experiment 'bench': {page}" in out


def test_bench_ui_refuses_a_missing_store_and_a_taken_port(tmp_path: Path) -> None:
    missing = call_main(["ui", "--uri", f"sqlite:///{tmp_path / 'none.db'}", "--no-browser"], cwd=tmp_path)
    assert missing.returncode == 2 and "error: no MLflow store at" in missing.stderr
    assert not (tmp_path / "none.db").exists()  # not created by looking for it
    store = tmp_path / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{store}").create_experiment("bench")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = call_main(["ui", "--uri", f"sqlite:///{store}", "--port", str(port), "--no-browser"], cwd=tmp_path)
    assert busy.returncode == 2 and f"127.0.0.1:{port} is in use" in busy.stderr


def test_no_browser_is_started_in_a_terminal_session(monkeypatch) -> None:
    for name in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert not can_open_browser()  # over SSH: the link is printed, no lynx takes over the terminal
    monkeypatch.setenv("DISPLAY", ":0")
    assert can_open_browser()
