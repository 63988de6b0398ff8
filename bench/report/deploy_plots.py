"""The deployment section's figures (`bench.report.deploy` computes their rows): test accuracy against the size of
what you ship, and a serving latency per configuration and form. Plotly dicts, as `plots` draws its own."""

from __future__ import annotations

import math

import pandas as pd

from bench.report import plots
from bench.report.columns import milliseconds, rate

# Symbol in the scatter and colour of the bars per form, in the order the legend lists them.
FORM_STYLE = {"base": ("circle-open", "#7f7f7f"), "unmerged": ("circle", "#1f77b4"),
              "merged16": ("square", "#2ca02c"), "merged4": ("diamond", "#ff7f0e"), "full": ("star", "#d62728")}
SHIPPED = {"unmerged": "unmerged (size: the adapter alone)"}  # the one form whose size leaves the base out


def size_accuracy(rows: pd.DataFrame) -> plots.Figure | None:
    """Test accuracy against the size of what you ship (log axis), one marker per configuration and form: colour
    the technique, symbol the form, a dotted line through one configuration's forms; the hover adds serving."""
    points = rows.dropna(subset=["bytes", "accuracy"]) if {"bytes", "accuracy"} <= set(rows) else rows.iloc[:0]
    if points.empty:
        return None
    traces = []
    for _, part in points.groupby("group", sort=False):
        part, technique = part.sort_values("bytes"), str(part["technique"].iloc[0])  # the line runs small to large
        tint = plots.color(technique)
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": plots.text(part["label"].iloc[0]),
            "x": plots.numbers(part["bytes"], 1 / plots.MIB), "y": plots.numbers(part["accuracy"], 100),
            "line": {"color": tint, "dash": "dot", "width": 1},
            "customdata": [[plots.text(SHIPPED.get(form, form)), plots.text(_serving(row))] for form, row in
                           zip(part["form"], part.to_dict("records"), strict=True)],
            "marker": {"color": tint, "size": 11, "line": {"width": 1, "color": "#333"},
                       "symbol": [FORM_STYLE.get(form, ("x", ""))[0] for form in part["form"]]},
            "hovertemplate": "%{fullData.name} · %{customdata[0]}<br>size %{x:,.2f} MiB<br>test accuracy %{y:.2f} %"
                             "<br>%{customdata[1]}<extra></extra>"})
    traces += [{"type": "scatter", "mode": "markers", "name": f"form: {form}", "x": [None], "y": [None],
                "legendgroup": "forms", "hoverinfo": "skip",
                "marker": {"color": "#555", "size": 11, "symbol": FORM_STYLE.get(form, ("x", ""))[0]}}
               for form in dict.fromkeys(points["form"])]  # a key to the symbols
    return {"data": traces, "layout": _layout("Test accuracy against the size of what you ship",
                                              "size on disk (MiB, log axis)", "test accuracy (%)", xtype="log")}


def _serving(row: dict) -> str:
    """The hover's serving line: latency and rows/s for a classifier, time to first token for a causal LM."""
    parts = [f"{name} {milliseconds(row[field])} ms" for name, field in
             (("p50", "latency_p50_ms"), ("p90", "latency_p90_ms"), ("TTFT", "ttft_ms"))
             if _present(row.get(field))]
    parts += [f"{rate(row[field])} {unit}" for field, unit in (("rows_per_s", "rows/s"),
                                                               ("gen_tokens_per_s", "tokens/s"))
              if _present(row.get(field))]
    return ", ".join(parts)


def _present(value: object) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


def latency_bars(rows: pd.DataFrame, field: str, title: str) -> plots.Figure | None:
    """`field` (p50 latency or time to first token, ms) per configuration, one bar per form, with the interval the
    runs logged as error bars."""
    if field not in rows or rows[field].isna().all():
        return None
    traces = []
    for form, part in rows.dropna(subset=[field]).groupby("form", sort=False):
        low, high = (part[f"{field}_{end}"].replace([math.inf, -math.inf], math.nan).fillna(part[field])
                     if f"{field}_{end}" in part else part[field] for end in ("low", "high"))  # JSON has no ∞
        traces.append({"type": "bar", "name": plots.text(form), "x": [plots.text(label) for label in part["label"]],
                       "y": plots.numbers(part[field]), "marker": {"color": FORM_STYLE.get(form, ("", "#8c564b"))[1]},
                       "error_y": {"type": "data", "symmetric": False, "array": plots.numbers(high - part[field]),
                                   "arrayminus": plots.numbers(part[field] - low)},
                       "hovertemplate": "%{x}<br>%{y:,.2f} ms<extra>%{fullData.name}</extra>"})
    order = list(FORM_STYLE)
    traces.sort(key=lambda trace: order.index(trace["name"]) if trace["name"] in order else len(order))
    layout = _layout(title, "configuration", "ms", xtype="category")
    labels = [plots.text(label) for label in dict.fromkeys(rows["label"])]  # the table's order, whatever form is first
    layout["xaxis"].update(categoryorder="array", categoryarray=labels)
    return {"data": traces, "layout": {**layout, "barmode": "group"}}


def _layout(title: str, x: str, y: str, *, xtype: str) -> dict:
    """The report's plot layout (as `plots` draws its own): title, axis titles, legend below."""
    return {"title": {"text": plots.text(title)}, "height": 460, "margin": {"l": 70, "r": 30, "t": 60, "b": 60},
            "hovermode": "closest", "legend": {"orientation": "h", "y": -0.2},
            "xaxis": {"title": {"text": plots.text(x)}, "type": xtype}, "yaxis": {"title": {"text": plots.text(y)}}}
