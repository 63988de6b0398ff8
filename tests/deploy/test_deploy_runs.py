"""Deployment cost measured by real (tiny) runs: every form of every kind of technique is saved, loaded back and
agrees with the model it came from; the re-quantized form really holds 4-bit weights; a failure while measuring
leaves the run and its training figures standing."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import TINY, TINY_CAUSAL, finished_runs, run_cli_here, techniques

from bench.techniques import technique as registered

# Short serving figures: the tests check what is measured, not how fast.
QUICK = ["deploy.measure=true", "deploy.max_seconds=0.2", "deploy.min_repeats=3", "deploy.load_repeats=1",
         "deploy.throughput_batch=8", "deploy.new_tokens=4"]
# A form loaded back, or merged into 16 bits, computes what the model it came from computes, up to rounding: the
# largest logit difference stays within 2 % of the largest logit (bf16 keeps 8 significant bits, 0.4 % a
# rounding; the tiny models' two layers add a few).
AGREE = 0.02
FORMS = {"full": ["full"], "lora": ["base", "unmerged", "merged16"], "dora": ["base", "unmerged", "merged16"],
         "pissa": ["base", "unmerged", "merged16"], "qlora": ["base", "unmerged", "merged16", "merged4"],
         "loftq": ["base", "unmerged", "merged16", "merged4"], "qalora": ["base", "unmerged", "merged4"]}


def expected_forms(technique: str) -> list[str]:
    """The forms a technique ships in, from what its module says of it: full fine-tuning its checkpoint; an
    adapter its base, itself on the base and merged into 16 bits, and into 4 bits again on a bitsandbytes base;
    QA-LoRA's INT4 base only the merge into its zero points."""
    found = registered(technique)
    if not found.uses_adapter:
        return ["full"]
    if found.base == "int4-affine":
        return ["base", "unmerged", "merged4"]
    return ["base", "unmerged", "merged16", *(["merged4"] if found.base == "nf4" else [])]


SERVING = ("latency_p50_ms", "latency_p90_ms", "rows_per_s")
GENERATING = ("ttft_ms", "gen_tokens_per_s")


def _without_deploy(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not o.startswith("deploy.")]


