"""The two sections a reader deciding on a technique starts with: what to pick for each memory budget
(`recommend`) and how these runs compare with published results (`known`), on the page and in summary.md."""

from __future__ import annotations

import pandas as pd

from bench.report import known, recommend, render, timing
from bench.report.render import Column, Section

PICK_INTRO = (
    "For each memory budget (the cards `bench plan` knows, or `bench report --budget 24GiB,80GiB`), the configuration "
    "most accurate on the validation split (eval/accuracy) among those that fit it; test accuracy is reported, never "
    "chosen on. A configuration fits by the memory its runs measured on that card (for a bare size, on any GPU): "
    "the NVML process peak, else peak reserved, else the allocator's peak, else the tensor peak; where its runs "
    "ran on another device, by the plan they logged (plan/*), and the sentence says so. A candidate whose difference "
    "from the most accurate one has a 95 % interval holding zero (paired over seeds where they match, Welch "
    "otherwise; with one seed, where their own intervals overlap) is indistinguishable from it, and the cheaper of "
    "those is recommended (time per 1,000 steps timed alone, else tokens/s, else memory), naming the figure that "
    "decided. What it gives up is against the best "
    "configuration overall on validation: Δ accuracy with its paired (or Welch) interval, memory and time ratios.")
KNOWN_INTRO = (
    "Published expectations these runs can test (bench/report/known.toml: a new one is a row there), with bench's "
    "figure and its interval. A verdict agrees when the interval meets the published range (expected), disagrees "
    "when it lies wholly outside it; not measured here when no run tests it (the cell names the command that "
    "would); out of scope on this device when the source measured on a GPU and these runs did not. Speed and "
    "time come only from runs timed alone; the learning-rate interval brackets each chosen rate by its grid "
    "neighbours.")
KNOWN_COLUMNS = [
    Column("expectation", "claim"), Column("verdict", "verdict", keep=True),
    Column("bench", "figure", keep=True), Column("95 % interval", "interval", keep=True),
    Column("published", "published"), Column("agrees within", "expected", hint="the published range bench checks"),
    Column("compared", "where", hint="the configurations bench's figure comes from"), Column("how", "how"),
    Column("source", "source", hint="where it was published")]


def picks(table: pd.DataFrame, runs: pd.DataFrame, *, budgets: list[recommend.Budget],
          price_per_hour: float | None) -> list[recommend.Pick]:
    """The recommendations, one per data set and budget."""
    return recommend.recommend(table, runs, budgets, price_per_hour=price_per_hour)


def _prefixed(found: list[recommend.Pick]) -> list[str]:
    several = len({p.dataset for p in found}) > 1
    return [f"[{p.dataset}] {p.sentence}" if several else p.sentence for p in found]


def pick_section(found: list[recommend.Pick], table: pd.DataFrame) -> Section | None:
    """What to pick, one sentence per budget, and what the speed figures rest on; None without a configuration."""
    if not found:
        return None
    items = "".join(f"<li>{_item(pick, line)}</li>" for pick, line in zip(found, _prefixed(found), strict=True))
    note = f'<p class="note">{render.esc(timing.note(table))}</p>'
    return Section("pick", "What to pick", PICK_INTRO, f'<ul class="picks">{items}</ul>{note}')


def _item(pick: recommend.Pick, line: str) -> str:
    """A sentence with its budgets and the configuration it recommends in bold, the rest as text."""
    head, body = line[:len(line) - len(pick.body) - 2], pick.body
    label = str(pick.chosen["label"]) if pick.chosen is not None else ""
    named = (f"<strong>{render.esc(label)}</strong>{render.esc(body[len(label):])}"
             if label and body.startswith(label) else render.esc(body))
    return f"<strong>{render.esc(head)}</strong>: {named}"


def known_section(rows: pd.DataFrame) -> Section:
    """Known results, checked: one row per expectation and comparison."""
    return Section("known", "Known results, checked", KNOWN_INTRO,
                   render.table_html(rows, KNOWN_COLUMNS, "known-table"))


def markdown(found: list[recommend.Pick], rows: pd.DataFrame, table: pd.DataFrame) -> str:
    """summary.md's opening: the recommendation and the checks."""
    pick = ""
    if found:
        lines = "\n".join(f"- {render.markdown_text(line)}" for line in _prefixed(found))
        pick = (f"## What to pick\n\nPer memory budget, the configuration best on validation that fits it; test is "
                f"reported, never chosen on.\n\n{lines}\n\n{render.markdown_text(timing.note(table))}\n\n")
    checks = (f"## Known results, checked\n\nbench's figure against published expectations (bench/report/known.toml)."
              f"\n\n{render.markdown_table(rows, KNOWN_COLUMNS)}\n\n")
    return pick + checks


def check_rows(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The known-results table's rows."""
    return known.checks(table, runs)
