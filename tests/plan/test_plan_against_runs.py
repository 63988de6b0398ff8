"""The plan a run makes before training against the tensor peak it then measures, within
`support.PLAN_TOLERANCE_PCT`: the variants on the causal LM (the classifier's are in tests/variants, full/LoRA/
QLoRA in tests/e2e and tests/causal), and each memory lever on both tasks."""

from __future__ import annotations

import pytest
from support import TINY, TINY_CAUSAL, assert_plan_matches, finished_runs, run_cli_here, techniques

# Every variant on the causal LM, the first six and any added since; LongLoRA has its own run in tests/variants.
CAUSAL_VARIANTS = tuple(name for name in techniques(causal=True, variants_only=True) if name != "longlora")
LEVERS = {"checkpointing": ["trainer.gradient_checkpointing=true"],
          "adamw_8bit": ["trainer.optimizer=adamw_8bit"],
          "accumulation": ["trainer.grad_accum_steps=2", "trainer.batch_size=4"]}


def _planned_and_measured(overrides: list[str], store: str, tmp_path) -> object:
    result = run_cli_here(*overrides, f"tracker.uri={store}", "tracker.log_model=false",
                          f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = finished_runs(store).iloc[0]
    assert run["status"] == "FINISHED"
    assert not isinstance(run.get("tags.plan/error"), str), run["tags.plan/error"]  # the plan was made
    return run


@pytest.mark.parametrize("technique", CAUSAL_VARIANTS)
def test_each_variant_on_the_causal_lm(technique: str, store: str, tmp_path) -> None:
    group = ["method.group_size=32"] if technique == "qalora" else []
    run = _planned_and_measured([*TINY_CAUSAL, f"method={technique}", *group], store, tmp_path)
    assert run["tags.technique"] == technique
    assert_plan_matches(run)


@pytest.mark.parametrize("lever", sorted(LEVERS))
@pytest.mark.parametrize("technique", ["full", "lora", "qlora"])
@pytest.mark.parametrize("task", ["classification", "causal_lm"])
def test_each_lever(task: str, technique: str, lever: str, store: str, tmp_path) -> None:
    base = TINY if task == "classification" else TINY_CAUSAL
    run = _planned_and_measured([*base, f"method={technique}", *LEVERS[lever]], store, tmp_path)
    for override in LEVERS[lever]:  # the run took the lever, and so did its plan
        key, value = override.split("=")
        assert str(run[f"params.{key}"]).lower() == value
    assert_plan_matches(run)
