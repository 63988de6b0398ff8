"""The same sweep against a real MLflow tracking server (SQL backend in a temp dir), as a cluster would use."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import TINY, finished_runs, run_cli


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


def test_two_cell_sweep_against_a_server(mlflow_server: str, tmp_path) -> None:
    result = run_cli("-m", *TINY, "method=lora", "method.r=2,4", f"tracker.uri={mlflow_server}",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = finished_runs(mlflow_server)
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(runs) == 3 and len(children) == 2
    assert set(children["status"]) == {"FINISHED"}
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to a local store by mistake
