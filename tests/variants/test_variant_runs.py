"""Every variant through the real CLI: one sweep runs them all on a tiny BERT and the report sets each beside its
parent; LongLoRA runs on the tiny Llama; a variant asked of a model it cannot serve gets one clear line."""

from __future__ import annotations

import pytest
from support import (
    REQUIRED_METRICS,
    TINY,
    assert_one_error_line,
    assert_plan_matches,
    finished_runs,
    run_cli,
    techniques,
)

from bench.techniques import technique as registered

# Every variant that trains a classifier, the six first and any added since (LoRA+, VeRA), with its parent.
CLASSIFICATION_VARIANTS = tuple(techniques(variants_only=True))
FIRST_PARENTS = {"dora": "lora", "rslora": "lora", "pissa": "lora", "olora": "lora", "loftq": "qlora",
                 "qalora": "qlora"}
PARENTS = {name: registered(name).parent for name in CLASSIFICATION_VARIANTS}
FIRST_BASES = {"lora": "16-bit", "dora": "16-bit", "rslora": "16-bit", "pissa": "16-bit", "olora": "16-bit",
               "qlora": "nf4", "loftq": "nf4", "qalora": "int4-affine"}
BASES = {name: registered(name).base for name in sorted({*CLASSIFICATION_VARIANTS, *PARENTS.values()})}


def test_the_first_variants_keep_their_parents_and_bases() -> None:
    """The registry still says what the table of techniques said before each technique became a module."""
    assert {name: PARENTS[name] for name in FIRST_PARENTS} == FIRST_PARENTS
    assert {name: BASES[name] for name in FIRST_BASES} == FIRST_BASES


@pytest.fixture(scope="module")
def variant_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, object]:
    folder = tmp_path_factory.mktemp("variants")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    methods = ",".join(BASES)
    # two cells at a time (joblib), each in its own process: the sweep takes half the time on two cores. One rank
    # for all (VeRA's YAML says 256): the report sets a variant beside its parent at the same rank.
    result = run_cli("-m", *TINY, f"method={methods}", "method.group_size=32", "method.r=8", f"tracker.uri={store}",
                     "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={folder / 'sweep'}",
                     cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"cell {len(BASES)}/{len(BASES)}" in result.stdout and f"{len(BASES)} finished" in result.stdout
    return store, folder


def test_each_variant_finishes_with_every_metric(variant_sweep) -> None:
    store, _ = variant_sweep
    runs = finished_runs(store)
    children = runs[runs["tags.mlflow.parentRunId"].notna()].set_index("tags.technique")
    assert sorted(children.index) == sorted(BASES)
    assert set(children["status"]) == {"FINISHED"}
    for technique, base in BASES.items():
        run = children.loc[technique]
        assert run["tags.base"] == base
        for metric in REQUIRED_METRICS:
            assert f"metrics.{metric}" in run and run[f"metrics.{metric}"] == run[f"metrics.{metric}"], metric
        assert_plan_matches(run)
    bits = children["metrics.mem/weight_bits_per_param"]
    assert bits["qalora"] < 8 and bits["loftq"] < 8 and bits["dora"] == bits["lora"]
    # QA-LoRA's adapters fold into the zero points: the merged 4-bit model gives the trained model's outputs,
    # within two bf16 steps of the largest logit (the zero points are held in the bf16 compute dtype)
    assert children.loc["qalora", "metrics.qalora/merge_rel_diff"] <= 2 ** -6
    assert children.loc["loftq", "metrics.loftq/weight_error_loftq"] < children.loc["loftq",
                                                                                     "metrics.loftq/weight_error_nf4"]
    # PiSSA and OLoRA ship a plain LoRA delta against the original weights: rank 2r, twice LoRA's adapter
    for converted in ("pissa", "olora"):
        ratio = children.loc[converted, "metrics.artifact/adapter_bytes"] / children.loc["lora",
                                                                                         "metrics.artifact/adapter_bytes"]
        assert 1.3 < ratio < 2.0, (converted, ratio)  # the head is saved once either way


def test_the_report_sets_each_variant_beside_its_parent(variant_sweep) -> None:
    from bench.report.build import build_report

    store, folder = variant_sweep
    built = build_report(uri=store, experiment="bench", sweep_id=None, out=folder / "report")
    summary = (built.folder / "summary.md").read_text()
    section = summary.split("## Variants against their parent")[1]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "variant" not in line]
    assert len(rows) == len(CLASSIFICATION_VARIANTS)
    for row in rows:
        variant, parent = (cell.strip().split()[0] for cell in row.strip("|").split("|")[:2])
        assert PARENTS[variant] == parent
    assert 'id="variants"' in (built.folder / "index.html").read_text()


def test_longlora_trains_a_causal_lm(tmp_path, store: str) -> None:
    result = run_cli("model=tiny-llama", "method=longlora", "data.max_train_samples=16", "data.max_eval_samples=8",
                     "data.max_length=48", "data.general_eval_chunks=2", "trainer.batch_size=8",
                     "trainer.max_steps=2", "trainer.threads=1", f"tracker.uri={store}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning: method=longlora with data.max_length=48" in result.stderr  # groups of 12 tokens
    run = finished_runs(store).iloc[0]
    assert run["status"] == "FINISHED" and run["tags.technique"] == "longlora"
    assert "embed_tokens" in run["tags.also_trained"] and "norm" in run["tags.also_trained"]
    assert run["metrics.eval/perplexity"] > 0
    assert_plan_matches(run)


def test_longlora_on_an_encoder_is_one_line(tmp_path) -> None:
    result = run_cli(*TINY, "method=longlora", cwd=tmp_path)
    assert_one_error_line(result, "method=longlora", "causal LM", "task=causal_lm")


def test_qalora_group_size_that_does_not_divide_the_inputs_is_one_line(tmp_path) -> None:
    result = run_cli(*TINY, "method=qalora", "method.group_size=48", cwd=tmp_path)
    assert_one_error_line(result, "method.group_size=48", "64")
