"""HTML and Markdown from the analysed frames. Every value from MLflow goes through `esc` (or plots.to_json),
so a run name or param such as `<script>` shows as text; markup comes only from the literals in this file."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pandas as pd

from bench.report import memory
from bench.report.formats import count, decimal, mib, percent, plain, points, ratio, seconds, size, when


def esc(value: Any) -> str:
    """HTML-escaped text (quotes too, so it is safe inside attributes); blank for missing values."""
    return "" if _missing(value) else html.escape(str(value), quote=True)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Column:
    """A table column: its header, the frame column it shows, and how the value reads."""

    title: str
    field: str
    format: Callable[[Any], str] = plain
    numeric: bool = False
    hint: str = ""
    keep: bool = False  # shown even when every value is blank (a blank says something there)


def table_html(frame: pd.DataFrame, columns: list[Column], table_id: str, *,
               row_classes: list[str] | None = None) -> str:
    """A sortable table with a filter box; numeric cells carry their exact value in data-v. Columns with no
    value in any row are left out."""
    columns = shown_columns(frame, columns)
    head = "".join(f'<th title="{esc(c.hint)}">{esc(c.title)}</th>' for c in columns)
    by_column = [_cells(frame, c) for c in columns]  # column-wise: a thousand-run table stays fast
    classes = row_classes or [""] * len(frame)
    rows = "".join((f'<tr class="{esc(css)}">' if css else "<tr>") + "".join(cells) + "</tr>"
                   for css, *cells in zip(classes, *by_column, strict=True))
    return (f'<div class="filter"><input type="search" placeholder="filter rows…" data-table="{esc(table_id)}" '
            f'aria-label="filter rows"><span></span></div>'
            f'<div class="scroll"><table id="{esc(table_id)}" class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def shown_columns(frame: pd.DataFrame, columns: list[Column]) -> list[Column]:
    """The columns with a value in some row (or marked `keep`): no empty column for an unmeasured metric."""
    def has_values(column: Column) -> bool:
        values = frame[column.field] if column.field in frame else pd.Series(dtype=object)
        return bool((values.notna() & (values.astype(str) != "")).any())

    return [c for c in columns if c.keep or has_values(c)]


def _values(frame: pd.DataFrame, field: str) -> list[Any]:
    return frame[field].tolist() if field in frame else [None] * len(frame)


def _cells(frame: pd.DataFrame, column: Column) -> list[str]:
    """One column's <td> elements."""
    if column.field == "accuracy_ci95":
        parts = ("accuracy_ci95", "accuracy_low", "accuracy_high", "n")
        return [_ci_cell(*values) for values in zip(*(_values(frame, p) for p in parts), strict=True)]
    if column.field == "delta_low":
        return [_delta_cell(low, high) for low, high in zip(_values(frame, "delta_low"), _values(frame, "delta_high"),
                                                           strict=True)]
    css = ' class="error"' if column.field == "error" else ""
    cells = []
    for value in _values(frame, column.field):
        if _missing(value):
            cells.append('<td class="num" data-v=""></td>' if column.numeric else "<td></td>")
        elif column.numeric:
            cells.append(f'<td class="num" data-v="{float(value)!r}">{esc(column.format(value))}</td>')
        else:
            cells.append(f"<td{css}>{esc(column.format(value))}</td>")
    return cells


def _ci_cell(half: float, low: float, high: float, n: int) -> str:
    """`± 1.23 [84.10, 86.56]`, or says that one run has no interval."""
    if _missing(half):
        return f'<td class="num muted" data-v="">no interval (n={esc(n)})</td>'
    return (f'<td class="num" data-v="{float(half)!r}" data-low="{float(low)!r}" data-high="{float(high)!r}">'
            f"{esc(ci_text(half, low, high, n))}</td>")


def _delta_cell(low: float, high: float) -> str:
    if _missing(low):
        return '<td class="num muted" data-v="">no interval</td>'
    return f'<td class="num" data-v="{float(low)!r}">{esc(delta_text(low, high))}</td>'


def delta_text(low: float, high: float) -> str:
    """`[-1.20, +3.40] pp`, with a word when the interval excludes zero."""
    if _missing(low):
        return "no interval"
    verdict = " (better)" if low > 0 else " (worse)" if high < 0 else ""
    return f"[{low * 100:+.2f}, {high * 100:+.2f}] pp{verdict}"


def ci_text(half: float, low: float, high: float, n: int) -> str:
    """The interval as the tables write it."""
    return f"n={n}, no interval" if _missing(half) else f"± {percent(half)} [{percent(low)}, {percent(high)}]"


# What each memory figure is, for the column hints: one name per figure, none standing in for another.
TENSOR_PEAK = ("mem/tensor_peak_bytes: the most bytes of live tensors at any moment of training, on the training "
               "device (weights, gradients, optimizer state, activations, temporaries); blank where not logged")
