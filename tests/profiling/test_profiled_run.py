"""A profiled QLoRA run through the real CLI: its 4-bit dequantization is found (bitsandbytes' ops by name), the
figures and the trace reach MLflow, and the profiled steps stay out of the throughput."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from support import TINY, finished_runs, run_cli_here

from bench.measure.profile.categories import CATEGORIES


def test_a_profiled_qlora_run_logs_its_breakdown_and_trace(store: str, tmp_path) -> None:  # noqa: ANN001
    # steps 1-2 warm up (and are the ones the tensor accounting watches), 3 is the profiler's warm-up, 4-6 are
    # profiled, 7 pays for the stop, 8-9 are timed
    result = run_cli_here(*TINY, "method=qlora", "data.max_train_samples=72", "trainer.max_steps=9",
                          "monitor.warmup_steps=2",
                          "monitor.profile=true", "monitor.profile_steps=3", f"tracker.uri={store}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = finished_runs(store).iloc[0]
    assert run["status"] == "FINISHED" and run["tags.prof/window"] == "steps 4-6"
    assert run["metrics.prof/dequant_ms"] > 0  # bitsandbytes' dequantize ops, forward and backward
    assert run["metrics.prof/adapter_ms"] > 0 and run["metrics.prof/base_matmul_ms"] > 0
    assert sum(run[f"metrics.prof/{name}_pct"] for name in CATEGORIES) == pytest.approx(100.0)
    assert run["metrics.train/profiled_steps_excluded"] == 5
    assert run["metrics.train/timed_steps"] == 2
    listed = {a.path for a in mlflow.MlflowClient(store).list_artifacts(run["run_id"], "monitor/profile")}
    assert listed == {"monitor/profile/trace.json.gz", "monitor/profile/ops.csv"}


def test_profiling_is_off_by_default(store: str, tmp_path) -> None:  # noqa: ANN001
    result = run_cli_here(*TINY, "method=lora", f"tracker.uri={store}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = finished_runs(store).iloc[0]
    assert not [key for key in run.index if key.startswith(("metrics.prof/", "tags.prof/")) and not
                pd.isna(run[key])]
    assert run["metrics.train/profiled_steps_excluded"] == 0
