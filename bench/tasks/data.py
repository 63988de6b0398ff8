"""Labelled text -> seeded, stratified train / validation / test splits -> tokenized batches.

Packaged, local-file and hub sources all become pandas frames with `text` and `label` columns first, so that
cleaning, splitting (`bench.tasks.splits`: near-duplicates removed across splits) and capping are the same code for
every source. A data set may come split: local files (`data.eval_path`, `data.test_path`) or a hub data set's
official splits (`data.hub_eval_split`, `data.hub_test_split`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import ConfigError, DataConfig
from bench.core.paths import package_file

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from bench.tasks.incomplete import Incomplete

LOCAL_FORMATS = (".csv", ".jsonl", ".json", ".parquet")


@dataclass
class Splits:
    """The splits, as text and integer label ids, plus the numbers needed to judge accuracy."""

    train: Any  # DataFrame[text, label_id]
    eval: Any  # the validation split: `eval/*`
    labels: list[str]
    majority_label: str  # the most frequent training label
    majority_baseline: float  # validation accuracy of always predicting it
    test: Any  # evaluated once, after training: `test/*`
    test_baseline: float  # test accuracy of always predicting the majority label
    dropped: dict[str, int]  # near-duplicates dropped from each split
    incomplete: dict[str, float]  # rows dropped for a missing text or label (bench.tasks.incomplete)

    def metrics(self) -> dict[str, float]:
        """What every run logs about its data before training."""
        from bench.tasks.splits import split_metrics

        rows = {"train": len(self.train), "eval": len(self.eval), "test": len(self.test)}
        return {"eval/majority_baseline": self.majority_baseline, **split_metrics(rows, self.dropped),
                **self.incomplete}


def load_splits(spec: DataConfig) -> Splits:
    """Read, clean, label-check, split (near-duplicates removed across splits) and cap the data set."""
    from bench.tasks.incomplete import report
    from bench.tasks.splits import three_splits

    cleaned = {name: _clean(raw, spec, name) for name, raw in read_frames(spec).items() if raw is not None}
    frames = {name: cleaned[name][0] if name in cleaned else None for name in ("train", "eval", "test")}
    incomplete = report(spec, {name: counts for name, (_, counts) in cleaned.items()},
                        names=("data.text_column", "data.label_column"))
    labels = _label_set([frame for frame in frames.values() if frame is not None], spec)
    parts = three_splits(frames, spec, key="text", floor=True)  # labelled text: its splits are scored by accuracy
    check_two_labels(parts.train, spec)
    ids = {label: i for i, label in enumerate(labels)}
    train, evaluation, test = (part.assign(label_id=part["label"].map(ids))[["text", "label_id"]]
                               for part in (parts.train, parts.eval, parts.test))
    majority = str(parts.train["label"].value_counts().idxmax())
    return Splits(train, evaluation, labels, majority, _share(parts.eval, majority), test=test,
                  test_baseline=_share(parts.test, majority), dropped=parts.dropped, incomplete=incomplete)


def _share(frame: Any, label: str) -> float:
    return float((frame["label"] == label).mean())


def read_frames(spec: DataConfig) -> dict[str, Any]:
    """The raw `train` source and, where the data set comes split, its `eval` and `test` frames (else None), each
    with its columns renamed by `data.rename_columns.<split>`. A hub split may come from another data set
    (`data.hub_eval_id`, `data.hub_test_id`)."""
    if spec.source == "hub":
        frames = {"train": _read_hub(spec, spec.hub_split),
                  "eval": _read_hub(spec, spec.hub_eval_split, split="eval") if spec.hub_eval_split else None,
                  "test": _read_hub(spec, spec.hub_test_split, split="test") if spec.hub_test_split else None}
    else:
        frames = {"train": read_frame(spec),
                  "eval": _read_file(Path(spec.eval_path), spec, key="data.eval_path") if spec.eval_path else None,
                  "test": _read_file(Path(spec.test_path), spec, key="data.test_path") if spec.test_path else None}
    return {split: None if frame is None else _renamed(frame, spec, split) for split, frame in frames.items()}


def _renamed(frame: Any, spec: DataConfig, split: str) -> Any:
    renames = spec.rename_columns.get(split) or {}
    missing = [column for column in renames if column not in frame.columns]
    if missing:
        raise ConfigError(f"data={spec.name}: the {split} split ({source_of(spec, split)}) has no column "
                          f"{missing[0]!r} to rename; its columns are: {', '.join(map(str, frame.columns))} "
                          f"(set data.rename_columns.{split})")
    return frame.rename(columns=renames) if renames else frame


def source_of(spec: DataConfig, split: str) -> str:
    """Where a split's rows come from, for a message: the hub data set and split, or the file."""
    if spec.source == "hub":
        hub_id = {"eval": spec.hub_eval_id, "test": spec.hub_test_id}.get(split) or spec.hub_id
        part = {"train": spec.hub_split, "eval": spec.hub_eval_split, "test": spec.hub_test_split}[split]
        return f"hub {hub_id}, split {part}" if split == "train" or part else f"carved from hub {spec.hub_id}"
    path = {"eval": spec.eval_path, "test": spec.test_path}.get(split) or spec.path or spec.package
    return f"file {path}"


