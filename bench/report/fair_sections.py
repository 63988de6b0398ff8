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
    return Section("tuned", "Tuned: each technique at its best learning rate", TUNED_INTRO,
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
            "fine-tuning: paired t over seeds where they match, Welch otherwise.\n\n"
            f"{render.markdown_table(rows, columns.tuned_columns(**several(rows)))}\n\n")
