"""Plotly figures as plain dicts, written into the page as a <div> and a <script> that calls Plotly.newPlot.

Dicts rather than plotly.graph_objects: the report builds dozens of traces and validation would cost more than
the rest of the report; the browser test proves plotly.js accepts them. plotly.js itself is inlined once.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

import pandas as pd

from bench.report.memory import CATEGORIES
from bench.techniques import NAMES

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
TECHNIQUE_COLORS = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(NAMES)}
# One colour per category of the tensor peak, the same in every bar: weights blue, training state warm, scratch
# green and purple, the rest grey.
CATEGORY_COLORS = dict(zip(CATEGORIES, ("#1f77b4", "#9ecae1", "#ff7f0e", "#d62728", "#2ca02c", "#9467bd", "#7f7f7f"),
                           strict=True))
CONFIG = {"responsive": True, "displaylogo": False, "modeBarButtonsToRemove": ["sendDataToCloud"]}
MIB = 2 ** 20
MAX_POINTS = 1500  # per line: enough to see a curve's shape, small enough to keep the page light

Figure = dict[str, Any]


def plotly_js() -> str:
    """The plotly.js bundle shipped inside the plotly package (no network)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def figure_html(div_id: str, figure: Figure) -> str:
    """A <div> and the <script> that draws `figure` into it."""
    safe_id = html.escape(div_id)
    return (f'<div id="{safe_id}" class="plot"></div>\n<script>Plotly.newPlot("{safe_id}", {to_json(figure["data"])}, '
            f'{to_json(figure["layout"])}, {to_json(CONFIG)});</script>')


def to_json(value: Any) -> str:
    """JSON safe inside <script>: `<`, `>` and `&` escaped, so no value can close the script element."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def text(value: Any) -> str:
    """A label for plotly, which reads `<b>`-style tags in labels: escaped so it shows as typed."""
    return html.escape(str(value), quote=False)


def numbers(values: Any, scale: float = 1.0) -> list[float | None]:
    """Floats for JSON, NaN as null (a gap)."""
    return [None if pd.isna(v) else float(v) * scale for v in values]


def color(technique: str) -> str:
    """One colour per technique in every plot."""
    if technique in TECHNIQUE_COLORS:
        return TECHNIQUE_COLORS[technique]
    index = sum(map(ord, technique)) % len(PALETTE)  # stable across runs of the report
    return PALETTE[index]


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {"title": {"text": text(title)}, "height": 460, "margin": {"l": 70, "r": 30, "t": 60, "b": 60},
            "hovermode": "closest", "legend": {"orientation": "h", "y": -0.2}, **extra}


def _axis(title: str, **extra: Any) -> dict[str, Any]:
    return {"title": {"text": text(title)}, "zeroline": False, **extra}


def pareto(table: pd.DataFrame) -> Figure | None:
    """Accuracy against the training tensor peak, one point per configuration (95 % CI bars), each data set's and
    device's frontier as a step line."""
    rows = table.dropna(subset=["tensor_peak_bytes", "accuracy_mean"])
    if rows.empty:
        return None
    traces = []
    for technique, part in rows.groupby("technique", sort=False):
        traces.append({
            "type": "scatter", "mode": "markers", "name": text(technique),
            "x": numbers(part["tensor_peak_bytes"], 1 / MIB),
            "y": numbers(part["accuracy_mean"], 100), "text": [text(label) for label in part["label"]],
            "error_y": {"type": "data", "array": numbers(part["accuracy_ci95"].fillna(0), 100), "thickness": 1},
            "marker": {"color": color(technique), "size": [14 if p else 9 for p in part["pareto"]],
                       "symbol": ["star" if p else "circle" for p in part["pareto"]],
                       "line": {"width": 1, "color": "#333"}},
            "hovertemplate": "%{text}<br>val accuracy %{y:.2f} %<br>tensor peak %{x:,.1f} MiB<extra></extra>"})
    traces += _frontiers(rows[rows["pareto"]], several_devices=table["device"].nunique() > 1)
    low, high = rows["tensor_peak_bytes"].min() / MIB, rows["tensor_peak_bytes"].max() / MIB
    ticks = _log_ticks(low, high)
    xaxis = _axis("tensor peak (MiB)", type="log", tickvals=ticks, ticktext=[f"{t:,g}" for t in ticks]) \
        if high > 8 * max(low, 1e-9) else _axis("tensor peak (MiB)")
    title = "Validation accuracy against training tensor peak (★ on the Pareto frontier)"
    return {"data": traces, "layout": _layout(title, xaxis=xaxis, yaxis=_axis("val accuracy (%)"))}