MEMORY_COLUMNS = [
    Column("eval tensor peak", "eval_tensor_peak_bytes", size, True,
           "mem/eval_tensor_peak_bytes: the most bytes of live tensors at any moment of evaluation"),
    Column("net RSS", "peak_rss_net_bytes", size, True, "mem/peak_rss_net_bytes: the process's peak resident memory "
           "minus its RSS just before the model loaded (allocator caches and libraries' buffers included)"),
    Column("peak allocated", "peak_allocated_bytes", size, True,
           "mem/peak_allocated_bytes: CUDA, the most bytes torch's caching allocator had handed out to tensors"),
    Column("peak reserved", "peak_reserved_bytes", size, True,
           "mem/peak_reserved_bytes: CUDA, the most bytes torch's caching allocator held (allocated plus its cache)"),
    Column("NVML process", "peak_nvml_process_bytes", size, True, "mem/peak_nvml_process_bytes: CUDA, this "
           "process's GPU memory as nvidia-smi shows it (CUDA context and memory torch does not see included)")]
BITS_COLUMNS = [
    Column("bits/weight (quantized)", "weight_bits_per_param", decimal, True, "mem/weight_bits_per_param: bits "
           "per weight of the base's quantized linear layers (packed data and quantization state) for 4-bit "
           "techniques, of its linear layers for 16-bit ones; embeddings, head and adapters not counted"),
    Column("bits/param (model)", "model_bits_per_param", decimal, True, "mem/model_bits_per_param: bits per "
           "parameter of the whole model as held, embeddings, head and adapters included")]


def _scope(*, several_datasets: bool, several_devices: bool) -> list[Column]:
    """The data set and device columns, shown only when the report spans several."""
    columns = [Column("data set", "dataset")] if several_datasets else []
    return columns + ([Column("device", "device", hint="hw/gpu on CUDA, else the device type (hw/device)")]
                      if several_devices else [])


def headline_columns(*, several_datasets: bool, several_devices: bool = False) -> list[Column]:
    """The headline's columns (those no configuration has a value for are left out when shown)."""
    return _scope(several_datasets=several_datasets, several_devices=several_devices) + [
        Column("model", "model"), Column("technique", "technique"), Column("r", "r", plain, True),
        Column("targets", "target_modules"),
        Column("config", "config", hint="params that differ besides rank and targets"),
        Column("n", "n", count, True, "finished runs (seeds) averaged", keep=True),
        Column("accuracy %", "accuracy_mean", percent, True, "mean eval/accuracy over seeds", keep=True),
        Column("95 % CI", "accuracy_ci95", percent, True, "Student t over seeds: ± half-width [low, high]", keep=True),
        Column("tensor peak", "tensor_peak_bytes", size, True, TENSOR_PEAK, keep=True), *MEMORY_COLUMNS,
        Column("tokens/s", "tokens_per_s", count, True, "train/tokens_per_s"),
        Column("train time", "train_time_s", seconds, True, "train/time_s"),
        Column("trainable", "trainable_params", count, True, "params/trainable"),
        Column("trainable %", "trainable_pct", decimal, True, "params/trainable_pct"),
        Column("adapter size", "adapter_bytes", size, True, "artifact/adapter_bytes: what you would ship"),
        *BITS_COLUMNS, Column("energy", "energy_j", lambda v: f"{v:,.0f} J", True, "gpu/energy_j"),
        Column("Δ accuracy", "delta_accuracy", points, True, "against full fine-tuning of the same model on the same "
               "device", keep=True),
        Column("memory ×", "memory_ratio", ratio, True, "tensor peak / full FT's on the same device", keep=True),
        Column("speed ×", "speed_ratio", ratio, True, "tokens/s / full FT's", keep=True),
        Column("size ×", "size_ratio", ratio, True, "adapter size / full FT's weights", keep=True)]


def variant_columns(*, several_datasets: bool, several_devices: bool = False) -> list[Column]:
    """Columns of the variants-against-parent table."""
    return _scope(several_datasets=several_datasets, several_devices=several_devices) + [
        Column("variant", "label"), Column("parent", "parent_label"),
        Column("n", "n", count, True, "variant runs (seeds)", keep=True),
        Column("accuracy %", "accuracy_mean", percent, True, "variant's mean eval/accuracy", keep=True),
        Column("parent accuracy %", "parent_accuracy_mean", percent, True, "parent's mean eval/accuracy", keep=True),
        Column("Δ accuracy", "delta_parent", points, True, "variant − parent", keep=True),
        Column("Δ 95 % CI", "delta_low", numeric=True, keep=True,  # written with delta_high by `_delta_cell`
               hint="Welch interval of the difference over seeds; blank with fewer than two runs a side"),
        Column("memory ×", "parent_memory_ratio", ratio, True, "tensor peak / parent's"),
        Column("speed ×", "parent_speed_ratio", ratio, True, "tokens/s / parent's"),
        Column("size ×", "parent_size_ratio", ratio, True, "adapter size / parent's"),
        Column("bits/weight (quantized)", "weight_bits_per_param", decimal, True,
               "mem/weight_bits_per_param of the variant: its base's quantized (or, at 16 bits, linear) layers"),
        Column("parent bits/weight", "parent_weight_bits_per_param", decimal, True, "the same, of the parent")]


