"""Variants against the technique they modify (`bench.techniques`: DoRA, rsLoRA, PiSSA, OLoRA and LongLoRA against
LoRA; LoftQ and QA-LoRA against QLoRA). Pure pandas over the headline table, like `analyse`."""

from __future__ import annotations

import math

import pandas as pd

from bench.report.analyse import t_value
from bench.techniques import TECHNIQUES

# Each variant compares with the technique it modifies, at the same data set, model, device, rank and targets.
PARENT = {name: row.parent for name, row in TECHNIQUES.items() if row.parent}


def variant_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """One row per variant configuration beside its parent's (same data set, model, device, rank and targets;
    the most accurate parent configuration when there are several): Δ accuracy with a 95 % Welch interval over
    seeds, and tensor-peak / speed / size ratios. Variants without a parent run there are left out."""
    keys = ["dataset", "model", "device", "r", "target_modules"]
    variants = table[table["technique"].isin(list(PARENT))]
    parents = table[table["technique"].isin(set(PARENT.values()))]
    if variants.empty or parents.empty:
        return pd.DataFrame()
    figures = ["label", "accuracy_mean", "accuracy_std", "n", "tensor_peak_bytes", "tokens_per_s", "adapter_bytes",
               "weight_bits_per_param"]
    best = parents.sort_values("accuracy_mean", ascending=False).drop_duplicates([*keys, "technique"])
    best = best[[*keys, "technique", *figures]].rename(columns={c: f"parent_{c}" for c in ["technique", *figures]})
    rows = variants.assign(parent_technique=variants["technique"].map(PARENT)).merge(
        best, on=[*keys, "parent_technique"], how="inner")
    low, high = _welch_interval(rows)
    return rows.assign(
        delta_parent=rows["accuracy_mean"] - rows["parent_accuracy_mean"], delta_low=low, delta_high=high,
        parent_memory_ratio=rows["tensor_peak_bytes"] / rows["parent_tensor_peak_bytes"],
        parent_speed_ratio=rows["tokens_per_s"] / rows["parent_tokens_per_s"],
        parent_size_ratio=rows["adapter_bytes"] / rows["parent_adapter_bytes"])


def _welch_interval(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """95 % interval of the difference of two means from independent seeds (Welch; degrees of freedom
    rounded down, so the interval errs wide). Blank unless both sides have two runs or more."""
    a = rows["accuracy_std"] ** 2 / rows["n"]
    b = rows["parent_accuracy_std"] ** 2 / rows["parent_n"]
    freedom = (a + b) ** 2 / (a ** 2 / (rows["n"] - 1) + b ** 2 / (rows["parent_n"] - 1))
    t = freedom.map(lambda df: t_value(int(df) + 1) if pd.notna(df) and df >= 1 else math.nan)
    half = t * (a + b) ** 0.5
    delta = rows["accuracy_mean"] - rows["parent_accuracy_mean"]
    return delta - half, delta + half