def _frontiers(front: pd.DataFrame, *, several_devices: bool) -> list[dict[str, Any]]:
    """One dashed step line per data set and device: memory on two devices does not compete, so each device has
    its own frontier, named in the legend when there are several."""
    traces = []
    for index, ((_, device), rows) in enumerate(front.groupby(["dataset", "device"])):
        rows = rows.sort_values("tensor_peak_bytes")
        name = f"Pareto frontier ({device})" if several_devices else "Pareto frontier"
        traces.append({"type": "scatter", "mode": "lines", "name": text(name), "hoverinfo": "skip",
                       "legendgroup": text(name), "showlegend": several_devices or index == 0,
                       "x": numbers(rows["tensor_peak_bytes"], 1 / MIB), "y": numbers(rows["accuracy_mean"], 100),
                       "line": {"dash": ("dash", "dot", "dashdot", "longdash")[index % 4] if several_devices
                                else "dash", "color": "#444", "shape": "hv", "width": 1.5}})
    return traces


def _log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks covering [low, high]: plotly's own log ticks label only the decades."""
    ticks, decade = [], 10.0 ** math.floor(math.log10(max(low, 1e-9)))
    while decade <= high * 10:
        ticks += [m * decade for m in (1, 2, 5) if low / 2 <= m * decade <= high * 2]
        decade *= 10
    return ticks


def _two_panels(title: str, left: str, right: str, xaxis: dict[str, Any]) -> dict[str, Any]:
    return _layout(title, xaxis={**xaxis, "domain": [0, 0.45]}, xaxis2={**xaxis, "domain": [0.55, 1]},
                   yaxis=_axis(left), yaxis2=_axis(right, anchor="x2"))


def rank_sweep(lines: list[tuple[str, pd.DataFrame]]) -> Figure | None:
    """Accuracy (left) and training tensor peak (right) against LoRA rank, one line per target-module preset."""
    if not lines:
        return None
    traces, ranks = [], set()
    for index, (name, rows) in enumerate(lines):
        ranks.update(rows["r"])
        style = {"legendgroup": text(name), "name": text(name), "mode": "lines+markers", "type": "scatter",
                 "line": {"color": PALETTE[index % len(PALETTE)]}, "x": numbers(rows["r"])}
        traces.append({**style, "y": numbers(rows["accuracy_mean"], 100),
                       "error_y": {"type": "data", "array": numbers(rows["accuracy_ci95"].fillna(0), 100)},
                       "hovertemplate": "r=%{x}<br>val accuracy %{y:.2f} %<extra>%{fullData.name}</extra>"})
        traces.append({**style, "y": numbers(rows["tensor_peak_bytes"], 1 / MIB), "xaxis": "x2", "yaxis": "y2",
                       "showlegend": False, "hovertemplate": "r=%{x}<br>%{y:,.1f} MiB<extra>%{fullData.name}</extra>"})
    ticks = sorted(float(r) for r in ranks)
    xaxis = _axis("LoRA rank r", type="log", tickvals=ticks, ticktext=[f"{r:g}" for r in ticks])
    return {"data": traces, "layout": _two_panels("Rank sweep", "val accuracy (%)", "tensor peak (MiB)", xaxis)}


def target_comparison(rank: float, rows: pd.DataFrame) -> Figure:
    """Accuracy and trainable parameters per target-module preset at one rank, one bar series per technique."""
    traces = []
    for index, (name, part) in enumerate(rows.groupby("series", sort=False)):
        part = part.sort_values("target_modules")
        by_technique = rows["series"].nunique() == rows["technique"].nunique()  # else one colour per series
        tint = color(part["technique"].iloc[0]) if by_technique else PALETTE[index % len(PALETTE)]
        style = {"type": "bar", "name": text(name), "legendgroup": text(name), "marker": {"color": tint},
                 "x": [text(t) for t in part["target_modules"]]}
        traces.append({**style, "y": numbers(part["accuracy_mean"], 100),
                       "error_y": {"type": "data", "array": numbers(part["accuracy_ci95"].fillna(0), 100)},
                       "hovertemplate": "%{x}<br>val accuracy %{y:.2f} %<extra>%{fullData.name}</extra>"})
        traces.append({**style, "y": numbers(part["trainable_params"]), "xaxis": "x2", "yaxis": "y2",
                       "showlegend": False,
                       "hovertemplate": "%{x}<br>%{y:,.0f} trainable<extra>%{fullData.name}</extra>"})
    layout = _two_panels(f"Target modules at r={rank:g}", "val accuracy (%)", "trainable parameters",
                         _axis("target modules", type="category"))
    return {"data": traces, "layout": {**layout, "barmode": "group"}}


