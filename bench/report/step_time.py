"""Where the time goes: the step time of each profiled configuration split by category (`prof/<category>_ms`,
logged by runs with `monitor.profile=true`), a stacked bar per configuration, and for each technique beside the
one it modifies a sentence naming what costs the difference. Pure pandas and plotly dicts, like the rest of the
report; the categories come from `bench.measure.profile.categories` (no torch there)."""

from __future__ import annotations

import pandas as pd

from bench.core.metrics import logged_as
from bench.measure.profile.categories import CATEGORIES
from bench.report import plots, render
from bench.report.formats import count, decimal
from bench.report.logged import column, hint
from bench.report.render import Column, Section, empty
from bench.techniques import TECHNIQUES

METRICS = {"prof_step_ms": column("prof/step_ms"),
           **{f"prof_{name}_ms": column(logged_as("prof/{category}_ms", category=name)) for name in CATEGORIES}}
# Who each technique is held against (its module's `compared_with`): the variants' parents, QLoRA against LoRA and
# LoRA against full fine-tuning (the questions users ask: why is QLoRA slower than LoRA, why is LoRA not much faster
# than full).
AGAINST = {name: item.compared_with for name, item in TECHNIQUES.items() if item.compared_with}
SHORT = {"base_matmul": "the base model's matmuls", "dequant": "4-bit dequantization",
         "adapter": "the adapter's own work", "attention": "attention", "optimizer": "the optimizer step",
         "data_host": "data and host work", "other": "the rest"}
TITLES = {"base_matmul": "matmuls", "dequant": "dequant", "adapter": "adapter", "attention": "attention",
          "optimizer": "optimizer", "data_host": "data/host", "other": "rest"}
COLORS = dict(zip(CATEGORIES, ("#1f77b4", "#d62728", "#ff7f0e", "#9467bd", "#2ca02c", "#8c564b", "#7f7f7f"),
                  strict=True))
MATCH = ["dataset", "model", "device", "fair_id", "stage"]  # and, between two adapters, rank and targets


def profiled(table: pd.DataFrame) -> pd.DataFrame:
    """The headline's configurations with a profile, in the headline's order."""
    if "prof_step_ms" not in table:
        return table.iloc[:0]
    return table[table["prof_step_ms"].notna()].reset_index(drop=True)


def sentences(rows: pd.DataFrame) -> list[str]:
    """One sentence per profiled configuration whose reference (`AGAINST`) was profiled too, on the same data set,
    model and device (and, adapter against adapter, rank and targets): the step-time difference and the categories
    that make most of it."""
    found = []
    for _, row in rows.iterrows():
        parent = _reference(rows, row)
        if parent is not None:
            found.append(_sentence(row, parent))
    return found


