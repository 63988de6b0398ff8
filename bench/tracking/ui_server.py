"""`bench ui`: the MLflow UI on bench's store, opened on the page that shows the runs.

`mlflow ui` alone needs the store spelled out (`--backend-store-uri sqlite:///...`), serves on 5000 and opens on an
experiment list; MLflow 3.17 then opens an experiment on its GenAI pages unless the link chooses the model-training
view (bench.tracking.ui_meta). `bench ui` serves the store bench wrote (the same fallback as `bench run`), prints the
experiment's runs link with that view, and opens it in a browser once the UI answers, where there is a browser to
open: a desktop session (macOS, Windows, or $DISPLAY / $WAYLAND_DISPLAY on Linux) or $BROWSER. A console browser
that Python would otherwise pick over SSH (lynx, w3m) is never started in the user's terminal.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.config import ConfigError

READY_TIMEOUT_S = 120  # `mlflow ui` answers after ~15 s on a quiet machine


def experiment_page(uri: str, experiment: str, *, address: str) -> str:
    """The experiment's runs link (model-training view); the experiment list where the store has no such one."""
    import mlflow

    from bench.tracking.ui_meta import TRAINING_VIEW, ui_link

    found = mlflow.MlflowClient(uri).get_experiment_by_name(experiment)
    if found is None:
        return f"{address}/#/experiments?{TRAINING_VIEW}"
    return ui_link(found.experiment_id, address=address)


def check_store(uri: str) -> None:
    """A SQLite store must exist: `mlflow ui` would create an empty one and show nothing."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"no MLflow store at {uri}: `bench run` creates it, or give --uri")


def check_port(host: str, port: int) -> None:
    """Say it at once when the port is taken (another UI?), instead of through the server's traceback."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as error:
            raise ConfigError(f"{host}:{port} is in use ({error.strerror}); another `bench ui`? choose --port N")\
                from None


def serve(*, uri: str, experiment: str, host: str, port: int, browser: bool) -> int:
    """Run `mlflow ui` on the store until it stops or Ctrl-C; print the page to open and open it where one can."""
    from bench.tracking.store import redact_uri

    check_store(uri)
    check_port(host, port)
    address = f"http://{host}:{port}"
    page = experiment_page(uri, experiment, address=address)
    print(f"MLflow UI for {redact_uri(uri)}, experiment '{experiment}': {page}\n"
          f"(bound to {host} only; Ctrl-C stops it)", flush=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    server = subprocess.Popen(command)
    try:
        if browser and _wait_ready(address, server) and can_open_browser():
            import webbrowser

            webbrowser.open(page)
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()  # SIGTERM to its main process stops its workers too
        server.wait(timeout=30)
        return 130


def can_open_browser() -> bool:
    """Whether a graphical browser can open here (or $BROWSER names one), so nothing starts in the terminal."""
    if os.environ.get("BROWSER"):
        return True
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _wait_ready(address: str, server: subprocess.Popen) -> bool:
    """True once the UI answers its health check; False if it ended first or never answered."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{address}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    return False