def run_columns(*, several_datasets: bool, several_devices: bool = False) -> list[Column]:
    """Columns of the all-runs table."""
    columns = [Column("run", "run_name"), Column("status", "status")]
    return columns + _scope(several_datasets=several_datasets, several_devices=several_devices) + [
        Column("model", "model"), Column("technique", "technique"), Column("r", "r", plain, True),
        Column("targets", "target_modules"), Column("config", "config"), Column("seed", "seed", plain, True),
        Column("accuracy %", "accuracy", percent, True), Column("tensor peak", "tensor_peak_bytes", size, True),
        Column("net RSS", "peak_rss_net_bytes", size, True),
        Column("tokens/s", "tokens_per_s", count, True), Column("train time", "train_time_s", seconds, True),
        Column("adapter size", "adapter_bytes", size, True), Column("started", "start_time", when),
        Column("note", "note"), Column("run id", "run_id")]


def breakdown_columns() -> list[Column]:
    """Columns of the memory-at-the-peak table: MiB per category (means over seeds), then where the peak fell. The
    configuration's label names its data set and device when the report spans several."""
    parts = [Column(f"{name} MiB", f"at_peak_{name}_bytes", mib, True, f"mem/at_peak/{name}_bytes: {hint}")
             for name, hint in memory.CATEGORIES.items()]
    return [
        Column("configuration", "label"), Column("n", "n", count, True, "runs (seeds) averaged"),
        Column("tensor peak MiB", "tensor_peak_bytes", mib, True, "mean mem/tensor_peak_bytes; the categories sum "
               "to it", keep=True),
        Column("phase", "peak_phase", hint="mem/peak_phase of the run named: forward, backward or optimizer"), *parts,
        Column("module", "peak_module", hint="mem/peak_module of the run named: the module running at the peak"),
        Column("run", "peak_run", hint="the run module and phase come from (its lowest seed)")]


FAILURE_COLUMNS = [Column("run", "run_name"), Column("status", "status"), Column("failure", "failure"),
                   Column("error", "error"), Column("model", "model"), Column("technique", "technique"),
                   Column("r", "r", plain, True), Column("targets", "target_modules"), Column("config", "config"),
                   Column("seed", "seed", plain, True), Column("started", "start_time", when),
                   Column("note", "note"), Column("run id", "run_id")]


@dataclass(frozen=True)
class Section:
    """One part of the page: an anchor, a heading, a sentence on how to read it, and its HTML."""

    anchor: str
    heading: str
    intro: str
    body: str


def empty(message: str) -> str:
    return f'<p class="empty">{esc(message)}</p>'


def definition_list(facts: list[tuple[str, str]]) -> str:
    return "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in facts)


def page(*, title: str, facts: list[tuple[str, str]], sections: list[Section], plotly_js: str) -> str:
    """The whole self-contained page: CSS, plotly.js, the sections, then the table script."""
    assets = resources.files("bench.report") / "assets"
    css, js = (assets / "report.css").read_text("utf-8"), (assets / "report.js").read_text("utf-8")
    nav = "".join(f'<a href="#{esc(s.anchor)}">{esc(s.heading)}</a>' for s in sections)
    body = "".join(f'<section id="{esc(s.anchor)}"><h2>{esc(s.heading)}</h2><p class="intro">{esc(s.intro)}</p>'
                   f"{s.body}</section>" for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
            f"<style>{css}</style><script>{_script_safe(plotly_js)}</script></head><body>"
            f'<header><h1>{esc(title)}</h1><dl class="facts">{definition_list(facts)}</dl></header>'
            f"<nav>{nav}</nav><main>{body}</main><script>{js}</script></body></html>\n")


def _script_safe(code: str) -> str:
    """Inline JS can't contain `</script`; plotly.js does not, but make sure."""
    return code.replace("</script", "<\\/script")


def markdown_table(frame: pd.DataFrame, columns: list[Column]) -> str:
    """A GitHub-flavoured Markdown table; `|` and line breaks in values are escaped."""
    def text(row: dict[str, Any], column: Column) -> str:
        if column.field == "accuracy_ci95":
            return ci_text(row["accuracy_ci95"], row["accuracy_low"], row["accuracy_high"], row["n"])
        if column.field == "delta_low":
            return delta_text(row["delta_low"], row["delta_high"])
        value = row.get(column.field)
        return "" if _missing(value) else column.format(value)

    columns = shown_columns(frame, columns)
    lines = ["| " + " | ".join(markdown_text(c.title) for c in columns) + " |",
             "|" + "|".join("---:" if c.numeric else "---" for c in columns) + "|"]
    lines += ["| " + " | ".join(markdown_text(text(row, c)) for c in columns) + " |"
              for row in frame.to_dict("records")]
    return "\n".join(lines)


def markdown_text(text: str) -> str:
    """Backslash-escape what Markdown would read as table syntax or raw HTML; line breaks become spaces."""
    for char in ("\\", "|", "<", ">", "`"):
        text = text.replace(char, "\\" + char)
    return " ".join(text.splitlines())
