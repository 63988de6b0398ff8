"""Comparisons between configurations of the headline table: which one a row is compared with (chosen on the
validation split, never on test), and the difference of their runs with a paired or Welch interval."""

from __future__ import annotations

import math

import pandas as pd

from bench.core.intervals import NONE, difference

CHOICE_METRIC = "accuracy_mean"  # eval/accuracy: the validation split; test/* is only ever reported


def best_on_validation(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The most accurate row on validation per `keys` (ties: the first in the table's order). Choosing on test
    would leak the test labels into the figures reported on them."""
    ranked = table.sort_values(CHOICE_METRIC, ascending=False, kind="stable", na_position="last")
    return ranked.drop_duplicates(keys)


def reference_groups(table: pd.DataFrame, technique: pd.Series | str, keys: list[str]) -> pd.Series:
    """For each row, the `group` of the configuration of `technique` (one name, or one per row) it compares with:
    the one best on validation among those sharing the row's `keys`; NaN where there is none."""
    wanted = pd.Series(technique, index=table.index) if isinstance(technique, str) else technique
    best = best_on_validation(table, [*keys, "technique"])[[*keys, "technique", "group"]]
    asked = table[keys].assign(technique=wanted)
    found = asked.merge(best, on=[*keys, "technique"], how="left")
    return pd.Series(found["group"].to_numpy(), index=table.index)


def counted(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs a headline configuration averages: finished, not superseded by a rerun."""
    return runs[(runs["status"] == "FINISHED") & ~runs["superseded"] & runs["accuracy"].notna()]


def against(table: pd.DataFrame, runs: pd.DataFrame, reference: pd.Series, metric: str,
            prefix: str) -> pd.DataFrame:
    """Each row's runs minus its reference group's runs on `metric` (a run column, e.g. `test_accuracy`):
    `<prefix>`, `<prefix>_low`, `<prefix>_high` and `<prefix>_method`; blank against itself or no reference."""
    by_group = {group: rows for group, rows in counted(runs).groupby("group", sort=False)}
    found = []
    for group, other in zip(table["group"], reference, strict=True):
        if _missing(other) or other == group or group not in by_group or other not in by_group:
            found.append(NONE)
        else:
            found.append(difference(by_group[group], by_group[other], metric))
    return pd.DataFrame({prefix: [d.delta for d in found], f"{prefix}_low": [d.low for d in found],
                         f"{prefix}_high": [d.high for d in found], f"{prefix}_method": [d.method for d in found]},
                        index=table.index)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA
