"""The answer rules of generation scoring (`data.answer_rule`), the exact match they give, and the shipped
arithmetic problems: each rule on the cases it exists for, and a text with no answer counted, never a crash."""

from __future__ import annotations

import pytest

from bench.tasks.causal import arith
from bench.tasks.causal.answers import extract, final_number, label_word
from bench.tasks.causal.scoring import GenerationSet, answer_scores

LABELS = ["negative", "neutral", "positive"]


@pytest.mark.parametrize(("text", "number"), [
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),  # GSM8K's convention
    ("#### 42", "42"),
    ("48/2 = 24 in May, so 48 + 24 = 72 altogether.", "72"),  # no marker: the last number
    ("#### 18 and then some 99", "18"),  # the marked number wins over a later one
    ("The answer is: 1,234,567", "1234567"),  # thousands commas
    ("It falls to -5 degrees.", "-5"),  # a negative number
    ("10-5", "5"),  # a minus after a digit subtracts
    ("(3)-4", "4"),
    ("costs $3.50", "3.5"),
    ("72.0 apples", "72"),
    ("one, 2, 3", "3"),  # a list, not a thousands group
    ("Final: -0.0", "0"),
    ("#### nothing after the mark, but 7 before it", "7"),
])
def test_final_number(text: str, number: str) -> None:
    assert final_number(text) == number


@pytest.mark.parametrize("text", ["", "no digits here", "####", "minus - sign"])
def test_final_number_finds_none(text: str) -> None:
    assert final_number(text) is None


@pytest.mark.parametrize(("text", "label"), [
    ("positive", "positive"),
    ("Positive.", "positive"),  # any case
    ("It is NEGATIVE, not positive", "negative"),  # the first named wins
    ("The sentiment is neutral", "neutral"),
    ("nonpositive", None),  # whole words only
    ("I cannot tell", None),
])
def test_label_word(text: str, label: str | None) -> None:
    assert label_word(text, LABELS) == label


def test_label_word_prefers_the_longer_label_at_one_position() -> None:
    assert label_word("very good indeed", ["very", "very good"]) == "very good"


def test_text_rule_strips_and_collapses_space() -> None:
    assert extract("text", "  Paris \n is  big ") == "Paris is big"
    assert extract("text", " \n ") is None


def _set(references: list[str], rule: str, labels: list[str] | None = None) -> GenerationSet:
    return GenerationSet(prompts=[[1]] * len(references), references=references,
                         expected=[extract(rule, r, labels) for r in references], rule=rule, labels=labels,
                         stop_ids={2}, max_new_tokens=4, tokenizer=None)


def test_exact_match_counts_texts_without_an_answer() -> None:
    data = _set(["3 + 4 = 7", "#### 1,000", "10 - 4 = 6", "no number"], "final_number")
    scores = answer_scores(["so it is 7", "1000", "I do not know", "5"], data)
    assert scores["eval/exact_match"] == 0.5  # 7 and 1000 match; the third has no answer; the fourth no reference
    assert scores["eval/no_answer"] == 0.25
    assert scores["eval/no_reference_answer"] == 0.25
    assert "eval/rouge_l" not in scores  # a text-overlap score for free-form answers only


def test_label_set_exact_match() -> None:
    data = _set([" positive", " negative", " neutral"], "label_word", LABELS)
    scores = answer_scores(["Positive!", "neutral I think", "¯\\_(ツ)_/¯"], data)
    assert scores["eval/exact_match"] == pytest.approx(1 / 3)
    assert scores["eval/no_answer"] == pytest.approx(1 / 3)


def test_free_form_answers_get_rouge_l() -> None:
    data = _set(["the cat sat on the mat", "hello world"], "text")
    scores = answer_scores(["the cat sat on the mat", "goodbye"], data)
    assert scores["eval/exact_match"] == 0.5
    assert scores["eval/rouge_l"] == pytest.approx(0.5)  # 1 for the first, 0 for the second


def test_the_shipped_arithmetic_problems_are_the_generators_output() -> None:
    """`bench/tasks/causal/arith.jsonl` is exactly what `python -m bench.tasks.causal.arith` writes, and every
    answer's final number is its computed result."""
    rows = arith.problems()
    assert arith.FILE.read_text(encoding="utf-8") == arith.jsonl(rows)
    assert len(rows) == arith.ROWS and len({row["question"] for row in rows}) > 0.99 * arith.ROWS
    for row in rows:
        left, result = row["answer"].split(" = ")
        a, op, b = left.split(" ")
        assert final_number(row["answer"]) == str({"+": int.__add__, "-": int.__sub__, "*": int.__mul__}[op](
            int(a), int(b))) == result
        assert int(result) >= 0


def test_scoring_and_rule_defaults_follow_the_label_set() -> None:
    """auto: likelihood with a label set, generation without; the rule: the label word, else the whole text. A
    likelihood-scored run's config hash leaves the generation fields out, so finished runs keep theirs."""
    from bench.config import DataConfig, RunConfig

    labelled = DataConfig(name="d", source="local", path="x.csv", labels=["no", "yes"])
    free = DataConfig(name="d", source="local", path="x.csv")
    assert (labelled.generation_scored, labelled.rule) == (False, "label_word")
    assert (free.generation_scored, free.rule) == (True, "text")
    generated = DataConfig(name="d", source="local", path="x.csv", labels=["no", "yes"], scoring="generation")
    assert (generated.generation_scored, generated.rule) == (True, "label_word")
    assert DataConfig(name="d", source="local", path="x.csv", answer_rule="final_number").rule == "final_number"

    def effective(data: dict) -> dict:
        raw = {"model": {"name": "m", "source": "tiny", "architecture": {"model_type": "llama"}}, "task": "causal_lm",
               "method": {"name": "lora"}, "data": {"name": "d", "source": "local", "path": "x.csv", **data},
               "trainer": {"lr": 1e-3}, "tracker": {}}
        return RunConfig.from_dict(raw).effective()["data"]

    assert "max_new_tokens" not in effective({"labels": ["no", "yes"]})
    assert effective({"labels": ["no", "yes"], "scoring": "generation"})["max_new_tokens"] == 32
