"""Helpers shared by every test folder: the shrunk config, the real CLI in a subprocess, store queries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Tests compose the real config, then shrink it: a 2-layer random model, a few rows, a couple of steps.
TINY = ["model=tiny-bert", "data.max_train_samples=48", "data.max_eval_samples=24", "data.max_length=32",
        "trainer.batch_size=8", "trainer.max_steps=2", "trainer.epochs=1", "trainer.threads=1"]

# Every metric the walking-skeleton issue requires on every run.
REQUIRED_METRICS = (
    "eval/accuracy", "eval/f1", "eval/loss", "eval/majority_baseline",
    "train/loss", "train/time_s", "train/samples_per_s", "train/tokens_per_s",
    "params/trainable", "params/total", "params/trainable_pct",
    "mem/peak_bytes", "mem/weights_bytes", "mem/weight_bits_per_param", "artifact/adapter_bytes",
)


def run_cli(*overrides: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`bench run <overrides>` in a subprocess, exactly as a user runs it."""
    command = [sys.executable, "-c", "import sys; from bench.cli import main; sys.exit(main())", "run", *overrides]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def finished_runs(uri: str, experiment: str = "bench"):
    """All runs of an experiment as a pandas frame (metrics.*, params.*, tags.*)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])


def assert_one_error_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Bad input: exit code 2, no traceback, exactly one `error:` line, naming every needle."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
