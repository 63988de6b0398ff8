"""One report: load runs from MLflow, analyse them, draw the plots, and write index.html, results.csv and
summary.md into one folder."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.report import (
    analyse,
    columns,
    fair_sections,
    load,
    memory,
    plots,
    prediction,
    render,
    step_time,
    tuned,
    variants,
)
from bench.report import report_hint as hint
from bench.report.deploy import Deployment, deploy_markdown, deploy_section, deployment
from bench.report.formats import when
from bench.report.render import Section, empty, esc

LOSS_RUNS_PER_CONFIG, LOSS_RUNS_MAX = 2, 40  # each curve costs a history query, so a big sweep is sampled
TIMELINE_RUNS_MAX = 12  # artifact listings are queries too: one run per configuration, this many at most


@dataclass(frozen=True)
class Built:
    """What was written, and how much went into it."""

    folder: Path
    runs: int
    finished: int
    configurations: int
    seconds: float


def default_folder(experiment: str | None, sweep_id: str | None) -> Path:
    """`reports/<sweep or experiment>/`, with characters a folder name should not have replaced."""
    name = sweep_id or experiment or load.DEFAULT_EXPERIMENT
    return Path("reports") / (re.sub(r"[^\w.-]+", "_", name).strip("._") or "report")


def build_report(*, uri: str, experiment: str | None, sweep_id: str | None, out: Path) -> Built:
    """Write the report of an experiment or a sweep into `out` and say what went into it."""
    started = time.perf_counter()
    raw = load.load_runs(uri, experiment=experiment, sweep_id=sweep_id)
    runs = analyse.tidy(raw)
    if runs.empty:
        raise load.StoreError("only a sweep's parent run so far: no cell of the sweep has started")
    # A fair comparison's tuning runs are a search for a rate, not results: only its curves show them.
    table = analyse.headline(runs[runs["stage"] != tuned.TUNE])
    loss_ids = analyse.pick_runs(runs, table, per_group=LOSS_RUNS_PER_CONFIG, cap=LOSS_RUNS_MAX)
    histories = load.metric_histories(uri, loss_ids, "train/loss")
    timelines = load.timelines(uri, analyse.pick_runs(runs, table, per_group=1, cap=TIMELINE_RUNS_MAX))
    title = f"bench report: {sweep_id or experiment or load.DEFAULT_EXPERIMENT}"
    facts = _facts(raw, runs, uri=uri, experiment=experiment, sweep_id=sweep_id)
    several = _several(runs)
    deployed = deployment(raw, runs)
    sections = _sections(raw, runs, table, several, histories=histories, timelines=timelines, deployed=deployed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.html").write_text(render.page(title=title, facts=facts, sections=sections,
                                                plotly_js=plots.plotly_js()), encoding="utf-8")
    analyse.results_table(raw, runs, table).to_csv(out / "results.csv", index=False)
    (out / "summary.md").write_text(_summary(title, facts, runs, table, several, deployed), encoding="utf-8")
    finished = int((runs["status"] == "FINISHED").sum())
    return Built(out, len(runs), finished, len(table), time.perf_counter() - started)


def _facts(raw: pd.DataFrame, runs: pd.DataFrame, *, uri: str, experiment: str | None,
           sweep_id: str | None) -> list[tuple[str, str]]:
    """The header line: what the report covers and where it came from."""
    statuses = runs["status"].value_counts()
    facts = [("experiment", experiment or ", ".join(sorted(set(raw["experiment_name"].dropna())))),
             ("sweep", sweep_id or ""), ("runs", ", ".join(f"{n} {s.lower()}" for s, n in statuses.items())),
             ("time range", _span(runs)), ("tracking", load.display_uri(uri)), ("command", hint(experiment, sweep_id)),
             ("generated", pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"))]
    return [(k, v) for k, v in facts if v]


def _several(runs: pd.DataFrame) -> dict[str, bool]:
    """Whether the report spans several data sets or devices: only then do tables show those columns."""
    return {"several_datasets": runs["dataset"].nunique() > 1, "several_devices": runs["device"].nunique() > 1}


def _sections(raw: pd.DataFrame, runs: pd.DataFrame, table: pd.DataFrame, several: dict[str, bool], *,
              histories: dict[str, pd.DataFrame], timelines: dict[str, pd.DataFrame],
              deployed: Deployment) -> list[Section]:
    headline = fair_sections.tuned_section(table, runs)
    fair = [s for s in (headline, fair_sections.lr_section(runs)) if s is not None]  # first, where there is one
    untuned = _headline_section(table, several, untuned=headline is not None)
    # Below a tuned headline, an untuned table with no rows would only say so: leave it out.
    return fair + ([untuned] if headline is None or (table["stage"] == "").any() else []) + [
        _variant_section(table, runs, several=several),
        deploy_section(deployed, several),
        _plot_section("pareto", "Accuracy vs memory", "Mean validation accuracy (eval/accuracy, 95 % CI bars) "
                      "against the mean training tensor peak; stars and a dashed step line (one per data set and "
                      "device) mark configurations no other on the same device beats on both.", plots.pareto(table),
                      "No configuration has both an accuracy and a training tensor peak (mem/tensor_peak_bytes)."),
        _breakdown_section(runs, table),
        step_time.section(table),
        _prediction_section(runs, table),
        _plot_section("rank", "Rank sweep", "Validation accuracy and training tensor peak against LoRA rank r, one "
                      "line per technique and target-module preset.", plots.rank_sweep(analyse.rank_lines(table)),
                      "Needs finished adapter runs at two ranks or more."),
        _target_section(table),
        _plot_section("loss", "Loss curves", f"train/loss per optimizer step, coloured by technique; up to "
                      f"{LOSS_RUNS_PER_CONFIG} seeds per configuration and {LOSS_RUNS_MAX} runs in all.",
                      plots.loss_curves(histories, runs), "No finished run logged train/loss."),
        Section("memory", "Memory timelines", "The resource monitor's timeline of one run per configuration "
                "(bytes in MiB on the left axis, other measurements on the right).",
                _timelines(runs, table, timelines)),
        Section("failures", "Failures", "Runs that did not finish: the failure kind (oom, nan, config, error) "
                "and the error message.", _failures(runs)),
        Section("runs", "All runs", "Every run in the report; click a header to sort, type to filter.",
                render.table_html(runs, columns.run_columns(**several), "runs-table")),
        Section("provenance", "Provenance", "Package versions, hardware, code version and sweep settings of "
                "the runs (with run counts where they differ), and when they ran.", _provenance(raw, runs)),
    ]


def _headline_section(table: pd.DataFrame, several: dict[str, bool], *, untuned: bool) -> Section:
    """The headline of the runs outside a fair comparison: each technique at its configured rate, so labelled
    `untuned` when a tuned headline stands above it."""
    rows = table[table["stage"] == ""]
    label = "Untuned: each technique at its configured learning rate (runs outside a fair comparison). " if untuned \
        else ""
    missing = ("No untuned run: every finished run belongs to the fair comparison above." if untuned
               else "No run finished with an eval/accuracy yet.")
    return Section("headline", "Headline (untuned)" if untuned else "Headline",
                   f"{label}One row per configuration (runs that differ only by seed, on one device). Accuracy on "
                   "the validation split (val, eval/accuracy) and, where runs logged it, on the test split (test, "
                   "test/accuracy): mean over seeds with a two-sided 95 % Student-t interval; a single run has no "
                   "interval. Other figures are means. Memory is the training tensor peak (live tensor bytes on the "
                   "training device; blank where a run did not log it); the process's own figures follow under their "
                   "own names. Δ and ratios compare with full fine-tuning of the same model on the same device (its "
                   "configuration best on validation if there are several) and are blank where there is none. A "
                   "green edge marks the Pareto frontier.",
                   render.table_html(rows, columns.headline_columns(**several, test=_has_test(rows)), "headline-table",
                                     row_classes=["frontier" if on else "" for on in rows["pareto"]])
                   if len(rows) else empty(missing))


def _plot_section(anchor: str, heading: str, intro: str, figure: plots.Figure | None, missing: str) -> Section:
    return Section(anchor, heading, intro, plots.figure_html(f"plot-{anchor}", figure) if figure else empty(missing))


def _variant_section(table: pd.DataFrame, runs: pd.DataFrame, *, several: dict[str, bool]) -> Section:
    rows = variants.variant_comparison(table, runs)
    body = (render.table_html(rows, columns.variant_columns(**several, test=_has_test(rows)), "variants-table")
            if len(rows)
            else empty(f"Needs a finished variant ({', '.join(variants.PARENT)}) and its parent "
                       f"({' or '.join(sorted(set(variants.PARENT.values())))}) at the same rank and targets, "
                       "on the same device."))
    return Section("variants", "Variants against their parent", "Each variant beside the technique it modifies "
                   f"({_parent_pairs()}) on the same model, device, rank and targets (tuned beside tuned); the "
                   "parent's configuration is the one best on validation. Δ is variant minus parent, on validation "
                   "and, where logged, on test; its 95 % interval is a paired t over per-seed differences where the "
                   "seeds match one to one (a shared seed is a shared batch order), Welch otherwise, as each cell "
                   "says; memory × compares training tensor peaks.",
                   body)


def _breakdown_section(runs: pd.DataFrame, table: pd.DataFrame) -> Section:
    rows = memory.breakdown(runs, table)
    figure = plots.memory_breakdown(rows)
    body = (plots.figure_html("plot-breakdown", figure)
            + render.table_html(rows, columns.breakdown_columns(), "breakdown-table") if figure
            else empty("No configuration logged its tensor peak by category (mem/at_peak/*)."))
    return Section("breakdown", "Memory at the peak", "What the live tensors were at the moment of the training "
                   "tensor peak, per configuration (means over seeds, MiB): parameters, buffers, gradients, optimizer "
                   "state, activations, temporaries (backward's scratch), other (the batch). Phase and module say "
                   "where the peak fell, from one run of the configuration (its lowest seed); hover a bar or read the "
                   "table.", body)


def _prediction_section(runs: pd.DataFrame, table: pd.DataFrame) -> Section:
    found = prediction.points(runs)
    figure = plots.prediction_scatter(prediction.allocator_points(found), runs, prediction.BAND)
    summary = f'<p class="note">{render.esc(prediction.summary(found))}</p>'
    body = (summary + (plots.figure_html("plot-prediction", figure) if figure else "")
            + render.table_html(prediction.errors(found, table), prediction.COLUMNS, "prediction-table")
            if not found.empty else empty("No finished run logged both a plan and what it predicts."))
    return Section("prediction", "Predicted against measured", "Each run's plan, made before its weights loaded "
                   "(the engine of `bench plan`) and again at the largest batch the run met, against what the run "
                   "measured, in MiB. The figure and the first columns are the allocator level, the check: the "
                   "plan's allocator peak (plan/met_allocator_peak_bytes) against the allocator's own "
                   "(mem/allocator_peak_bytes), an instrument that shares no code with the plan; one point per "
                   f"run, coloured by technique, with the line y = x and a ±{prediction.BAND * 100:g} % band. The "
                   "last column is the tensor level (plan/met_peak_bytes against mem/tensor_peak_bytes), a "
                   "consistency check only: the plan traces with the accounting that measures it. Errors are "
                   "(predicted − measured) / measured; runs without a plan are left out.", body)


def _parent_pairs() -> str:
    """`dora, rslora, ... against lora; loftq, qalora against qlora`, from the table of techniques."""
    parents = dict.fromkeys(variants.PARENT.values())
    return "; ".join(f"{', '.join(v for v, p in variants.PARENT.items() if p == parent)} against {parent}"
                     for parent in parents)


def _target_section(table: pd.DataFrame) -> Section:
    picked = analyse.target_slice(table)
    figure = plots.target_comparison(*picked) if picked else None
    return _plot_section("targets", "Target modules", "Validation accuracy (95 % CI bars) and trainable parameters "
                         "per target-module preset, at the rank where most presets were run.", figure,
                         "Needs finished adapter runs with two target-module presets at the same rank.")


def _timelines(runs: pd.DataFrame, table: pd.DataFrame, timelines: dict[str, pd.DataFrame]) -> str:
    if not timelines:
        return empty("No run has a monitor timeline artifact (a CSV whose name contains 'timeline').")
    labels = table.set_index("group")["label"]
    by_id = runs.set_index("run_id")
    titles = {run_id: f"{labels.get(by_id.at[run_id, 'group'], '')} · run {by_id.at[run_id, 'run_name']}"
              for run_id in timelines}
    return "".join(plots.figure_html(f"plot-timeline-{i}", plots.memory_timeline(titles[run_id], frame))
                   for i, (run_id, frame) in enumerate(timelines.items()))


def _failures(runs: pd.DataFrame) -> str:
    failed = analyse.failures(runs)
    if failed.empty:
        return empty("None: every run finished.")
    return render.table_html(failed, columns.FAILURE_COLUMNS, "failures-table")


def _span(runs: pd.DataFrame) -> str:
    start, end = analyse.time_range(runs)
    return f"{when(start)} → {when(end)}" if start is not None and end is not None else "unknown"


def _provenance(raw: pd.DataFrame, runs: pd.DataFrame) -> str:
    items = [("time range (first start → last end)", _span(runs)), *analyse.provenance(raw)]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return f'<div class="scroll"><table class="provenance"><tbody>{rows}</tbody></table></div>'


def _has_test(frame: pd.DataFrame) -> bool:
    """Whether some row logged test/accuracy: only then do tables add test columns beside validation."""
    return bool(len(frame) and frame["test_accuracy_mean"].notna().any())


def _summary(title: str, facts: list[tuple[str, str]], runs: pd.DataFrame, table: pd.DataFrame,
             several: dict[str, bool], deployed: Deployment) -> str:
    """summary.md: the tuned headline (when there is one), the headline, the variants, the memory at the peak and the
    deployment cost as Markdown tables."""
    tuned_part = fair_sections.tuned_markdown(table, runs)
    untuned = table[table["stage"] == ""]
    shown = [c for c in columns.headline_columns(**several, test=_has_test(untuned))
             if c.field not in ("trainable_pct", "weight_bits_per_param", "model_bits_per_param")]
    about = "\n".join(f"- {k}: {render.markdown_text(v)}" for k, v in facts)
    failed = analyse.failures(runs)
    tail = f"\n\n{len(failed)} run(s) did not finish; see index.html." if len(failed) else ""
    rows, parts = variants.variant_comparison(table, runs), memory.breakdown(runs, table)
    against = (f"\n\n## Variants against their parent\n\n"
               f"{render.markdown_table(rows, columns.variant_columns(**several, test=_has_test(rows)))}"
               if len(rows) else "")
    at_peak = (f"\n\n## Memory at the peak\n\nMiB per category at the training tensor peak, means over seeds; "
               f"phase and module from the run named.\n\n"
               f"{render.markdown_table(parts, columns.breakdown_columns())}" if len(parts) else "")
    heading = ("## Headline (untuned): each technique at its configured learning rate\n\n" if tuned_part
               else "## Headline\n\n")
    headline = (f"{heading}Accuracy in %: val is the validation split (eval/accuracy, what every choice is made on), "
                f"test the test split (test/accuracy); mean over seeds ± the 95 % Student-t half-width [low, high]. "
                f"Memory: the training tensor peak. Δ and ratios against full fine-tuning of the same model on the "
                f"same device.\n\n{render.markdown_table(untuned, shown)}"
                if len(untuned) or not tuned_part else "")
    serving = deploy_markdown(deployed, several)
    serving = f"\n\n{serving}" if serving else ""
    time = step_time.markdown(table)
    return (f"# {render.markdown_text(title)}\n\n{about}\n\n{tuned_part}{headline}{at_peak}{against}{time}{serving}"
            f"{tail}\n")
