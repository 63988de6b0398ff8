"""Labelled text -> a seeded, stratified train/eval split -> tokenized batches.

Packaged, local-file and hub sources all become one pandas frame with `text` and `label` columns first,
so that cleaning, splitting and capping are the same code for every source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import ConfigError, DataConfig
from bench.paths import package_file

LOCAL_FORMATS = (".csv", ".jsonl", ".json", ".parquet")


@dataclass
class Splits:
    """The split, as text and integer label ids, plus the numbers needed to judge accuracy."""

    train: Any  # DataFrame[text, label_id]
    eval: Any
    labels: list[str]
    majority_label: str  # the most frequent training label
    majority_baseline: float  # eval accuracy of always predicting it


def load_splits(spec: DataConfig) -> Splits:
    """Read, clean, label-check, split and cap the data set."""
    frame = _clean(read_frame(spec), spec)
    labels = _label_set(frame, spec)
    frame["label_id"] = frame["label"].map({label: i for i, label in enumerate(labels)})
    train, evaluation = split_frame(frame, spec)
    majority = train["label"].value_counts().idxmax()
    baseline = float((evaluation["label"] == majority).mean())
    return Splits(train[["text", "label_id"]], evaluation[["text", "label_id"]], labels, str(majority), baseline)


def read_frame(spec: DataConfig) -> Any:
    import pandas as pd

    if spec.source == "hub":
        return _read_hub(spec)
    path = package_file(spec.package or "", key="data.package") if spec.source == "package" else Path(spec.path or "")
    if not path.is_file():
        raise ConfigError(f"data.path={str(path)!r} does not exist")
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix not in LOCAL_FORMATS:
        raise ConfigError(f"data.path={str(path)!r} has format {suffix!r}; valid formats: {', '.join(LOCAL_FORMATS)}")
    if suffix == ".csv":
        return pd.read_csv(path, encoding=spec.encoding)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_json(path, lines=suffix == ".jsonl")


def _read_hub(spec: DataConfig) -> Any:
    """A hub data set by name; integer ClassLabel columns become their label names."""
    import datasets

    dataset = datasets.load_dataset(spec.hub_id, spec.hub_config, split=spec.hub_split)
    feature = dataset.features.get(spec.label_column)
    frame = dataset.to_pandas()
    if isinstance(feature, datasets.ClassLabel):
        frame[spec.label_column] = frame[spec.label_column].map(lambda i: feature.names[i] if i >= 0 else None)
    return frame


def _clean(raw: Any, spec: DataConfig) -> Any:
    """Keep the two configured columns; drop empty texts, missing labels and duplicate texts."""
    missing = [c for c in (spec.text_column, spec.label_column) if c not in raw.columns]
    if missing:
        raise ConfigError(f"data={spec.name}: column(s) {missing} not found; the columns are: "
                          f"{', '.join(map(str, raw.columns))} (set data.text_column / data.label_column)")
    frame = raw[[spec.text_column, spec.label_column]].set_axis(["text", "label"], axis=1).dropna()
    frame["text"] = frame["text"].astype(str).str.strip()
    frame["label"] = frame["label"].astype(str)
    # A text labelled twice would leak between train and eval; keep its first label only.
    frame = frame[frame["text"] != ""].drop_duplicates("text").reset_index(drop=True)
    if frame.empty:
        raise ConfigError(f"data={spec.name}: no rows left after dropping empty texts and missing labels")
    return frame


def _label_set(frame: Any, spec: DataConfig) -> list[str]:
    found = sorted(frame["label"].unique())
    if spec.labels is None:
        return found
    labels = [str(label) for label in spec.labels]
    unknown = sorted(set(found) - set(labels))
    if unknown:
        raise ConfigError(f"data={spec.name}: labels {unknown} are not in data.labels={labels}")
    return labels


def split_frame(frame: Any, spec: DataConfig) -> tuple[Any, Any]:
    """Stratified and seeded by `data.split_seed`, so every run of a comparison sees the same rows."""
    from sklearn.model_selection import train_test_split

    counts = frame["label"].value_counts()
    stratify = frame["label"] if counts.min() >= 2 else None
    try:
        train, evaluation = train_test_split(frame, test_size=spec.eval_fraction, random_state=spec.split_seed,
                                             stratify=stratify)
    except ValueError as error:
        raise ConfigError(f"data={spec.name}: cannot split {len(frame)} rows with "
                          f"data.eval_fraction={spec.eval_fraction}: {error}") from None
    train, evaluation = train.head(spec.max_train_samples), evaluation.head(spec.max_eval_samples)
    if train.empty or evaluation.empty:
        raise ConfigError(f"data={spec.name}: a split is empty ({len(train)} train, {len(evaluation)} eval rows)")
    return train.reset_index(drop=True), evaluation.reset_index(drop=True)


def make_loaders(splits: Splits, *, tokenizer: Any, max_length: int, batch_size: int, eval_batch_size: int,
                 seed: int) -> tuple[Any, Any]:
    """Tokenize once, then batch with dynamic padding (each batch padded to its own longest row)."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    def encode(frame: Any) -> list[dict[str, Any]]:
        encoded = tokenizer(list(frame["text"]), truncation=True, max_length=max_length)
        return [{**{k: v[i] for k, v in encoded.items()}, "labels": int(label)}
                for i, label in enumerate(frame["label_id"])]

    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    shuffle = torch.Generator().manual_seed(seed)  # the run seed orders the batches
    train = DataLoader(encode(splits.train), batch_size=batch_size, shuffle=True, generator=shuffle,
                       collate_fn=collate)
    evaluation = DataLoader(encode(splits.eval), batch_size=eval_batch_size, shuffle=False, collate_fn=collate)
    return train, evaluation
