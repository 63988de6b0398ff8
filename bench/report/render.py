"""HTML and Markdown from the analysed frames. Every value from MLflow goes through `esc` (or plots.to_json),
so a run name or param such as `<script>` shows as text; markup comes only from the literals in this file."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import pandas as pd

from bench.report.formats import percent, plain


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
    kind: Literal["value", "ci", "delta"] = "value"  # an interval of a mean or of a difference: see `ci`, `delta`
    parts: tuple[str, ...] = ()  # the interval's other fields, in the order `_ci_cell` / `_delta_cell` take them


def ci(title: str, prefix: str, hint: str, *, keep: bool = False) -> Column:
    """The 95 % interval of a mean: `<prefix>_ci95` (half-width) with `_low`, `_high` and `_n`."""
    return Column(title, f"{prefix}_ci95", numeric=True, hint=hint, keep=keep, kind="ci",
                  parts=(f"{prefix}_low", f"{prefix}_high", f"{prefix}_n"))


def delta(title: str, prefix: str, hint: str, *, keep: bool = False) -> Column:
    """The 95 % interval of a difference: `<prefix>_low` with `_high` and `_method` (paired t or Welch)."""
    return Column(title, f"{prefix}_low", numeric=True, hint=hint, keep=keep, kind="delta",
                  parts=(f"{prefix}_high", f"{prefix}_method"))


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
    if column.kind != "value":
        cell = _ci_cell if column.kind == "ci" else _delta_cell
        fields = (column.field, *column.parts)
        return [cell(*values) for values in zip(*(_values(frame, f) for f in fields), strict=True)]
    css = ' class="error"' if column.field == "error" else ""
    blank, form, text = ('<td class="num" data-v=""></td>' if column.numeric else "<td></td>"), column.format, \
        html.escape  # a formatted value is a string: escaped as is, without `esc`'s check (a big table's cost)
    if column.numeric:
        return [blank if _missing(v) else f'<td class="num" data-v="{float(v)!r}">{text(form(v))}</td>'
                for v in _values(frame, column.field)]
    return [blank if _missing(v) else f"<td{css}>{text(str(form(v)))}</td>" for v in _values(frame, column.field)]


def _ci_cell(half: float, low: float, high: float, n: int) -> str:
    """`± 1.23 [84.10, 86.56]`, or says that one run has no interval."""
    if _missing(half):
        return f'<td class="num muted" data-v="">no interval (n={esc(n)})</td>'
    return (f'<td class="num" data-v="{float(half)!r}" data-low="{float(low)!r}" data-high="{float(high)!r}">'
            f"{esc(ci_text(half, low, high, n))}</td>")


def _delta_cell(low: float, high: float, method: str | None) -> str:
    if _missing(low):
        return f'<td class="num muted" data-v="">{esc(delta_text(low, high, method))}</td>'
    return (f'<td class="num" data-v="{float(low)!r}" data-high="{float(high)!r}">'
            f"{esc(delta_text(low, high, method))}</td>")


def delta_text(low: float, high: float, method: str | None) -> str:
    """`[-1.20, +3.40] pp · paired t, 3 seeds`, with a word when the interval excludes zero; how it was computed
    follows, so a reader knows whether the seeds were paired."""
    if method == "":  # nothing to compare with (no reference, or the row is the reference): a blank, like its Δ
        return ""
    how = "" if _missing(method) else f" · {method}"
    if _missing(low):
        return f"no interval{f' ({method})' if how else ''}"
    verdict = " (better)" if low > 0 else " (worse)" if high < 0 else ""
    return f"[{low * 100:+.2f}, {high * 100:+.2f}] pp{verdict}{how}"


def ci_text(half: float, low: float, high: float, n: int) -> str:
    """The interval as the tables write it."""
    return f"n={n}, no interval" if _missing(half) else f"± {percent(half)} [{percent(low)}, {percent(high)}]"


@dataclass(frozen=True)
class Section:
    """One part of the page: an anchor, a heading, a sentence on how to read it, and its HTML."""

    anchor: str
    heading: str
    intro: str
    body: str


@dataclass(frozen=True)
class Missing:
    """A section left out for want of runs: its heading and the command that would add it. The page lists them in one
    line near the top instead of showing sections that only say what they would need."""

    heading: str
    command: str


def missing_line(absent: list[Missing]) -> str:
    """`Not in this report: Rank sweep (bench run sweep=ranks); ...`, or "" when every section is there."""
    if not absent:
        return ""
    items = "; ".join(f"{esc(m.heading)} (<code>{esc(m.command)}</code>)" for m in absent)
    return (f'<p class="absent"><strong>Not in this report</strong> (no runs for it yet; the command that adds it): '
            f"{items}.</p>")


def empty(message: str) -> str:
    return f'<p class="empty">{esc(message)}</p>'


def definition_list(facts: list[tuple[str, str]]) -> str:
    return "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in facts)


def page(*, title: str, facts: list[tuple[str, str]], sections: list[Section], plotly_js: str,
         absent: list[Missing] | None = None) -> str:
    """The whole self-contained page: CSS, plotly.js, the sections, then the table script."""
    assets = resources.files("bench.report") / "assets"
    css, js = (assets / "report.css").read_text("utf-8"), (assets / "report.js").read_text("utf-8")
    nav = "".join(f'<a href="#{esc(s.anchor)}">{esc(s.heading)}</a>' for s in sections)
    body = "".join(f'<section id="{esc(s.anchor)}"><h2>{esc(s.heading)}</h2><p class="intro">{esc(s.intro)}</p>'
                   f"{s.body}</section>" for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
            f"<style>{css}</style><script>{_script_safe(plotly_js)}</script></head><body>"
            f'<header><h1>{esc(title)}</h1><dl class="facts">{definition_list(facts)}</dl>'
            f"{missing_line(absent or [])}</header>"
            f"<nav>{nav}</nav><main>{body}</main><script>{js}</script></body></html>\n")


def _script_safe(code: str) -> str:
    """Inline JS can't contain `</script`; plotly.js does not, but make sure."""
    return code.replace("</script", "<\\/script")


def markdown_table(frame: pd.DataFrame, columns: list[Column]) -> str:
    """A GitHub-flavoured Markdown table; `|` and line breaks in values are escaped."""
    def text(row: dict[str, Any], column: Column) -> str:
        if column.kind != "value":
            values = [row.get(f) for f in (column.field, *column.parts)]
            return ci_text(*values) if column.kind == "ci" else delta_text(*values)
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
