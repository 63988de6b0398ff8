"""Generation scoring through the real CLI on the tiny Llama (`data.scoring=generation`): the run records exact
match on both splits, the shares without an answer and the decoding's own timing, tagged with the scoring it used;
bad generation settings get one `error:` line."""

from __future__ import annotations

import math

import pytest
from support import TINY_CAUSAL, assert_one_error_line, finished_runs, run_cli_here

GENERATION_METRICS = ("exact_match", "no_answer", "no_reference_answer", "generation_s", "generated_tokens",
                      "generation_tokens_per_s")


def test_generation_scored_run_records_exact_match_and_timing(store: str, tmp_path) -> None:
    result = run_cli_here(*TINY_CAUSAL, "method=lora", "data.scoring=generation", "data.max_new_tokens=5",
                          f"tracker.uri={store}", f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = finished_runs(store).iloc[0]
    assert run["tags.eval/scoring"] == "generation" and run["tags.eval/answer_rule"] == "label_word"
    for split in ("eval", "test"):
        missing = [m for m in GENERATION_METRICS if not math.isfinite(run.get(f"metrics.{split}/{m}", math.nan))]
        assert not missing, f"{split}: missing {missing}"
        assert 0 <= run[f"metrics.{split}/exact_match"] <= 1 - run[f"metrics.{split}/no_answer"] + 1e-9
        # 12 examples, each at most 5 new tokens; the speed is the count over the decoding's time
        assert 12 <= run[f"metrics.{split}/generated_tokens"] <= 12 * 5
        assert run[f"metrics.{split}/generation_tokens_per_s"] == pytest.approx(
            run[f"metrics.{split}/generated_tokens"] / run[f"metrics.{split}/generation_s"])
    assert run["metrics.eval/no_reference_answer"] == 0  # every tweet's reference is a label word
    assert "metrics.eval/accuracy" not in run or math.isnan(run["metrics.eval/accuracy"])  # no likelihood labels
    assert math.isfinite(run["metrics.eval/perplexity"])  # the right answer's likelihood still counts
    assert "eval/exact_match" in result.stdout


def test_arith_data_scored_by_final_number(store: str, tmp_path) -> None:
    """The shipped arithmetic problems load from the package and are scored by their final number; free-form
    answers read as whole text would add ROUGE-L, final numbers do not."""
    result = run_cli_here(*TINY_CAUSAL, "method=full", "data=arith", "data.max_new_tokens=4",
                          f"tracker.uri={store}", f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = finished_runs(store).iloc[0]
    assert run["params.data.name"] == "arith" and run["tags.eval/answer_rule"] == "final_number"
    assert run["metrics.test/no_reference_answer"] == 0 and math.isfinite(run["metrics.test/exact_match"])
    assert "metrics.test/rouge_l" not in run or math.isnan(run["metrics.test/rouge_l"])


def test_likelihood_scoring_is_the_default_with_a_label_set(store: str, tmp_path) -> None:
    result = run_cli_here(*TINY_CAUSAL, "method=lora", "trainer.max_steps=1", f"tracker.uri={store}",
                          f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = finished_runs(store).iloc[0]
    assert run["tags.eval/scoring"] == "likelihood" and math.isfinite(run["metrics.eval/accuracy"])
    assert "metrics.eval/exact_match" not in run or math.isnan(run["metrics.eval/exact_match"])


def test_max_new_tokens_past_the_context(tmp_path) -> None:
    """tiny-llama's context is 128 tokens: 32 of prompt and 100 new ones do not fit."""
    result = run_cli_here(*TINY_CAUSAL, "data.scoring=generation", "data.max_new_tokens=100",
                          f"tracker.uri=sqlite:///{tmp_path}/m.db", cwd=tmp_path)
    assert_one_error_line(result, "data.max_new_tokens=100", "context of 128 tokens", "data.max_length=32",
                          "data.max_new_tokens <= 96")


@pytest.mark.parametrize(("overrides", "needles"), [
    (["data.scoring=guess"], ["data.scoring='guess'", "auto, likelihood, generation"]),
    (["data.answer_rule=first_word"], ["data.answer_rule='first_word'", "final_number, label_word, text"]),
    (["data.max_new_tokens=0"], ["data.max_new_tokens=0", ">= 1"]),
    (["data=arith", "data.scoring=likelihood"], ["data.scoring=likelihood", "label set", "auto or generation"]),
    (["data=arith", "data.answer_rule=label_word"], ["data.answer_rule=label_word", "label set", "final_number"]),
])
def test_bad_generation_settings(overrides: list[str], needles: list[str], tmp_path) -> None:
    result = run_cli_here(*TINY_CAUSAL, *overrides, f"tracker.uri=sqlite:///{tmp_path}/m.db", cwd=tmp_path)
    assert_one_error_line(result, *needles)
