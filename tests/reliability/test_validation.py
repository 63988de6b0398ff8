"""Validation before any heavy work: each bad input is one line, exit code 2, no traceback.

The catalogue goes through `bench.cli.main` in this process (`run_cli_here`: the same exit status, stdout and
stderr, without a fresh interpreter's imports per case); one case also runs as a real process."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support import TINY, assert_one_error_line, finished_runs, run_cli_here

CASES = {
    "unknown model": (["model=bert-huge"], ("bert-huge", "minilm")),
    "unknown method": (["method=prefix"], ("prefix", "qlora")),
    "unknown data": (["data=reddit"], ("reddit", "tweets")),
    "unknown sweep": (["sweep=everything"], ("everything", "paper")),
    "unknown experiment": (["experiment=nope"], ("nope", "quick")),
    "rank zero": (["method.r=0"], ("method.r=0",)),
    "negative alpha": (["method.alpha=-2"], ("method.alpha=-2",)),
    "zero learning rate": (["trainer.lr=0"], ("trainer.lr=0",)),
    "dropout one": (["method.dropout=1"], ("method.dropout=1", "[0, 1)")),
    "negative dropout": (["method.dropout=-0.1"], ("method.dropout=-0.1",)),
    "batch size zero": (["trainer.batch_size=0"], ("trainer.batch_size=0",)),
    "bad bias": (["method.bias=some"], ("some", "lora_only")),
    "bad quant type": (["method=qlora", "method.quant_type=int3"], ("int3", "nf4")),
    "bad dtype": (["method.dtype=fp8"], ("fp8", "bf16")),
    "max_length over limit": (["data.max_length=100000"], ("100000", "limit")),
    "unknown target preset": (["method.target_modules=everything"], ("everything", "all-linear")),
    "targets that match nothing": (["method.target_modules=[wq,wv]"], ("wq", "query")),
    "missing text column": (["data.text_column=body"], ("body", "sentiment")),
    "labels outside the label set": (["data.labels=[negative,positive]"], ("neutral", "data.labels")),
    "eval fraction out of range": (["data.eval_fraction=1.5"], ("data.eval_fraction=1.5",)),
    "missing model.path": (["model=local"], ("model.path",)),
    "model.path not a folder": (["model.path=/no/such/model"], ("/no/such/model",)),
    "model.path without config.json": (["model.path=/tmp"], ("config.json",)),
    "local data without a path": (["data=local"], ("data.path",)),
    "cuda without a GPU": (["trainer.device=cuda"], ("trainer.device='cuda'", "cpu")),
    "unknown top-level key": (["+epochs=3"], ("epochs", "valid keys")),
    "output dir escaping with ..": (["output_dir=../../escape"], ("..", "output_dir")),
    "output dir not writable": (["output_dir=/proc/bench-out"], ("/proc/bench-out",)),
    "unreachable tracking server": (["tracker.uri=http://127.0.0.1:9"], ("127.0.0.1:9", "cannot be reached")),
    "tracking folder missing": (["tracker.uri=sqlite:////no/such/dir/mlflow.db"], ("/no/such/dir",)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_exit_2(case: str, store: str, tmp_path) -> None:
    overrides, needles = CASES[case]
    has_tracker = any(o.startswith("tracker.uri=") for o in overrides)
    extra = [] if has_tracker else [f"tracker.uri={store}"]
    result = run_cli_here(*TINY, *overrides, *extra, f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert_one_error_line(result, *needles)


def test_bad_value_in_a_real_process_is_one_line_and_exit_2(store: str, tmp_path) -> None:
    """One case of the catalogue as its own process, through `python -m bench.cli`: the check happens inside the
    Hydra app, whose `sys.exit(2)` must become the process's exit status with nothing but the one line."""
    result = subprocess.run([sys.executable, "-m", "bench.cli", "run", *TINY, "method.r=0", f"tracker.uri={store}",
                             f"hydra.run.dir={tmp_path / 'out'}"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert_one_error_line(result, "method.r=0")


def test_fast_failures_leave_no_run_behind(store: str, tmp_path) -> None:
    """Errors found before the run starts record nothing; nothing is left RUNNING either way."""
    run_cli_here(*TINY, "method.r=0", f"tracker.uri={store}", f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    run_cli_here(*TINY, "data.text_column=body", f"tracker.uri={store}", f"hydra.run.dir={tmp_path / 'o2'}",
                 cwd=tmp_path)
    runs = finished_runs(store)
    assert list(runs["status"]) == ["FAILED"]  # only the data error, found after the run started
    assert runs.iloc[0]["tags.failure"] == "config"