def check_columns(raw: Any, spec: DataConfig, split: str, wanted: dict[str, str]) -> None:
    """Every column in `wanted` (column -> the data key that names it) is in the split's frame; else one line with
    the missing column, the columns the data set has, and the keys to set."""
    missing = [column for column in wanted if column not in raw.columns]
    if missing:
        named = ", ".join(f"{column!r} ({wanted[column]})" for column in missing)
        keys, names = " / ".join(wanted[c] for c in missing), ", ".join(repr(c) for c in missing)
        some = "a column" if len(missing) == 1 else "columns"
        raise ConfigError(f"data={spec.name}: the {split} split ({source_of(spec, split)}) has no column {named}; "
                          f"its columns are: {', '.join(map(str, raw.columns))} (set {keys}, or rename {some} of "
                          f"this split to {names} with data.rename_columns.{split})")


def read_frame(spec: DataConfig) -> Any:
    """The raw train source: `data.path`, the packaged file or the hub's `data.hub_split`."""
    if spec.source == "hub":
        return _read_hub(spec, spec.hub_split)
    if spec.source == "package":
        return _read_file(package_file(spec.package or "", key="data.package"), spec, key="data.path")
    return _read_file(Path(spec.path or ""), spec, key="data.path")


def _read_file(path: Path, spec: DataConfig, *, key: str) -> Any:
    import pandas as pd

    if not path.is_file():
        raise ConfigError(f"{key}={str(path)!r} does not exist")
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix not in LOCAL_FORMATS:
        raise ConfigError(f"{key}={str(path)!r} has format {suffix!r}; valid formats: {', '.join(LOCAL_FORMATS)}")
    try:
        if suffix == ".csv":
            return pd.read_csv(path, encoding=spec.encoding)
        if suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=suffix == ".jsonl", encoding=spec.encoding)
    except UnicodeDecodeError as error:
        raise ConfigError(f"{key}={str(path)!r} is not text in data.encoding={spec.encoding!r} (byte "
                          f"{error.object[error.start:error.start + 1]!r} at offset {error.start}: {error.reason}); "
                          f"{_encoding_hint(path, spec.encoding)}") from None
    except ValueError as error:  # pandas' ParserError and EmptyDataError, a JSON or Parquet file that is not one
        detail = " ".join(str(error).split())[:300] or type(error).__name__
        raise ConfigError(f"{key}={str(path)!r} cannot be read as {suffix}: {detail}") from None


def _encoding_hint(path: Path, encoding: str) -> str:
    """What to set `data.encoding` to, judged from the file's first megabyte: a byte-order mark names it, a NUL
    byte says the file is not text at all, and cp1252 (Windows' Western European) decodes most other files."""
    import codecs

    with path.open("rb") as file:
        head = file.read(1 << 20)
    boms = {codecs.BOM_UTF8: "utf-8-sig", codecs.BOM_UTF16_LE: "utf-16", codecs.BOM_UTF16_BE: "utf-16"}
    for bom, name in boms.items():
        if head.startswith(bom):
            return f"the file starts with a {name} byte-order mark: set data.encoding={name}"
    if b"\x00" in head:
        return "it holds NUL bytes, so it is not a text file (a binary or compressed one?)"
    for name in ("utf-8", "cp1252"):
        if codecs.lookup(name).name == codecs.lookup(encoding).name:
            continue
        try:
            codecs.getincrementaldecoder(name)().decode(head, final=False)
        except UnicodeDecodeError:
            continue
        return f"it reads as {name}: set data.encoding={name}"
    return "set data.encoding to the file's encoding, e.g. latin-1"


