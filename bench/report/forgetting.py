"""Forgetting as an axis: validation accuracy against how much worse the model got at general text
(`eval/forgetting`, causal LMs: general-text loss after training minus before), one point per configuration, the
Pareto frontier (less forgetting and at least as accurate) marked. Pure pandas and a plotly dict, like `plots`."""

from __future__ import annotations

import pandas as pd

from bench.report import plots, render
from bench.report.analyse import pareto_mask
from bench.report.render import Section

INTRO = ("Mean validation accuracy (eval/accuracy, 95 % CI bars) against mean forgetting (eval/forgetting: the loss "
         "on general English text after training minus before, in nats; lower is better), one point per "
         "configuration that measured both. Stars and a dashed step line (one per data set and device) mark the "
         "configurations no other on the same data set and device beats on both: less forgetting and at least "
         "as accurate.")


def rows(table: pd.DataFrame) -> pd.DataFrame:
    """The configurations with both figures, each with `forgetting_front`: on its data set's and device's frontier."""
    found = table.dropna(subset=["forgetting", "accuracy_mean"])
    if found.empty:
        return found.assign(forgetting_front=pd.Series(dtype=bool))
    front = pd.Series(False, index=found.index)
    for _, part in found.groupby(["dataset", "device"]):
        front[part.index] = pareto_mask(part["forgetting"], part["accuracy_mean"])
    return found.assign(forgetting_front=front)


def figure(found: pd.DataFrame) -> plots.Figure | None:
    """The scatter and its frontiers; None without a configuration that measured both."""
    if found.empty:
        return None
    traces = []
    for technique, part in found.groupby("technique", sort=False):
        front = part["forgetting_front"].tolist()
        traces.append({
            "type": "scatter", "mode": "markers", "name": plots.text(technique),
            "x": plots.numbers(part["forgetting"]), "y": plots.numbers(part["accuracy_mean"], 100),
            "text": [plots.text(label) for label in part["label"]],
            "error_x": {"type": "data", "array": plots.numbers(part["forgetting_ci95"].fillna(0)), "thickness": 1},
            "error_y": {"type": "data", "array": plots.numbers(part["accuracy_ci95"].fillna(0), 100),
                        "thickness": 1},
            "marker": {"color": plots.color(str(technique)), "size": [14 if p else 9 for p in front],
                       "symbol": ["star" if p else "circle" for p in front], "line": {"width": 1, "color": "#333"}},
            "hovertemplate": "%{text}<br>val accuracy %{y:.2f} %<br>forgetting %{x:+.3f} nats<extra></extra>"})
    for index, ((dataset, device), part) in enumerate(found[found["forgetting_front"]].groupby(["dataset", "device"])):
        part = part.sort_values("forgetting")
        several = found[["dataset", "device"]].drop_duplicates().shape[0] > 1
        name = f"Pareto frontier ({dataset}, {device})" if several else "Pareto frontier"
        traces.append({"type": "scatter", "mode": "lines", "name": plots.text(name), "hoverinfo": "skip",
                       "x": plots.numbers(part["forgetting"]), "y": plots.numbers(part["accuracy_mean"], 100),
                       "line": {"dash": "dash", "color": "#444", "shape": "hv", "width": 1.5},
                       "showlegend": several or index == 0})
    layout = {"title": {"text": "Validation accuracy against forgetting (★ on the Pareto frontier)"}, "height": 460,
              "margin": {"l": 70, "r": 30, "t": 60, "b": 60}, "hovermode": "closest",
              "legend": {"orientation": "h", "y": -0.2},
              "xaxis": {"title": {"text": "forgetting (eval/forgetting, nats; lower is better)"}, "zeroline": True},
              "yaxis": {"title": {"text": "val accuracy (%)"}, "zeroline": False}}
    return {"data": traces, "layout": layout}


def section(table: pd.DataFrame) -> Section | None:
    """The section, or None when no configuration measured forgetting and accuracy."""
    found = rows(table)
    drawn = figure(found)
    if drawn is None:
        return None
    front = ", ".join(found.loc[found["forgetting_front"], "label"])
    note = f'<p class="note">On the frontier: {render.esc(front)}.</p>'
    return Section("forgetting", "Accuracy vs forgetting", INTRO, plots.figure_html("plot-forgetting", drawn) + note)
