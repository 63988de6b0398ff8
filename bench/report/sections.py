"""The page's sections below the recommendation and the checks, each a `Section`, or a `Missing` (its heading and
the command that would add it) when the runs have nothing to show there: the page lists those in one line near the
top instead of showing sections that only say what they would need."""

from __future__ import annotations

import pandas as pd

from bench.report import analyse, columns, memory, plots, prediction, render, step_time, variants
from bench.report.formats import when
from bench.report.render import Missing, Section, esc

LOSS_RUNS_PER_CONFIG, LOSS_RUNS_MAX = 2, 40  # each curve costs a history query, so a big sweep is sampled
TIMELINE_RUNS_MAX = 12  # artifact listings are queries too: one run per configuration, this many at most

Part = Section | Missing


def has_test(frame: pd.DataFrame) -> bool:
    """Whether some row logged test/accuracy: only then do tables add test columns beside validation."""
    return bool(len(frame) and frame["test_accuracy_mean"].notna().any())


def headline(table: pd.DataFrame, several: dict[str, bool], *, untuned: bool) -> Section | None:
    """The headline of the runs outside a fair comparison: each technique at its configured rate, so labelled
    `untuned` when a tuned headline stands above it; None when it has no row."""
    rows = table[table["stage"] == ""]
    if rows.empty:
        return None
    label = "Untuned: each technique at its configured learning rate (runs outside a fair comparison). " if untuned \
        else ""
    return Section("headline", "Headline (untuned)" if untuned else "Headline",
                   f"{label}One row per configuration (runs that differ only by seed, on one device). Accuracy on "
                   "the validation split (val, eval/accuracy) and, where runs logged it, on the test split (test, "
                   "test/accuracy), or for a causal LM scored by generation the exact match of its generated answers "
                   "(eval/exact_match, test/exact_match; the all-runs table's scoring column says which): mean over "
                   "seeds with a two-sided 95 % Student-t interval; a single run has no interval. Other figures are "
                   "means. Memory is the training tensor peak (live tensor bytes on the "
                   "training device; blank where a run did not log it); the process's own figures follow under their "
                   "own names. Δ and ratios compare with full fine-tuning of the same model on the same device (its "
                   "configuration best on validation if there are several) and are blank where there is none; the "
                   "speed ratio only where both were timed alone (timing). A green edge marks the Pareto frontier.",
                   render.table_html(rows, columns.headline_columns(**several, test=has_test(rows)), "headline-table",
                                     row_classes=["frontier" if on else "" for on in rows["pareto"]]))


def plot(anchor: str, heading: str, intro: str, figure: plots.Figure | None, command: str) -> Part:
    return Section(anchor, heading, intro, plots.figure_html(f"plot-{anchor}", figure)) if figure \
        else Missing(heading, command)


def variant_part(table: pd.DataFrame, runs: pd.DataFrame, *, several: dict[str, bool]) -> Part:
    rows = variants.variant_comparison(table, runs)
    if rows.empty:
        return Missing("Variants against their parent", "bench run experiment=variants-minilm")
    return Section("variants", "Variants against their parent", "Each variant beside the technique it modifies "
                   f"({_parent_pairs()}) on the same model, device, rank and targets (tuned beside tuned); the "
                   "parent's configuration is the one best on validation. Δ is variant minus parent, on validation "
                   "and, where logged, on test; its 95 % interval is a paired t over per-seed differences where the "
                   "seeds match one to one (a shared seed is a shared batch order), Welch otherwise, as each cell "
                   "says; memory × compares training tensor peaks, speed × only runs timed alone.",
                   render.table_html(rows, columns.variant_columns(**several, test=has_test(rows)), "variants-table"))


def _parent_pairs() -> str:
    """`dora, rslora, ... against lora; loftq, qalora against qlora`, from the table of techniques."""
    parents = dict.fromkeys(variants.PARENT.values())
    return "; ".join(f"{', '.join(v for v, p in variants.PARENT.items() if p == parent)} against {parent}"
                     for parent in parents)


def pareto(table: pd.DataFrame) -> Part:
    return plot("pareto", "Accuracy vs memory", "Mean validation accuracy (eval/accuracy, 95 % CI bars) against the "
                "mean training tensor peak; stars and a dashed step line (one per data set and device) mark "
                "configurations no other on the same device beats on both.", plots.pareto(table), "bench run")


def breakdown(runs: pd.DataFrame, table: pd.DataFrame) -> Part:
    rows = memory.breakdown(runs, table)
    figure = plots.memory_breakdown(rows)
    if not figure:
        return Missing("Memory at the peak", "bench run (runs log mem/at_peak/*)")
    return Section("breakdown", "Memory at the peak", "What the live tensors were at the moment of the training "
                   "tensor peak, per configuration (means over seeds, MiB): parameters, buffers, gradients, optimizer "
                   "state, activations, temporaries (backward's scratch), other (the batch). Phase and module say "
                   "where the peak fell, from one run of the configuration (its lowest seed); hover a bar or read the "
                   "table.", plots.figure_html("plot-breakdown", figure)
                   + render.table_html(rows, columns.breakdown_columns(), "breakdown-table"))