def memory_breakdown(rows: pd.DataFrame) -> Figure | None:
    """One stacked horizontal bar per configuration (top to bottom in the headline's order): the mean MiB of each
    category at the training tensor peak; the hover adds the tensor peak and where it fell (phase and module)."""
    if rows.empty:
        return None
    labels = [text(label) for label in rows["label"]]
    where = [[text(f"{phase if isinstance(phase, str) else '?'} · {module if isinstance(module, str) else '?'}"),
              None if pd.isna(peak) else peak / MIB]
             for phase, module, peak in zip(rows["peak_phase"], rows["peak_module"], rows["tensor_peak_bytes"],
                                            strict=True)]
    traces = [{"type": "bar", "orientation": "h", "name": name, "y": labels, "customdata": where,
               "x": numbers(rows[f"at_peak_{name}_bytes"], 1 / MIB), "marker": {"color": CATEGORY_COLORS[name]},
               "hovertemplate": f"%{{y}}<br>{name} %{{x:,.1f}} MiB of %{{customdata[1]:,.1f}}<br>"
                                "peak in %{customdata[0]}<extra></extra>"}
              for name in CATEGORIES if rows[f"at_peak_{name}_bytes"].notna().any()]  # no legend for the absent
    layout = _layout("Tensors at the training peak, by category (mean over seeds)", barmode="stack",
                     height=max(260, 150 + 26 * len(rows)), xaxis=_axis("MiB at the training tensor peak"),
                     yaxis={"type": "category", "autorange": "reversed", "automargin": True})
    # A vertical legend at the right: below or above the bars it would collide with the axis title or the
    # plot's title, as the figure's height follows the number of configurations.
    return {"data": traces, "layout": {**layout, "legend": {"orientation": "v", "traceorder": "normal"}}}


def prediction_scatter(found: pd.DataFrame, runs: pd.DataFrame, band: float) -> Figure | None:
    """Measured against predicted (MiB), one point per run coloured by technique, the line y = x and the ±5 %
    band around it (`band`: 0.05 for ±5 %); log axes when the figures span a decade or more. `found`:
    `bench.report.prediction.points`."""
    if found.empty:
        return None
    labels = runs.set_index("run_id")["run_name"]
    low = min(found["predicted"].min(), found["measured"].min()) / MIB
    high = max(found["predicted"].max(), found["measured"].max()) / MIB
    log = high >= 10 * low
    edge = [low / 1.1, high * 1.1] if log else [low - 0.05 * (high - low + 1), high + 0.05 * (high - low + 1)]
    traces = [
        {"type": "scatter", "mode": "lines", "name": f"±{band * 100:g} % band", "x": edge + edge[::-1],
         "y": [edge[0] * (1 - band), edge[1] * (1 - band), edge[1] * (1 + band), edge[0] * (1 + band)],
         "fill": "toself", "fillcolor": "rgba(44, 160, 44, 0.15)", "line": {"width": 0}, "hoverinfo": "skip"},
        {"type": "scatter", "mode": "lines", "name": "y = x", "x": edge, "y": edge, "hoverinfo": "skip",
         "line": {"color": "#444", "dash": "dash", "width": 1}}]
    for technique, part in found.groupby("technique", sort=False):
        traces.append({"type": "scatter", "mode": "markers", "name": text(technique),
                       "x": numbers(part["predicted"], 1 / MIB), "y": numbers(part["measured"], 1 / MIB),
                       "customdata": numbers(part["error_pct"]),
                       "text": [text(labels.get(run_id, run_id)) for run_id in part["run_id"]],
                       "marker": {"color": color(str(technique)), "size": 9, "line": {"width": 1, "color": "#333"}},
                       "hovertemplate": "%{text}<br>predicted %{x:,.1f} MiB<br>measured %{y:,.1f} MiB<br>"
                                        "error %{customdata:+.2f} %<extra></extra>"})
    ticks = _log_ticks(low, high)
    scale = {"type": "log", "tickvals": ticks, "ticktext": [f"{t:,g}" for t in ticks]} if log else {}
    return {"data": traces, "layout": _layout(
        "Measured allocator peak against the plan's prediction", xaxis=_axis("predicted (MiB)", **scale),
        yaxis=_axis("measured (MiB)", **scale))}


