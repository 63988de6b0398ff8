"""The default `bench run` on the real packaged MiniLM and tweets beats the majority-class baseline."""

from __future__ import annotations

import pytest
from support import finished_runs, run_cli


@pytest.mark.slow
def test_default_config_learns_on_the_real_model(store: str, tmp_path) -> None:
    result = run_cli(f"tracker.uri={store}", f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = finished_runs(store).iloc[0]
    assert run["tags.model"] == "minilm" and run["tags.dataset"] == "tweets"
    assert run["metrics.params/total"] > 22_000_000  # the real 22.7M-parameter MiniLM, not a tiny one
    assert run["metrics.eval/accuracy"] > run["metrics.eval/majority_baseline"] + 0.10
