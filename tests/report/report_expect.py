"""The report's figures recomputed by hand from report_store's ground truth, and readers for the page's cells."""

from __future__ import annotations

import html
import math
import re
import statistics

from report_store import CATEGORIES, GPU, finished_groups
from scipy import stats

FULL_CPU, FULL_GPU = ("minilm", "cpu", "full", None, None), ("minilm", GPU, "full", None, None)
QLORA_CPU, QLORA_GPU = ("minilm", "cpu", "qlora", 8, "qv"), ("minilm", GPU, "qlora", 8, "qv")


def expected(runs: list) -> dict[str, float]:
    """Mean and 95 % Student-t interval computed by hand, and the means of the other figures."""
    accuracies = [run.accuracy for run in runs]
    n, mean = len(accuracies), statistics.fmean(accuracies)
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(accuracies) / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "half": half, "peak": statistics.fmean(r.peak for r in runs),
            "speed": statistics.fmean(r.tokens_per_s for r in runs), "size": statistics.fmean(r.adapter for r in runs),
            **{name: statistics.fmean(r.at_peak()[name] for r in runs) for name in CATEGORIES}}


def full_of(key: tuple) -> dict[str, float] | None:
    """The expected figures of full fine-tuning of the same model on the same device, if it ran there."""
    runs = finished_groups().get((key[0], key[1], "full", None, None))
    return expected(runs) if runs else None


def headline_row(rows: list[dict], model: str, device: str, technique: str, r: int | None, targets: str | None) -> dict:
    """The one headline row of a configuration key; a report over one device has no device column (cpu here)."""
    found = [row for row in rows if row["model"][1] == model and row["technique"][1] == technique
             and row["r"][1] == ("" if r is None else str(r)) and row["targets"][1] == (targets or "")
             and row.get("device", ({}, "cpu"))[1] == device]
    assert len(found) == 1, (model, device, technique, r, targets)
    return found[0]


def number(cell: tuple[dict, str]) -> float:
    """A numeric cell's exact value (its data-v); NaN when blank."""
    return float(cell[0]["data-v"]) if cell[0].get("data-v") else math.nan


def close(actual: float, expected: float) -> bool:
    """Equal to rounding, or both missing."""
    return (math.isnan(actual) and math.isnan(expected)) or math.isclose(actual, expected, rel_tol=1e-9)


def hints(page: str, table_id: str) -> dict[str, str]:
    """{header: its title attribute} of one table."""
    head = page[page.index(f'<table id="{table_id}"'):]
    head = head[:head.index("</thead>")]
    return {html.unescape(title): html.unescape(hint) for hint, title in re.findall(r'<th title="([^"]*)">([^<]*)</th>',
                                                                                     head)}


def plot(page: str, div_id: str) -> tuple[list[dict], dict]:
    """The data and layout a plot's script hands to Plotly.newPlot."""
    import json

    start = page.index(f'Plotly.newPlot("{div_id}", ') + len(f'Plotly.newPlot("{div_id}", ')
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(page, start)
    layout, _ = decoder.raw_decode(page, end + len(", "))
    return data, layout


def label(key: tuple) -> str:
    """A configuration's label in a report over several models and devices, e.g. `[cpu] minilm lora r=8 qv`."""
    model, device, technique, r, targets = key
    return f"[{device}] {model} {technique}" + (f" r={r} {targets}" if r is not None else "")
