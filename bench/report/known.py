"""Known results, checked: each published expectation (`known.toml` beside this module, one table each) that the
report's runs can test, with bench's figure, its interval and a verdict. Pure pandas, like `analyse`.

A verdict is `agrees` when bench's interval meets the published range, `disagrees` when it lies wholly outside,
`not measured here` when no runs test it (the expectation names the command that would), and `out of scope on
this device` when the source measured on a GPU and these runs ran elsewhere. Speed and time are measured only from
runs timed alone (`bench.report.timing`); the learning-rate ratio only from a fair comparison's choices, made on
validation.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.core.intervals import difference, mean_interval
from bench.report import timing, tuned
from bench.report.compare import against, counted, reference_groups
from bench.report.labels import FINAL
from bench.report.memory import UNKNOWN_DEVICE
from bench.techniques import TECHNIQUES

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

TABLE = Path(__file__).with_name("known.toml")
AGREES, DISAGREES, NOT_MEASURED, OUT_OF_SCOPE = ("agrees", "disagrees", "not measured here",
                                                 "out of scope on this device")
PAIR_KEYS = ["dataset", "model", "device", "fair_id", "stage"]  # and, adapter against adapter, rank and targets


@dataclass(frozen=True)
class Expectation:
    """One row of known.toml (see its header for the fields)."""

    claim: str
    source: str
    url: str
    published: str
    measure: str
    technique: str
    against: str
    expected: tuple[float, float]
    unit: str
    device: str
    command: str
    metric: str = ""


@dataclass(frozen=True)
class Measured:
    """bench's figure for one comparison: where (a label), the value, its interval, how it was computed, and the
    device; `value` NaN with `how` saying why when the runs are there but cannot give it."""

    where: str
    value: float
    low: float
    high: float
    how: str
    device: str


@functools.cache
def expectations(path: Path = TABLE) -> tuple[Expectation, ...]:
    """The expectations of known.toml, in its order."""
    with path.open("rb") as handle:
        rows = tomllib.load(handle)["expectation"]
    return tuple(Expectation(**{**row, "expected": tuple(row["expected"])}) for row in rows)


def _subjects(expectation: Expectation) -> list[str]:
    """The techniques measured: one, or every technique whose parent is `against` (`*`)."""
    if expectation.technique == "*":
        return [name for name, item in TECHNIQUES.items() if item.parent == expectation.against]
    return [expectation.technique]


def _pairs(table: pd.DataFrame, technique: str, reference: str) -> list[tuple[pd.Series, pd.Series]]:
    """(row, reference row) for each configuration of `technique` with a configuration of `reference` on the same
    data set, model, device and stage (and rank and targets when both are adapters), the reference best on
    validation."""
    keys = PAIR_KEYS + (["r", "target_modules"] if TECHNIQUES[reference].uses_adapter else [])
    mine = table["technique"] == technique
    if not mine.any():
        return []
    groups = reference_groups(table, reference, keys)[mine]
    by_group = table.set_index("group")  # a reference row's name is its group
    return [(row, by_group.loc[int(other)]) for (_, row), other in zip(table[mine].iterrows(), groups, strict=True)
            if not pd.isna(other)]


def _label(row: pd.Series, other: pd.Series) -> str:
    return f"{row['label']} vs {other['label']}"


def _lr_ratio(e: Expectation, table: pd.DataFrame, runs: pd.DataFrame) -> list[Measured]:
    """Chosen rate of the technique over the reference's, per fair comparison; the interval brackets each chosen rate
    by its neighbours on the grid (open at the grid's edge), where the best rate of a unimodal curve must lie."""
    points = tuned.lr_points(runs)
    found = []
    for key, rows in points.groupby(tuned.SCOPE, sort=False):
        mine, theirs = _bracket(rows, e.technique), _bracket(rows, e.against)
        if mine is None or theirs is None:
            continue
        (rate, low, high), (base, base_low, base_high) = mine, theirs
        upper = high / base_low if base_low > 0 else math.inf  # the reference at its grid's bottom: open above
        found.append(Measured(f"{key[0] or 'fair comparison'} ({key[2]}, {key[3]})", rate / base, low / base_high,
                              upper, f"chosen rates {rate:g} / {base:g} on validation; the interval "
                              "brackets each by its grid neighbours", str(key[3])))
    return found


def _bracket(rows: pd.DataFrame, technique: str) -> tuple[float, float, float] | None:
    grid = rows[rows["technique"] == technique].sort_values("lr")
    chosen = np.flatnonzero(grid["chosen"].to_numpy())
    if not len(chosen):
        return None
    rates, at = grid["lr"].tolist(), int(chosen[0])
    return (rates[at], rates[at - 1] if at > 0 else 0.0, rates[at + 1] if at + 1 < len(rates) else math.inf)


def _tuned_delta(e: Expectation, table: pd.DataFrame, runs: pd.DataFrame) -> list[Measured]:
    """Δ test accuracy (pp) of each tuned technique against the tuned reference of the same fair comparison."""
    final = table[table["stage"] == FINAL]
    found = []
    for technique in _subjects(e):
        rows = final[final["technique"] == technique]
        if rows.empty:
            continue
        reference = reference_groups(final, e.against, tuned.SCOPE)[rows.index]
        deltas = against(rows, runs, reference, "test_accuracy", "d")
        labels = final.set_index("group")["label"]
        for (_, row), (_, d), other in zip(rows.iterrows(), deltas.iterrows(), reference, strict=True):
            if not pd.isna(other):
                found.append(Measured(f"{row['label']} vs {labels[other]}", d["d"] * 100, d["d_low"] * 100,
                                      d["d_high"] * 100, f"test accuracy, {d['d_method']}", str(row["device"])))
    return found


def _log_ratio(e: Expectation, table: pd.DataFrame, runs: pd.DataFrame, figure: str, what: str) -> list[Measured]:
    """The technique's `figure` over the reference's, from runs timed alone: the difference of logs (paired over
    seeds where they match, Welch otherwise), exponentiated."""
    timed = timing.timed_runs(runs, table)
    alone = timed[(timed["timing"] == timing.ALONE) & (timed[figure] > 0)]
    alone = alone.assign(log=np.log(alone[figure].astype(float)))
    found = []
    for row, other in _pairs(table, e.technique, e.against):
        mine, theirs = alone[alone["group"] == row["group"]], alone[alone["group"] == other.name]
        if mine.empty or theirs.empty:
            found.append(Measured(_label(row, other), math.nan, math.nan, math.nan, f"{what} not compared: "
                                  "its runs were not all timed alone (timing/shared)", str(row["device"])))
            continue
        d = difference(mine, theirs, "log")
        found.append(Measured(_label(row, other), math.exp(d.delta), math.exp(d.low), math.exp(d.high),
                              f"{what} timed alone, {d.method}", str(row["device"])))
    return found


def _forgetting(e: Expectation, table: pd.DataFrame, runs: pd.DataFrame) -> list[Measured]:
    """eval/forgetting of the technique minus the reference's, paired over seeds where they match."""
    done = counted(runs)
    done = done[done["forgetting"].notna()]
    by_group = {group: rows for group, rows in done.groupby("group", sort=False)}
    found = []
    for row, other in _pairs(table[table["group"].isin(list(by_group))], e.technique, e.against):
        d = difference(by_group[row["group"]], by_group[other.name], "forgetting")
        if not math.isnan(d.delta):
            found.append(Measured(_label(row, other), d.delta, d.low, d.high, f"eval/forgetting, {d.method}",
                                  str(row["device"])))
    return found


def _mean(e: Expectation, table: pd.DataFrame, runs: pd.DataFrame) -> list[Measured]:
    """The mean of a headline column over the technique's runs, per configuration, with its t interval."""
    done = counted(runs)
    done = done[(done["technique"] == e.technique) & done[e.metric].notna()]
    by_group = {group: rows[e.metric] for group, rows in done.groupby("group", sort=False)}
    found = []
    for _, row in table[table["group"].isin(list(by_group))].iterrows():
        values = by_group[row["group"]]
        stats = mean_interval(values.groupby(pd.Series(0, index=values.index))).iloc[0]
        low, high = (stats["low"], stats["high"]) if not pd.isna(stats["ci95"]) else (stats["mean"], stats["mean"])
        found.append(Measured(str(row["label"]), stats["mean"], low, high, f"mean of {len(values)} run(s)",
                              str(row["device"])))
    return found


MEASURES = {"lr_ratio": _lr_ratio, "tuned_delta": _tuned_delta, "forgetting_delta": _forgetting, "mean": _mean,
            "speed_ratio": lambda e, t, r: _log_ratio(e, t, r, "tokens_per_s", "tokens/s"),
            "time_ratio": lambda e, t, r: _log_ratio(e, t, r, "s_per_1k_steps", "seconds per 1,000 steps")}


def verdict(e: Expectation, found: Measured) -> str:
    """agrees, disagrees, not measured here, or out of scope on this device."""
    if math.isnan(found.value):
        return NOT_MEASURED
    if e.device == "gpu" and found.device in ("cpu", UNKNOWN_DEVICE):
        return OUT_OF_SCOPE
    low, high = (found.low, found.high) if not math.isnan(found.low) else (found.value, found.value)
    return AGREES if low <= e.expected[1] and high >= e.expected[0] else DISAGREES


def checks(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per expectation and comparison that tests it (one `not measured here` row where none does): claim,
    source, url, published, where, figure, interval, how, verdict."""
    rows = []
    for e in expectations():
        found = MEASURES[e.measure](e, table, runs)
        for item in found:
            rows.append(_row(e, item, verdict(e, item)))
        if not found:
            rows.append(_row(e, Measured("", math.nan, math.nan, math.nan, f"no runs test it; {e.command}", ""),
                             NOT_MEASURED))
    return pd.DataFrame(rows)


def _row(e: Expectation, found: Measured, said: str) -> dict[str, object]:
    return {"claim": e.claim, "source": e.source, "url": e.url, "published": e.published, "where": found.where,
            "figure": _text(e.unit, found.value), "interval": _interval(e.unit, found), "how": found.how,
            "verdict": said, "expected": f"{_text(e.unit, e.expected[0])} to {_text(e.unit, e.expected[1])}"}


def _text(unit: str, value: float) -> str:
    if math.isnan(value):
        return ""
    if math.isinf(value) or abs(value) >= 1e8:
        return "∞" if value > 0 else "−∞"
    return {"x": f"{value:.2f}×", "pp": f"{value:+.2f} pp", "nats": f"{value:+.3f} nats",
            "bits": f"{value:.3f} bits"}.get(unit, f"{value:g}")


def _interval(unit: str, found: Measured) -> str:
    if math.isnan(found.value):
        return ""
    if math.isnan(found.low):
        return "no interval"
    return f"[{_text(unit, found.low)}, {_text(unit, found.high)}]"
