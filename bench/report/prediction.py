"""Predicted against measured: each run's planned training tensor peak (`bench plan`'s engine) beside the peak it
measured (`mem/tensor_peak_bytes`). The plan compared is the one at the largest batch the run met
(`plan/met_peak_bytes`: rows x padded length, since real text is padded per batch and can stay shorter than
`data.max_length`); a run without it is compared at `plan/peak_bytes`, made before the weights loaded. Pure pandas,
like `analyse`; the figure is `plots.prediction_scatter`.

Only runs that logged both count: a run without `plan/peak_bytes` (older than the planner, or whose plan failed:
its `plan/error` tag says why) is left out, and no other figure (the analytic `mem/predicted_peak_bytes`, the
process's RSS) stands in for either side.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.report.formats import count, mib
from bench.report.render import Column

BAND = 0.05  # the ±5 % band drawn around y = x
COLUMNS = [
    Column("configuration", "label"), Column("n", "n", count, True, "runs with both figures"),
    Column("predicted MiB", "predicted", mib, True,
           "mean plan/met_peak_bytes: the plan at the largest batch the run met"),
    Column("measured MiB", "measured", mib, True, "mean mem/tensor_peak_bytes: the training tensor peak measured"),
    Column("mean error %", "error_pct", lambda v: f"{v:+.2f}", True,
           "mean over runs of (predicted − measured) / measured × 100: positive when the plan over-predicts"),
    Column("max |error| %", "abs_error_max_pct", lambda v: f"{v:.2f}", True, "the largest error of a single run"),
]


def points(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run (the latest of a repeated config) with both a predicted and a measured peak:
    run, technique, configuration group, both figures in bytes and the error in %."""
    done = runs[(runs["status"] == "FINISHED") & ~runs["superseded"]]
    planned = done["plan_met_peak_bytes"].where(done["plan_met_peak_bytes"] > 0, done["plan_peak_bytes"])
    both = done[(planned > 0) & (done["tensor_peak_bytes"] > 0)]
    planned = planned[both.index]
    error = (planned - both["tensor_peak_bytes"]) / both["tensor_peak_bytes"] * 100
    return pd.DataFrame({"run_id": both["run_id"], "run_name": both["run_name"], "technique": both["technique"],
                         "group": both["group"], "predicted": planned,
                         "measured": both["tensor_peak_bytes"], "error_pct": error,
                         "at_max_length": ~(both["plan_met_peak_bytes"] > 0)}).reset_index(drop=True)


def errors(found: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Per configuration, in the headline's order: runs, mean predicted and measured peaks, mean error in % and
    the largest single error. A configuration outside the headline (no accuracy) is labelled by its runs."""
    if found.empty:
        return pd.DataFrame(columns=["group", "label", *(c.field for c in COLUMNS[1:])])
    grouped = found.assign(abs_error=found["error_pct"].abs()).groupby("group", sort=False)
    rows = pd.DataFrame({"n": grouped["run_id"].count(), "predicted": grouped["predicted"].mean(),
                         "measured": grouped["measured"].mean(), "error_pct": grouped["error_pct"].mean(),
                         "abs_error_max_pct": grouped["abs_error"].max(),
                         "fallback": grouped["technique"].first()}).reset_index()
    order = {group: index for index, group in enumerate(table["group"])}
    labels = table.set_index("group")["label"]
    rows["label"] = [labels.get(group, fallback) for group, fallback in zip(rows["group"], rows["fallback"],
                                                                         strict=True)]
    rows = rows.assign(_order=rows["group"].map(lambda g: order.get(g, len(order)))).sort_values("_order",
                                                                                                 kind="stable")
    return rows.drop(columns=["_order", "fallback"]).reset_index(drop=True)


def outside_band(found: pd.DataFrame) -> int:
    """How many runs' predictions miss by more than the band."""
    return int((found["error_pct"].abs() > BAND * 100 + 1e-9).sum()) if not found.empty else 0


def summary(found: pd.DataFrame) -> str:
    """One sentence: how many runs, their mean absolute error, how many fall outside the band."""
    if found.empty:
        return ""
    mean_abs = found["error_pct"].abs().mean()
    if not math.isfinite(mean_abs):
        return ""
    older = int(found["at_max_length"].sum())
    caveat = (f" {older} of them logged no plan at the batch they met, so their plan at data.max_length is "
              "compared: it over-predicts where the text stayed shorter." if older else "")
    return (f"{len(found)} runs with both figures; mean |error| {mean_abs:.2f} %, "
            f"{outside_band(found)} outside ±{BAND * 100:g} %.{caveat}")
