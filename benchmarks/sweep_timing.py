"""Sweep overheads: a 6-cell tiny sweep run serially and with joblib (n_jobs=2), and the gap between cells.

The gap is measured from MLflow's own clock: from one cell's run end to the next cell's training start
(`timing/train_start_ms`), in the serial sweep. It covers the cell's fresh process (interpreter and imports,
also logged alone as `timing/cell_start_s`), Hydra's job set-up, MLflow run creation, data loading, model
build, and the skip check. Run: `python benchmarks/sweep_timing.py` (about 2 minutes).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CELLS = ["method=lora", "method.r=2,4,8", "seed=1,2"]  # 6 cells
TINY = ["model=tiny-bert", "data.max_train_samples=64", "data.max_eval_samples=32", "data.max_length=32",
        "trainer.batch_size=8", "trainer.max_steps=4", "trainer.epochs=1", "tracker.log_model=false"]


def _sweep(folder: Path, *extra: str) -> float:
    command = [sys.executable, "-m", "bench.cli", "run", "-m", *TINY, *CELLS, *extra,
               f"tracker.uri=sqlite:///{folder / 'mlflow.db'}", f"hydra.sweep.dir={folder / 'sweep'}"]
    started = time.perf_counter()
    subprocess.run(command, cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - started


def _gaps(folder: Path) -> tuple[list[float], list[float]]:
    """(gaps between cells, each cell's `timing/cell_start_s`) of the sweep in `folder`."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["bench"])
    runs = runs[runs["tags.mlflow.parentRunId"].notna()].sort_values("start_time")
    ends_ms = [end.timestamp() * 1000 for end in runs["end_time"]][:-1]
    starts_ms = runs["tags.timing/train_start_ms"].astype("int64").tolist()[1:]
    gaps = [(start - end) / 1000 for end, start in zip(ends_ms, starts_ms, strict=True)]
    return gaps, runs["metrics.timing/cell_start_s"].tolist()


def main() -> None:
    with tempfile.TemporaryDirectory() as serial_dir, tempfile.TemporaryDirectory() as parallel_dir:
        serial = _sweep(Path(serial_dir))
        parallel = _sweep(Path(parallel_dir), "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
        gaps, starts = _gaps(Path(serial_dir))
    print(f"6-cell tiny sweep, serial: {serial:.1f} s wall")
    print(f"6-cell tiny sweep, joblib n_jobs=2: {parallel:.1f} s wall")
    print(f"gap between cells (run end -> next training start), serial: median {statistics.median(gaps):.2f} s, "
          f"min {min(gaps):.2f} s, max {max(gaps):.2f} s over {len(gaps)} gaps")
    print(f"a cell's fresh process (timing/cell_start_s): median {statistics.median(starts):.2f} s, "
          f"min {min(starts):.2f} s, max {max(starts):.2f} s")


if __name__ == "__main__":
    main()