def lr_sensitivity(points: pd.DataFrame, line_names: list[str]) -> Figure | None:
    """Validation accuracy against learning rate (log axis), one line per technique (`line_names`: one per row of
    `points`, `bench.report.tuned.lr_points`), the chosen rate a star."""
    if points.empty:
        return None
    traces = []
    for name, rows in points.assign(line=line_names).groupby("line", sort=False):
        technique, chosen = str(rows["technique"].iloc[0]), rows["chosen"].tolist()
        traces.append({"type": "scatter", "mode": "lines+markers", "name": text(name), "x": numbers(rows["lr"]),
                       "y": numbers(rows["accuracy"], 100), "customdata": numbers(rows["n"]),
                       "line": {"color": color(technique)},
                       "marker": {"color": color(technique), "size": [15 if c else 7 for c in chosen],
                                  "symbol": ["star" if c else "circle" for c in chosen],
                                  "line": {"width": 1, "color": "#333"}},
                       "hovertemplate": "lr %{x:.3g}<br>val accuracy %{y:.2f} %<br>runs %{customdata}"
                                        "<extra>%{fullData.name}</extra>"})
    rates = sorted(set(points["lr"]))
    xaxis = _axis("learning rate (trainer.lr)", type="log", tickvals=rates, ticktext=[f"{r:g}" for r in rates])
    return {"data": traces, "layout": _layout("Validation accuracy against learning rate (★ the rate chosen)",
                                              xaxis=xaxis, yaxis=_axis("val accuracy (%, eval/accuracy)"))}


def _thin(frame: pd.DataFrame) -> pd.DataFrame:
    """At most MAX_POINTS rows, evenly spaced, the last one kept."""
    if len(frame) <= MAX_POINTS:
        return frame
    step = math.ceil(len(frame) / MAX_POINTS)
    return pd.concat([frame.iloc[::step], frame.iloc[[-1]]]).drop_duplicates()


def loss_curves(histories: dict[str, pd.DataFrame], runs: pd.DataFrame) -> Figure | None:
    """`train/loss` per optimizer step, one line per run, coloured by technique."""
    if not histories:
        return None
    by_id = runs.set_index("run_id")
    traces, shown = [], set()
    for run_id, history in histories.items():
        run, points = by_id.loc[run_id], _thin(history)
        technique = str(run["technique"])
        traces.append({"type": "scatter", "mode": "lines", "name": text(technique), "legendgroup": text(technique),
                       "showlegend": technique not in shown, "opacity": 0.75,
                       "line": {"color": color(technique), "width": 1.2},
                       "x": numbers(points["step"]), "y": numbers(points["value"]), "meta": text(run["run_name"]),
                       "hovertemplate": "%{meta}<br>step %{x}<br>loss %{y:.4f}<extra></extra>"})
        shown.add(technique)
    return {"data": traces, "layout": _layout("Training loss", xaxis=_axis("optimizer step"),
                                              yaxis=_axis("train/loss"))}


def memory_timeline(title: str, frame: pd.DataFrame) -> Figure:
    """Every numeric column of a monitor timeline over time: bytes in MiB on the left axis, percentages on the
    right; anything else (watts, joules, ...) on the right too but hidden until its legend entry is clicked."""
    x_name = next((c for c in ("time_s", "step") if c in frame), None)
    points = _thin(frame)
    x = numbers(points[x_name]) if x_name else list(range(len(points)))
    traces = []
    for index, column in enumerate(c for c in points.columns if c not in ("time_s", "step")):
        in_bytes, percent = "bytes" in column, column.endswith(("_pct", "_percent"))
        traces.append({"type": "scatter", "mode": "lines", "name": text(column), "x": x,
                       "y": numbers(points[column], 1 / MIB if in_bytes else 1), "yaxis": "y" if in_bytes else "y2",
                       "visible": True if in_bytes or percent else "legendonly",
                       "line": {"color": PALETTE[index % len(PALETTE)], "dash": "solid" if in_bytes else "dot"}})
    layout = _layout(title, xaxis=_axis(x_name or "sample"), yaxis=_axis("MiB"),
                     yaxis2=_axis("% (others: click the legend)", overlaying="y", side="right", showgrid=False))
    return {"data": traces, "layout": layout}
