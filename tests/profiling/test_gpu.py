"""On CUDA (skipped without it): a profiled run splits kernel time, and keeps the allocator's memory history of the
profiled steps beside the trace."""

from __future__ import annotations

import pickle

import pytest
import torch
from support import TINY, finished_runs, run_cli_here

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_profile_has_kernel_times_and_the_memory_history(store: str, tmp_path) -> None:  # noqa: ANN001
    result = run_cli_here(*TINY, "method=qlora", "trainer.device=cuda", "data.max_train_samples=64",
                          "trainer.max_steps=8", "monitor.warmup_steps=2", "monitor.profile=true",
                          f"tracker.uri={store}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = finished_runs(store).iloc[0]
    assert run["metrics.prof/base_matmul_ms"] > 0 and run["metrics.prof/dequant_ms"] > 0
    snapshot = next(tmp_path.rglob("memory_snapshot.pickle"))
    with snapshot.open("rb") as handle:
        assert pickle.load(handle)["device_traces"]  # torch.cuda.memory._snapshot()'s allocator events
    assert "memory_snapshot.pickle" in run["tags.prof/artifacts"]
