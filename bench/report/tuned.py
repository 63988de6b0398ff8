"""The fair comparison (`bench run experiment=fair-minilm`): each technique at the learning rate it did best with on
the validation split, rerun over seeds and reported on the test split. Pure pandas, like `analyse`.

Its runs carry tags: `fair/id` (the comparison), `fair/stage` (`tune`: one seed per rate of a log grid; `final`:
the chosen rate over seeds), and on final runs `fair/lr_chosen` and `fair/chosen_on`. The headline table already
keeps each stage apart (`analyse.KEYS`); this module adds the comparisons a reader of the fair table asks for.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report.compare import against, counted, reference_groups
from bench.report.labels import FINAL
from bench.techniques import TECHNIQUES, report_order

TUNE = "tune"
SCOPE = ["fair_id", "dataset", "model", "device"]  # one comparison, on one data set, model and device
ORDER = {name: i for i, name in enumerate(report_order())}  # the headline's order of techniques
# The techniques every row is compared with (`vs_<name>` columns): LoRA and full fine-tuning, as their modules say.
BASELINES = [name for name, item in TECHNIQUES.items() if item.baseline]


def tuned_table(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The headline's rows of final runs, with the rate they trained at, what it was chosen on, and Δ test
    accuracy against LoRA (`vs_lora*`) and full fine-tuning (`vs_full*`) of the same comparison: the mean of
    per-seed differences with a paired t interval, Welch where the seeds do not match one to one."""
    rows = table[table["stage"] == FINAL]
    if rows.empty:
        return rows
    rows = rows.join(_rates(runs), on="group")
    for technique in BASELINES:
        reference = reference_groups(rows, technique, SCOPE)
        rows = rows.join(against(rows, runs, reference, "test_accuracy", f"vs_{technique}"))
    return rows


def _rates(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: `lr_used`, the chosen rate (fair/lr_chosen, else the trainer.lr its runs logged), as text
    so a disagreement between seeds shows rather than averages away; `chosen_on`, likewise."""
    final = counted(runs)
    final = final[final["stage"] == FINAL]
    rate = final["lr_chosen"].fillna(final["lr"])
    return pd.DataFrame({"lr_used": rate.groupby(final["group"]).agg(_distinct_numbers),
                         "chosen_on": final["chosen_on"].groupby(final["group"]).agg(_distinct)})


def _distinct_numbers(values: pd.Series) -> str:
    return ", ".join(f"{v:g}" for v in sorted(set(values.dropna())))


def _distinct(values: pd.Series) -> str:
    return ", ".join(sorted(set(values.dropna().astype(str))))


def lr_points(runs: pd.DataFrame) -> pd.DataFrame:
    """The tuning stage as points: per comparison, technique and rate, the mean validation accuracy over its
    runs (`accuracy`, n), and `chosen`: the rate its final runs were given (fair/lr_chosen), or, before any final
    run exists, the best on validation. Sorted by technique order, then rate."""
    tune = counted(runs)
    tune = tune[(tune["stage"] == TUNE) & tune["lr"].notna()]
    if tune.empty:
        return pd.DataFrame(columns=[*SCOPE, "technique", "lr", "accuracy", "n", "chosen"])
    points = (tune.groupby([*SCOPE, "technique", "lr"], sort=False)["accuracy"].agg(["mean", "count"])
              .rename(columns={"mean": "accuracy", "count": "n"}).reset_index())
    chosen = _chosen_rates(runs)
    parts = [_mark(rows, chosen.get(key)) for key, rows in points.groupby([*SCOPE, "technique"], sort=False)]
    marked = pd.concat(parts, ignore_index=True)
    order = marked["technique"].map(lambda t: ORDER.get(t, len(ORDER)))
    return (marked.assign(_order=order).sort_values([*SCOPE, "_order", "technique", "lr"], kind="stable")
            .drop(columns="_order").reset_index(drop=True))


def _chosen_rates(runs: pd.DataFrame) -> dict[tuple, float]:
    """(comparison, data set, model, device, technique) → the rate its final runs were tagged with."""
    final = runs[(runs["stage"] == FINAL) & runs["lr_chosen"].notna()]
    return final.groupby([*SCOPE, "technique"])["lr_chosen"].first().to_dict()


def _mark(rows: pd.DataFrame, chosen: float | None) -> pd.DataFrame:
    rows = rows.sort_values("lr")
    if chosen is None:  # no final run yet: the rate the tuning stage would choose
        chosen = float(rows.loc[rows["accuracy"].idxmax(), "lr"])
    return rows.assign(chosen=np.isclose(rows["lr"], chosen, rtol=1e-9, atol=0.0))


def resolutions(runs: pd.DataFrame) -> pd.DataFrame:
    """Per comparison and technique, how finely its rate was chosen: `resolution`, the larger ratio between the chosen
    rate and a rate tried beside it in the tuning stage (the rate best on validation lies within that factor of the
    chosen one, if its curve has one peak; the comparison's final runs carry it as the tag fair/rate_resolution);
    NaN where the chosen rate is an end of the rates tried, whose resolution is unknown."""
    rows = []
    for key, points in lr_points(runs).groupby([*SCOPE, "technique"], sort=False):
        rates, chosen = points["lr"].tolist(), points["chosen"].tolist()
        if True not in chosen:
            continue
        i = chosen.index(True)
        ratio = max(rates[i] / rates[i - 1], rates[i + 1] / rates[i]) if 0 < i < len(rates) - 1 else np.nan
        rows.append({**dict(zip([*SCOPE, "technique"], key, strict=True)), "resolution": ratio})
    return pd.DataFrame(rows, columns=[*SCOPE, "technique", "resolution"])