def _reference(rows: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    against = AGAINST.get(row["technique"])
    if against is None:
        return None
    keys = MATCH + (["r", "target_modules"] if TECHNIQUES[against].uses_adapter else [])
    same = rows["technique"] == against
    for key in keys:
        same &= (rows[key] == row[key]) | (rows[key].isna() & pd.isna(row[key]))
    candidates = rows[same]
    if candidates.empty:
        return None
    return candidates.sort_values("accuracy_mean", ascending=False, na_position="last").iloc[0]


def _sentence(row: pd.Series, parent: pd.Series) -> str:
    difference = row["prof_step_ms"] - parent["prof_step_ms"]
    changes = {name: row[f"prof_{name}_ms"] - parent[f"prof_{name}_ms"] for name in CATEGORIES}
    same_way = sorted((name for name, change in changes.items() if change * difference > 0),
                      key=lambda name: -abs(changes[name]))
    named = [f"{_signed(changes[name])} ms in {SHORT[name]}" for name in same_way[:2]
             if abs(changes[name]) >= 0.1 * abs(difference)]
    more = "more" if difference > 0 else "less"
    where = f": {', '.join(named)}" if named else ""
    return (f"{row['label']} takes {abs(difference):.1f} ms {more} per step than {parent['label']} "
            f"({parent['prof_step_ms']:.1f} → {row['prof_step_ms']:.1f} ms){where}.")


def _signed(value: float) -> str:
    return f"{value:+.1f}".replace("-", "−")  # a minus sign, not a hyphen


def bars(rows: pd.DataFrame) -> plots.Figure | None:
    """One stacked horizontal bar per configuration: milliseconds per step in each category."""
    if rows.empty:
        return None
    labels = [plots.text(label) for label in rows["label"]]
    traces = [{"type": "bar", "orientation": "h", "name": CATEGORIES[name], "y": labels,
               "x": plots.numbers(rows[f"prof_{name}_ms"]), "marker": {"color": COLORS[name]},
               "customdata": plots.numbers(100 * rows[f"prof_{name}_ms"] / rows["prof_step_ms"]),
               "hovertemplate": f"%{{y}}<br>{SHORT[name]} %{{x:,.1f}} ms (%{{customdata:.0f}} % of the step)"
                                "<extra></extra>"}
              for name in CATEGORIES if rows[f"prof_{name}_ms"].fillna(0).gt(0).any()]
    layout = {"title": {"text": "Where a training step's time goes (ms per step, mean over profiled runs)"},
              "barmode": "stack", "height": max(460, 150 + 26 * len(rows)), "margin": {"l": 10, "r": 10, "t": 50},
              "xaxis": {"title": {"text": "milliseconds per optimizer step"}, "rangemode": "tozero"},
              "yaxis": {"type": "category", "autorange": "reversed", "automargin": True},
              "legend": {"orientation": "v", "traceorder": "normal"}}
    return {"data": traces, "layout": layout}


def columns() -> list[Column]:
    return [Column("configuration", "label"), Column("n", "n", count, True, "runs (seeds) averaged"),
            Column("step ms", "prof_step_ms", decimal, True, hint("prof/step_ms"), keep=True),
            *[Column(f"{TITLES[name]} ms", f"prof_{name}_ms", decimal, True, f"prof/{name}_ms: {label}")
              for name, label in CATEGORIES.items()]]


INTRO = ("Runs with `monitor.profile=true` (e.g. `bench run experiment=profile-minilm`) profile a few optimizer "
         "steps after warm-up with torch's profiler (after one more step the profiler warms up on, left out, as are "
         "steps the tensor accounting watched); those steps stay out of every throughput figure. Each "
         "step's time is split by what ran: the base model's matmuls (its linear layers, a LoRA layer's base_layer), "
         "4-bit dequantization (bitsandbytes' dequantize ops, HQQ's dequantize), the adapter's own work (LoRA's A "
         "and B and scaling, DoRA's weight norm, S²-Attn's shift), attention (scores, softmax, weighted sum; its "
         "projections are matmuls), the optimizer step (clipping included), data and host work (loading, copying, "
         "Python between ops) and the rest (embeddings, norms, activations, loss). Backward time is charged to the "
         "forward op that caused it. On CPU the figures are host time; on CUDA kernel time, with the GPU's idle "
         "time as host work. Milliseconds per step, means over the profiled runs; each run's trace is its artifact "
         "monitor/profile/trace.json.gz (open it in ui.perfetto.dev).")


def section(table: pd.DataFrame) -> Section:
    rows = profiled(table)
    if rows.empty:
        return Section("time", "Where the time goes", INTRO,
                       empty("No run was profiled: add monitor.profile=true to a run or a sweep."))
    said = "".join(f"<li>{render.esc(line)}</li>" for line in sentences(rows))
    body = (plots.figure_html("plot-time", bars(rows)) + (f'<ul class="note">{said}</ul>' if said else "")
            + render.table_html(rows, columns(), "time-table"))
    return Section("time", "Where the time goes", INTRO, body)


def markdown(table: pd.DataFrame) -> str:
    """summary.md's part: the table and the sentences, or nothing without a profiled run."""
    rows = profiled(table)
    if rows.empty:
        return ""
    said = "".join(f"\n- {line}" for line in sentences(rows))
    return (f"\n\n## Where the time goes\n\nMilliseconds per profiled optimizer step, by category; means over "
            f"the profiled runs.\n\n{render.markdown_table(rows, columns())}\n{said}")