def _run(tmp_path: Path, *overrides: str, causal: bool = False):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli_here(*_without_deploy(TINY_CAUSAL if causal else TINY), *QUICK, *overrides,
                          f"tracker.uri={store}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = finished_runs(store)
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    return runs.iloc[0], result.stdout


def test_the_forms_each_technique_ships_in_follow_from_its_module() -> None:
    assert {technique: expected_forms(technique) for technique in FORMS} == FORMS


@pytest.mark.parametrize("technique", techniques())
def test_every_form_is_measured_and_agrees_with_the_model_it_came_from(tmp_path: Path, technique: str) -> None:
    """Every technique that trains a classifier, the ten first and any added since."""
    run, printed = _run(tmp_path, f"method={technique}", *(["deploy.keep=true"] if technique == "qlora" else []))
    forms = expected_forms(technique)
    assert run["tags.deploy/forms"] == ",".join(forms)
    scale = run["metrics.deploy/max_abs_logit"]
    for form in forms:
        assert run[f"metrics.deploy/{form}/bytes"] > 0
        for key in SERVING:
            low, value, high = (run[f"metrics.deploy/{form}/{key}{end}"] for end in ("_low", "", "_high"))
            assert 0 < low <= value <= high, (form, key, low, value, high)
        assert f"deploy {form}: " in printed
    # QA-LoRA's unmerged form is the trained model itself (in memory); its merge into the INT4 zero points is exact
    agreeing = ["merged4"] if technique == "qalora" else [f for f in forms if f in ("full", "unmerged", "merged16")]
    for form in agreeing:  # what shipping and a 16-bit merge lose: rounding only
        assert run[f"metrics.deploy/{form}/max_abs_logit_diff"] <= AGREE * scale, (form, scale)
        assert 0 <= run[f"metrics.deploy/{form}/accuracy"] <= 1
    if "merged4" in forms and technique != "qalora":  # quantized again: measured, not bounded (the figure wanted)
        assert run["metrics.deploy/merged4/max_abs_logit_diff"] >= 0
        assert run["metrics.deploy/merged4/accuracy_delta"] == pytest.approx(
            run["metrics.deploy/merged4/accuracy"] - run["metrics.deploy/unmerged/accuracy"])
    reloaded = {"full": "full", "lora": "unmerged"}.get(technique)  # the trained weights, bit for bit
    if reloaded and run[f"metrics.deploy/{reloaded}/max_abs_logit_diff"] == 0:  # its test scores are the run's own
        assert run[f"metrics.deploy/{reloaded}/accuracy"] == run["metrics.test/accuracy"]
        assert run["tags.deploy/notes"].startswith(f"{reloaded}: the trained model's own weights and logits")
    if technique == "qalora":  # its HQQ base has no from_pretrained path: measured in memory, said so
        assert "in memory" in run["tags.deploy/notes"]
        assert not any(f"metrics.deploy/{form}/load_s" in run.index for form in forms)
    else:
        assert all(run[f"metrics.deploy/{form}/load_s"] > 0 for form in forms)
    if technique != "full":
        assert run["metrics.deploy/unmerged/bytes"] == run["metrics.artifact/adapter_bytes"]  # the adapter alone
    if technique == "qlora":
        _assert_holds_4_bit_weights(run, next(tmp_path.glob("outputs/runs/*/deploy")))
    else:  # deploy.keep=false: the saved forms are gone after measuring
        assert not list(tmp_path.glob("outputs/runs/*/deploy"))


def _assert_holds_4_bit_weights(run, saved: Path) -> None:
    """The re-quantized form really holds NF4 weights: every body linear packed two codes a byte, double quant."""
    import torch
    from bitsandbytes.nn import Linear4bit
    from transformers import AutoModelForSequenceClassification

    merged4 = AutoModelForSequenceClassification.from_pretrained(saved / "merged4", device_map={"": "cpu"})
    merged16 = AutoModelForSequenceClassification.from_pretrained(saved / "merged16", device_map={"": "cpu"})
    quantized = {name: m for name, m in merged4.named_modules() if isinstance(m, Linear4bit)}
    linears = {name: m for name, m in merged16.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(quantized) == set(linears) - {"classifier"}  # every body linear; the head stays in float
    for name, layer in quantized.items():
        state = layer.weight.quant_state
        assert layer.weight.dtype == torch.uint8 and state.quant_type == "nf4" and state.nested  # double quant
        assert layer.weight.numel() * 2 == linears[name].weight.numel()  # two 4-bit codes per byte
    assert run["metrics.deploy/merged4/bytes"] < run["metrics.deploy/merged16/bytes"]


def test_a_causal_lm_is_timed_generating(tmp_path: Path) -> None:
    run, _ = _run(tmp_path, "method=qlora", causal=True)
    assert run["tags.deploy/forms"] == "base,unmerged,merged16,merged4"
    assert run["metrics.deploy/new_tokens"] == 4
    for form in FORMS["qlora"]:
        for key in GENERATING:
            low, value, high = (run[f"metrics.deploy/{form}/{key}{end}"] for end in ("_low", "", "_high"))
            assert 0 < low <= value <= high, (form, key, low, value, high)
    scale = run["metrics.deploy/max_abs_logit"]
    assert run["metrics.deploy/merged16/max_abs_logit_diff"] <= AGREE * scale
    assert "metrics.deploy/merged16/perplexity" in run


def test_a_failure_while_measuring_is_recorded_and_the_run_stands(tmp_path: Path, monkeypatch) -> None:
    from bench.measure.deploy import measure

    def broken(*args, **kwargs):
        raise OSError("disk full while saving merged16")

    monkeypatch.setattr(measure, "measure_deployment", broken)
    run, printed = _run(tmp_path, "method=lora")
    assert run["tags.deploy/error"] == "OSError: disk full while saving merged16"
    assert "warning: deploy measurement failed" in printed
    assert run["metrics.test/accuracy"] >= 0
    assert not [column for column in run.index if column.startswith("metrics.deploy/")]