def time(table: pd.DataFrame) -> Part:
    return step_time.section(table) if not step_time.profiled(table).empty \
        else Missing("Where the time goes", "bench run experiment=profile-minilm")


def predicted(runs: pd.DataFrame, table: pd.DataFrame) -> Part:
    found = prediction.points(runs)
    if found.empty:
        return Missing("Predicted against measured", "bench run (each run logs its plan)")
    figure = plots.prediction_scatter(prediction.allocator_points(found), runs, prediction.BAND)
    body = (f'<p class="note">{render.esc(prediction.summary(found))}</p>'
            + (plots.figure_html("plot-prediction", figure) if figure else "")
            + render.table_html(prediction.errors(found, table), prediction.COLUMNS, "prediction-table"))
    return Section("prediction", "Predicted against measured", "Each run's plan, made before its weights loaded "
                   "(the engine of `bench plan`) and again at the largest batch the run met, against what the run "
                   "measured, in MiB. The figure and the first columns are the allocator level, the check: the "
                   "plan's allocator peak (plan/met_allocator_peak_bytes) against the allocator's own "
                   "(mem/allocator_peak_bytes), an instrument that shares no code with the plan; one point per "
                   f"run, coloured by technique, with the line y = x and a ±{prediction.BAND * 100:g} % band. The "
                   "last column is the tensor level (plan/met_peak_bytes against mem/tensor_peak_bytes), a "
                   "consistency check only: the plan traces with the accounting that measures it. Errors are "
                   "(predicted − measured) / measured; runs without a plan are left out.", body)


def rank(table: pd.DataFrame) -> Part:
    return plot("rank", "Rank sweep", "Validation accuracy and training tensor peak against LoRA rank r, one line per "
                "technique and target-module preset.", plots.rank_sweep(analyse.rank_lines(table)),
                "bench run sweep=ranks")


def targets(table: pd.DataFrame) -> Part:
    picked = analyse.target_slice(table)
    return plot("targets", "Target modules", "Validation accuracy (95 % CI bars) and trainable parameters per "
                "target-module preset, at the rank where most presets were run.",
                plots.target_comparison(*picked) if picked else None, "bench run sweep=targets")


def loss(histories: dict[str, pd.DataFrame], runs: pd.DataFrame) -> Part:
    return plot("loss", "Loss curves", f"train/loss per optimizer step, coloured by technique; up to "
                f"{LOSS_RUNS_PER_CONFIG} seeds per configuration and {LOSS_RUNS_MAX} runs in all.",
                plots.loss_curves(histories, runs), "bench run")


def timelines(runs: pd.DataFrame, table: pd.DataFrame, found: dict[str, pd.DataFrame]) -> Part:
    if not found:
        return Missing("Memory timelines", "bench run (monitor.enabled=true writes monitor/timeline.csv)")
    labels = table.set_index("group")["label"]
    by_id = runs.set_index("run_id")
    titles = {run_id: f"{labels.get(by_id.at[run_id, 'group'], '')} · run {by_id.at[run_id, 'run_name']}"
              for run_id in found}
    body = "".join(plots.figure_html(f"plot-timeline-{i}", plots.memory_timeline(titles[run_id], frame))
                   for i, (run_id, frame) in enumerate(found.items()))
    return Section("memory", "Memory timelines", "The resource monitor's timeline of one run per configuration "
                   "(bytes in MiB on the left axis, other measurements on the right).", body)


def failures(runs: pd.DataFrame) -> Section | None:
    """Runs that did not finish; None when every run finished (the header's run counts say so)."""
    failed = analyse.failures(runs)
    if failed.empty:
        return None
    return Section("failures", "Failures", "Runs that did not finish: the failure kind (oom, nan, config, error) "
                   "and the error message.", render.table_html(failed, columns.FAILURE_COLUMNS, "failures-table"))


def all_runs(runs: pd.DataFrame, several: dict[str, bool]) -> Section:
    return Section("runs", "All runs", "Every run in the report; click a header to sort, type to filter.",
                   render.table_html(runs, columns.run_columns(**several), "runs-table"))


def span(runs: pd.DataFrame) -> str:
    start, end = analyse.time_range(runs)
    return f"{when(start)} → {when(end)}" if start is not None and end is not None else "unknown"


def provenance(raw: pd.DataFrame, runs: pd.DataFrame) -> Section:
    items = [("time range (first start → last end)", span(runs)), *analyse.provenance(raw)]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return Section("provenance", "Provenance", "Package versions, hardware, code version and sweep settings of the "
                   "runs (with run counts where they differ), and when they ran.",
                   f'<div class="scroll"><table class="provenance"><tbody>{rows}</tbody></table></div>')
