"""The fair comparison's sections of the page and of summary.md: the tuned headline and the learning-rate curves
(`bench.report.tuned` computes them)."""

from __future__ import annotations

import pandas as pd

from bench.report import columns, plots, render, tuned
from bench.report.labels import several
from bench.report.render import Section

TUNED_INTRO = (
    "Each technique at its tuned learning rate: the rate of a log grid that did best on the validation split "
    "(eval/accuracy) in the tuning stage (fair/stage=tune, one seed), then rerun over seeds (fair/stage=final) and "
    "reported on the held-out test split (test/accuracy), which no choice looked at. Test accuracy: mean over seeds "
    "with a two-sided 95 % Student-t interval; validation accuracy beside it is what the rate was chosen on. Δ is the "
    "technique minus LoRA, or minus full fine-tuning, of the same comparison on test: runs that share a seed share "
    "a batch order, so it is the mean of per-seed differences with a paired t interval (n − 1 degrees of freedom); "
    "where the seeds do not match one to one the runs are independent samples and the interval is Welch's. Each "
    "interval cell says which it is.")
LR_INTRO = (
    "Validation accuracy (eval/accuracy) against the learning rate in the tuning stage (fair/stage=tune), one line "
    "per technique on a log axis; a star marks the rate chosen (fair/lr_chosen of its final runs, or before any "
    "final run the best on validation). A flat curve means the technique barely cares about its rate; a peak at "
    "the grid's edge means the grid should widen.")


def tuned_section(table: pd.DataFrame, runs: pd.DataFrame) -> Section | None:
    """The tuned headline, or None when no final run of a fair comparison finished."""
    rows = tuned.tuned_table(table, runs)
    if rows.empty:
        return None
    intro = " ".join(filter(None, [TUNED_INTRO, resolution_line(runs)]))
    return Section("tuned", "Tuned: each technique at its best learning rate", intro,
                   render.table_html(rows, columns.tuned_columns(**several(rows)), "tuned-table"))


def lr_section(runs: pd.DataFrame) -> Section | None:
    """The learning-rate curves, or None when no tuning run finished."""
    points = tuned.lr_points(runs)
    if points.empty:
        return None
    figure = plots.lr_sensitivity(points, line_names(points))
    return Section("lr", "Learning-rate sensitivity", LR_INTRO, plots.figure_html("plot-lr", figure))


def line_names(points: pd.DataFrame) -> list[str]:
    """The technique, after the comparison, data set, model or device only where the points span several."""
    varying = [c for c in tuned.SCOPE if points[c].nunique() > 1]
    return [" ".join([*(f"[{row[c]}]" for c in varying), row["technique"]]) for _, row in points.iterrows()]


def tuned_markdown(table: pd.DataFrame, runs: pd.DataFrame) -> str:
    """summary.md's tuned table with a line on how to read it, or "" when there is none."""
    rows = tuned.tuned_table(table, runs)
    if rows.empty:
        return ""
    return ("## Tuned: each technique at its best learning rate\n\nTest accuracy in %: mean over seeds ± the 95 % "
            "Student-t half-width [low, high]; the rate was chosen on validation. Δ on test against LoRA and full "
            f"fine-tuning: paired t over seeds where they match, Welch otherwise. {resolution_line(runs)}\n\n"
            f"{render.markdown_table(rows, columns.tuned_columns(**several(rows)))}\n\n")


def resolution_line(runs: pd.DataFrame) -> str:
    """One sentence: the resolution each technique's rate was chosen at (`tuned.resolutions`), or "" without one."""
    found = tuned.resolutions(runs)
    if found.empty:
        return ""
    several_ids = found["fair_id"].nunique() > 1
    parts = [f"{f'[{row.fair_id}] ' if several_ids else ''}{row.technique} "
             f"{'at an end of its rates' if pd.isna(row.resolution) else f'{row.resolution:.3g}x'}"
             for row in found.itertuples()]
    return ("Each rate was chosen at a resolution of " + ", ".join(parts) + ": the larger ratio between the chosen "
            "rate and a rate tried beside it (the rate best on validation lies within that factor, if its curve has "
            "one peak).")
