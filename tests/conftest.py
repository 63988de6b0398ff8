"""Shared fixtures: a throw-away MLflow store, a tiny-model cache, a real MLflow server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import REQUIRED_METRICS, TINY, finished_runs, reset_mlflow_globals, run_cli  # noqa: F401 - re-exported

from bench.tracking.tracker import STRICT_METRICS

# Every test logs strictly: a metric name bench.core.metrics does not define raises where it is logged, in this
# process and in every process a test starts (they inherit the environment), so a typo fails the suite.
os.environ[STRICT_METRICS] = "1"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `gpu` need CUDA, wherever they live: skipped, with the reason, where torch sees no GPU."""
    if item.get_closest_marker("gpu") is None:
        return
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (marked gpu)")


@pytest.fixture(scope="session", autouse=True)
def _tiny_model_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["BENCH_CACHE"] = str(tmp_path_factory.mktemp("bench-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from a hub in tests


@pytest.fixture(autouse=True)
def _mlflow_globals_reset():
    """`mlflow.set_tracking_uri` (as `finished_runs` calls it) also sets $MLFLOW_TRACKING_URI, which every later
    test and its subprocesses would inherit: each test starts from the environment the session started with."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")
    before = {name: os.environ.get(name) for name in names}
    yield
    reset_mlflow_globals()
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def start():
    """`start(*argv, cwd=...)`: `bench <argv>` in the background (`support.start_bench`); whatever a test leaves
    running, the process and the cells it started, is killed afterwards rather than left training on."""
    import psutil
    from support import start_bench

    started: list[subprocess.Popen] = []

    def run(*argv: str, cwd: Path) -> subprocess.Popen:
        started.append(start_bench(*argv, cwd=cwd))
        return started[-1]

    yield run
    for process in started:
        if process.poll() is None:
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
        process.communicate()


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh SQLite tracking URI."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(1)
    else:
        server.kill()
        pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
    yield url
    server.send_signal(signal.SIGTERM)  # stop it by its PID; its workers go with it
    server.wait(timeout=60)
    log.close()
