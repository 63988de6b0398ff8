"""Predicted against measured: each run's plan (`bench plan`'s engine) beside what it measured, at two levels.

- The allocator level, the check: the plan's allocator peak (`plan/met_allocator_peak_bytes`) against the
  allocator's own peak (`mem/allocator_peak_bytes`: the CUDA caching allocator's peak allocated, or on CPU the
  allocator's events over the watched steps), an instrument that shares no code with the plan.
- The tensor level, a consistency check only: the traced tensor peak (`plan/met_peak_bytes`) against the tensor
  accounting's (`mem/tensor_peak_bytes`). The plan traces with that same accounting, so what it cannot see is
  missing from both sides.

The plan compared is the one at the largest batch the run met (real text is padded per batch and can stay shorter
than `data.max_length`); a run without it is compared with the plan it made before training (`plan/peak_bytes`,
`plan/allocator_peak_bytes`). Pure pandas, like `analyse`; the figure is `plots.prediction_scatter`, of the
allocator level. A run is counted at a level only where it logged both of that level's figures: no figure stands
in for another (a run from before the allocator instrument has a tensor-level error only).
"""

from __future__ import annotations

import math

import pandas as pd

from bench.report.formats import count, mib
from bench.report.render import Column

BAND = 0.05  # the ±5 % band drawn around y = x
COLUMNS = [
    Column("configuration", "label"), Column("n", "n", count, True, "runs with both allocator figures"),
    Column("predicted MiB", "predicted", mib, True,
           "mean plan/met_allocator_peak_bytes: the plan's allocator peak at the largest batch the run met"),
    Column("measured MiB", "measured", mib, True, "mean mem/allocator_peak_bytes: the allocator's own training peak "
           "(CUDA: peak allocated; CPU: its allocation events over the watched steps)"),
    Column("mean error %", "error_pct", lambda v: f"{v:+.2f}", True,
           "mean over runs of (predicted − measured) / measured × 100 at the allocator level: positive when the plan "
           "over-predicts"),
    Column("max |error| %", "abs_error_max_pct", lambda v: f"{v:.2f}", True, "the largest error of a single run"),
    Column("tensor-level error %", "tensor_error_pct", lambda v: f"{v:+.2f}", True,
           "mean error of the traced tensor peak (plan/met_peak_bytes) against mem/tensor_peak_bytes: a consistency "
           "check, not evidence: the plan traces with the same tensor accounting the run measures with"),
]


def _planned(done: pd.DataFrame, at_met: str, before: str) -> pd.Series:
    """The plan at the batch met where logged, else the one made before training."""
    empty = pd.Series(math.nan, index=done.index)
    met = done.get(at_met, empty)
    return met.where(met > 0, done.get(before, empty))


def _error(predicted: pd.Series, measured: pd.Series) -> pd.Series:
    both = (predicted > 0) & (measured > 0)
    return ((predicted - measured) / measured * 100).where(both)


def points(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run (the latest of a repeated config) with a comparison at either level: run,
    technique, configuration group, the allocator level's predicted and measured bytes and error in % (NaN where
    not logged), the tensor level's error, and whether the plan was the one at data.max_length."""
    done = runs[(runs["status"] == "FINISHED") & ~runs["superseded"]]
    empty = pd.Series(math.nan, index=done.index)
    predicted = _planned(done, "plan_met_allocator_peak_bytes", "plan_allocator_peak_bytes")
    measured = done.get("allocator_peak_bytes", empty)
    tensor = _error(_planned(done, "plan_met_peak_bytes", "plan_peak_bytes"), done["tensor_peak_bytes"])
    error = _error(predicted, measured)
    keep = error.notna() | tensor.notna()
    at_max = ~(done.get("plan_met_peak_bytes", empty) > 0)
    return pd.DataFrame({"run_id": done["run_id"], "run_name": done["run_name"], "technique": done["technique"],
                         "group": done["group"], "predicted": predicted.where(error.notna()),
                         "measured": measured.where(error.notna()), "error_pct": error, "tensor_error_pct": tensor,
                         "at_max_length": at_max})[keep].reset_index(drop=True)


def allocator_points(found: pd.DataFrame) -> pd.DataFrame:
    """The runs with an allocator-level comparison: what the scatter shows."""
    return found[found["error_pct"].notna()] if not found.empty else found


def errors(found: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Per configuration, in the headline's order: runs, mean predicted and measured allocator peaks, mean error
    in % and the largest single error, and the mean tensor-level error. A configuration outside the headline (no
    accuracy) is labelled by its technique."""
    if found.empty:
        return pd.DataFrame(columns=["group", "label", *(c.field for c in COLUMNS[1:])])
    grouped = found.assign(abs_error=found["error_pct"].abs()).groupby("group", sort=False)
    rows = pd.DataFrame({"n": grouped["error_pct"].count(), "predicted": grouped["predicted"].mean(),
                         "measured": grouped["measured"].mean(), "error_pct": grouped["error_pct"].mean(),
                         "abs_error_max_pct": grouped["abs_error"].max(),
                         "tensor_error_pct": grouped["tensor_error_pct"].mean(),
                         "fallback": grouped["technique"].first()}).reset_index()
    order = {group: index for index, group in enumerate(table["group"])}
    labels = table.set_index("group")["label"]
    rows["label"] = [labels.get(group, fallback) for group, fallback in zip(rows["group"], rows["fallback"],
                                                                         strict=True)]
    rows = rows.assign(_order=rows["group"].map(lambda g: order.get(g, len(order)))).sort_values("_order",
                                                                                                 kind="stable")
    return rows.drop(columns=["_order", "fallback"]).reset_index(drop=True)


def outside_band(found: pd.DataFrame, column: str = "error_pct") -> int:
    """How many runs' predictions miss by more than the band (at the allocator level unless told)."""
    return int((found[column].abs() > BAND * 100 + 1e-9).sum()) if not found.empty else 0


def summary(found: pd.DataFrame) -> str:
    """Two sentences: at the allocator level how many runs, their mean absolute error and how many fall outside
    the band; the same at the tensor level, named for what it is."""
    if found.empty:
        return ""
    parts = []
    allocator, tensor = found["error_pct"].dropna(), found["tensor_error_pct"].dropna()
    if not allocator.empty and math.isfinite(allocator.abs().mean()):
        older = int(found.loc[allocator.index, "at_max_length"].sum())
        caveat = (f" {older} of them logged no plan at the batch they met, so their plan at data.max_length is "
                  "compared: it over-predicts where the text stayed shorter." if older else "")
        parts.append(f"Allocator level: {len(allocator)} runs with both figures; mean |error| "
                     f"{allocator.abs().mean():.2f} %, {outside_band(found)} outside ±{BAND * 100:g} %.{caveat}")
    if not tensor.empty and math.isfinite(tensor.abs().mean()):
        parts.append(f"Tensor level (the plan's own accounting, a consistency check): {len(tensor)} runs; mean "
                     f"|error| {tensor.abs().mean():.2f} %, {outside_band(found, 'tensor_error_pct')} outside "
                     f"±{BAND * 100:g} %.")
    return " ".join(parts)