def _read_hub(spec: DataConfig, part: str, *, split: str = "train") -> Any:
    """Split `part` of the hub data set that bench's `split` comes from; integer ClassLabel columns become their label
    names."""
    import datasets

    hub_id = {"eval": spec.hub_eval_id, "test": spec.hub_test_id}.get(split)
    config = {"eval": spec.hub_eval_config, "test": spec.hub_test_config}[split] if hub_id else spec.hub_config
    dataset = datasets.load_dataset(hub_id or spec.hub_id, config, split=part)
    label = {new: old for old, new in (spec.rename_columns.get(split) or {}).items()}.get(spec.label_column,
                                                                                          spec.label_column)
    feature = dataset.features.get(label)
    frame = dataset.to_pandas()
    if isinstance(feature, datasets.ClassLabel):
        frame[label] = frame[label].map(lambda i: feature.names[i] if i >= 0 else None)
    return frame


def _clean(raw: Any, spec: DataConfig, split: str = "train") -> tuple[Any, Incomplete]:
    """Keep the two configured columns; drop rows without a text or a label (counted: bench.tasks.incomplete) and
    duplicate texts."""
    from bench.tasks.incomplete import complete_rows

    check_columns(raw, spec, split, {spec.text_column: "data.text_column", spec.label_column: "data.label_column"})
    frame = raw[[spec.text_column, spec.label_column]].set_axis(["text", "label"], axis=1)
    frame, counts = complete_rows(frame, text="text", label="label", spec=spec, split=split,
                                  names=("data.text_column", "data.label_column"))
    frame = frame.assign(text=frame["text"].astype(str).str.strip(), label=frame["label"].astype(str))
    # A text labelled twice would leak between splits; keep its first label only.
    return frame.drop_duplicates("text").reset_index(drop=True), counts


def _label_set(frames: list[Any], spec: DataConfig) -> list[str]:
    found = sorted(set().union(*(frame["label"].unique() for frame in frames)))
    if len(found) < 2:
        rows = sum(len(frame) for frame in frames)
        raise ConfigError(f"data={spec.name}: data.label_column={spec.label_column!r} holds a single label, "
                          f"{found[0]!r}, in all {rows} rows; a model cannot learn to tell labels apart from one "
                          "(is data.label_column the right column?)")
    if spec.labels is None:
        return found
    labels = [str(label) for label in spec.labels]
    unknown = sorted(set(found) - set(labels))
    if unknown:
        raise ConfigError(f"data={spec.name}: labels {unknown} are not in data.labels={labels}")
    return labels


def check_two_labels(train: Any, spec: DataConfig, *, column: str = "label_column") -> None:
    """The train split must hold two labels or more: a model trained on one label learns nothing (a split that came
    as a file, or a cap, can leave the train split one label where the data set has more). `column`: the data key
    the labels come from (an SFT file's answers: `response_column`)."""
    found = sorted(train["label"].unique())
    if len(found) < 2:
        raise ConfigError(f"data={spec.name}: the train split's {len(train)} rows hold a single label of "
                          f"data.{column}={getattr(spec, column)!r}, {found[0]!r}; a model cannot learn to tell "
                          "labels apart from one (raise data.max_train_samples, or give a train file with every label)")


def make_loaders(splits: Splits, *, tokenizer: PreTrainedTokenizerBase, max_length: int, batch_size: int,
                 eval_batch_size: int,
                 seed: int) -> tuple[Any, Any]:
    """Tokenize once, then batch with dynamic padding (each batch padded to its own longest row): the
    training batches (shuffled by the run seed) and the validation batches."""
    import torch
    from torch.utils.data import DataLoader

    shuffle = torch.Generator().manual_seed(seed)  # the run seed orders the batches
    train = DataLoader(_encode(splits.train, tokenizer, max_length), batch_size=batch_size, shuffle=True,
                       generator=shuffle, collate_fn=_collator(tokenizer))
    return train, eval_loader(splits.eval, tokenizer=tokenizer, max_length=max_length, batch_size=eval_batch_size)


def eval_loader(frame: Any, *, tokenizer: PreTrainedTokenizerBase, max_length: int, batch_size: int) -> Any:
    """Batches of a split to evaluate (validation or test), shortest rows first: a batch is padded to its longest
    row, so rows of like length waste the least compute on padding (scores are over the whole split, so the order
    changes none of them). `loader.dataset` keeps the split's order."""
    from torch.utils.data import DataLoader

    rows = _encode(frame, tokenizer, max_length)
    by_length = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    return DataLoader(rows, batch_size=batch_size, sampler=by_length, collate_fn=_collator(tokenizer))


def _encode(frame: Any, tokenizer: PreTrainedTokenizerBase, max_length: int) -> list[dict[str, Any]]:
    encoded = tokenizer(list(frame["text"]), truncation=True, max_length=max_length)
    return [{**{k: v[i] for k, v in encoded.items()}, "labels": int(label)}
            for i, label in enumerate(frame["label_id"])]


def _collator(tokenizer: PreTrainedTokenizerBase) -> Any:
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, return_tensors="pt")
