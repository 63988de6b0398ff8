"""Variants against the technique they modify (`bench.techniques`: DoRA, rsLoRA, PiSSA, OLoRA and LongLoRA against
LoRA; LoftQ and QA-LoRA against QLoRA). Pure pandas over the headline table and its runs, like `analyse`."""

from __future__ import annotations

import pandas as pd

from bench.report.compare import against, best_on_validation
from bench.techniques import TECHNIQUES

# Each variant compares with the technique it modifies, at the same data set, model, device, rank and targets, and
# in the same stage of a fair comparison (tuned against tuned).
PARENT = {name: row.parent for name, row in TECHNIQUES.items() if row.parent}
KEYS = ["dataset", "model", "device", "fair_id", "stage", "r", "target_modules"]
FIGURES = ["group", "label", "accuracy_mean", "test_accuracy_mean", "n", "tensor_peak_bytes", "alone_tokens_per_s",
           "adapter_bytes", "weight_bits_per_param"]


def variant_comparison(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per variant configuration beside its parent's (same data set, model, device, stage, rank and targets;
    the parent configuration best on validation when there are several): Δ validation and Δ test accuracy, each
    with a 95 % interval over seeds (paired when the seeds match one to one, else Welch; `runs` are the headline's
    runs), and tensor-peak / speed / size ratios. Variants without a parent run there are left out."""
    variants = table[table["technique"].isin(list(PARENT))]
    parents = table[table["technique"].isin(set(PARENT.values()))]
    if variants.empty or parents.empty:
        return pd.DataFrame()
    best = best_on_validation(parents, [*KEYS, "technique"])[[*KEYS, "technique", *FIGURES]]
    best = best.rename(columns={c: f"parent_{c}" for c in ["technique", *FIGURES]})
    rows = variants.assign(parent_technique=variants["technique"].map(PARENT)).merge(
        best, on=[*KEYS, "parent_technique"], how="inner")
    rows = rows.join(against(rows, runs, rows["parent_group"], "accuracy", "delta_parent"))
    rows = rows.join(against(rows, runs, rows["parent_group"], "test_accuracy", "delta_parent_test"))
    return rows.assign(
        parent_memory_ratio=rows["tensor_peak_bytes"] / rows["parent_tensor_peak_bytes"],
        parent_speed_ratio=rows["alone_tokens_per_s"] / rows["parent_alone_tokens_per_s"],  # timed alone only
        parent_size_ratio=rows["adapter_bytes"] / rows["parent_adapter_bytes"])
