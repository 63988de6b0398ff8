"""What a user sees in the terminal: bench's own lines, while the libraries' messages and warnings go to each
run's log file (bench.run.console)."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pytest
from support import TINY, finished_runs, run_cli

# Every line bench itself writes during a sweep of two cells, and its progress bar (`lora tiny-bert:  50%|...`).
OWN_LINE = re.compile(r"(sweep \w+(:| done:) |log: |cell \d+/\d+(:| skipped| failed)|results: run |view: |report: "
                      r"|time: |note: |test: |warning: data=|deploy |(lora|qlora) tiny-bert: )")
# What the libraries said in these runs, found in the log files instead.
LIBRARY_NOISE = ("FutureWarning", "gemm_4bit_forward", "Loading weights", "INFO mlflow")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory):
    """A LoRA and a QLoRA cell (bitsandbytes and transformers both speak), run as a user runs them."""
    folder = tmp_path_factory.mktemp("console")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    result = run_cli("-m", *TINY, "method=lora,qlora", f"tracker.uri={store}",
                     f"hydra.sweep.dir={folder / 'sweep'}", cwd=folder)
    return result, store, folder


def test_the_console_holds_only_bench_lines(sweep) -> None:
    result, _, _ = sweep
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    foreign = [line[:200] for line in lines if not OWN_LINE.match(line)]
    assert not foreign, foreign
    assert sum(line.startswith("log: ") for line in lines) == 1  # the logs' place, said once
    assert any(line.startswith("results: run ") for line in lines)


def test_library_messages_land_in_each_cell_log_and_its_artifact(sweep) -> None:
    _, store, folder = sweep
    logs = sorted((folder / "sweep").glob("*/bench.log"))
    assert len(logs) == 2
    qlora = next(text for text in (log.read_text() for log in logs) if "bitsandbytes" in text)
    assert "FutureWarning" in qlora  # a Python warning, through the py.warnings logger
    client = mlflow.MlflowClient(store)
    cells = finished_runs(store).dropna(subset=["tags.technique"])
    for run_id in cells["run_id"]:
        assert [a.path for a in client.list_artifacts(run_id, "log")] == ["log/bench.log"]


def test_verbose_brings_the_libraries_back(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli(*TINY, "method=qlora", f"tracker.uri={store}", f"hydra.run.dir={tmp_path / 'o'}",
                     cwd=tmp_path, env={"BENCH_VERBOSE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert "FutureWarning" in console and "gemm_4bit_forward" in console
    assert any(noise in console for noise in LIBRARY_NOISE)
