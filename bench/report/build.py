"""One report: load runs from MLflow, analyse them, draw the plots, and write index.html, results.csv and
summary.md into one folder."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.report import advice, analyse, fair_sections, forgetting, load, plots, recommend, render, sections, tuned
from bench.report import report_hint as hint
from bench.report.deploy import Deployment, deploy_section, deployment
from bench.report.render import Missing, Section
from bench.report.sections import LOSS_RUNS_MAX, LOSS_RUNS_PER_CONFIG, TIMELINE_RUNS_MAX
from bench.report.summary import summary


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


def build_report(*, uri: str, experiment: str | None, sweep_id: str | None, out: Path,
                 budgets: list[recommend.Budget] | None = None, price_per_hour: float | None = None) -> Built:
    """Write the report of an experiment or a sweep into `out` and say what went into it. `budgets`: the memory
    budgets to recommend for (default: every card bench knows); `price_per_hour`: what an hour of the device costs."""
    started = time.perf_counter()
    raw = load.load_runs(uri, experiment=experiment, sweep_id=sweep_id)
    runs = analyse.tidy(raw)
    if runs.empty:
        raise load.StoreError("only a sweep's parent run so far: no cell of the sweep has started")
    # A fair comparison's tuning runs are a search for a rate, not results: only its curves show them.
    table = analyse.headline(runs[runs["stage"] != tuned.TUNE])
    loss_ids = analyse.pick_runs(runs, table, per_group=LOSS_RUNS_PER_CONFIG, cap=LOSS_RUNS_MAX)
    histories = load.metric_histories(uri, loss_ids, "train/loss")
    timelines = load.timelines(uri, analyse.pick_runs(runs, table, per_group=1, cap=TIMELINE_RUNS_MAX),
                               dict(zip(raw["run_id"], raw["artifact_uri"], strict=True)))
    title = f"bench report: {sweep_id or experiment or load.DEFAULT_EXPERIMENT}"
    facts = _facts(raw, runs, uri=uri, experiment=experiment, sweep_id=sweep_id)
    several = _several(runs)
    deployed = deployment(raw, runs)
    picks = advice.picks(table, runs, budgets=budgets or recommend.budgets(None), price_per_hour=price_per_hour)
    checks = advice.check_rows(table, runs)
    parts = _parts(raw, runs, table, several, histories=histories, timelines=timelines, deployed=deployed)
    shown = [p for p in [advice.pick_section(picks, table), advice.known_section(checks), *parts] if p is not None]
    page_sections = [p for p in shown if isinstance(p, Section)]
    absent = [p for p in shown if isinstance(p, Missing)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.html").write_text(render.page(title=title, facts=facts, sections=page_sections, absent=absent,
                                                plotly_js=plots.plotly_js()), encoding="utf-8")
    analyse.results_table(raw, runs, table).to_csv(out / "results.csv", index=False)
    written = summary(title, facts, runs, table, several, deployed, picks=picks, checks=checks, absent=absent)
    (out / "summary.md").write_text(written, encoding="utf-8")
    finished = int((runs["status"] == "FINISHED").sum())
    return Built(out, len(runs), finished, len(table), time.perf_counter() - started)


def _facts(raw: pd.DataFrame, runs: pd.DataFrame, *, uri: str, experiment: str | None,
           sweep_id: str | None) -> list[tuple[str, str]]:
    """The header line: what the report covers and where it came from."""
    statuses = runs["status"].value_counts()
    facts = [("experiment", experiment or ", ".join(sorted(set(raw["experiment_name"].dropna())))),
             ("sweep", sweep_id or ""), ("runs", ", ".join(f"{n} {s.lower()}" for s, n in statuses.items())),
             ("time range", sections.span(runs)), ("tracking", load.display_uri(uri)),
             ("command", hint(experiment, sweep_id)),
             ("generated", pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"))]
    return [(k, v) for k, v in facts if v]


def _several(runs: pd.DataFrame) -> dict[str, bool]:
    """Whether the report spans several data sets or devices: only then do tables show those columns."""
    return {"several_datasets": runs["dataset"].nunique() > 1, "several_devices": runs["device"].nunique() > 1}


def _parts(raw: pd.DataFrame, runs: pd.DataFrame, table: pd.DataFrame, several: dict[str, bool], *,
           histories: dict[str, pd.DataFrame], timelines: dict[str, pd.DataFrame],
           deployed: Deployment) -> list[Section | Missing | None]:
    """The page below the recommendation and the checks, top to bottom; None for a part with nothing to say."""
    tuned_headline = fair_sections.tuned_section(table, runs)
    fair = [tuned_headline, fair_sections.lr_section(runs)] if tuned_headline else [
        fair_sections.lr_section(runs) or Missing("Tuned: each technique at its best learning rate",
                                                  "bench run experiment=fair-minilm")]
    untuned = sections.headline(table, several, untuned=tuned_headline is not None)
    if untuned is None and tuned_headline is None:  # no run finished with a validation accuracy yet
        untuned = Missing("Headline", "bench run (no run has finished with eval/accuracy yet)")
    serving = (Missing("Deployment cost", "bench run (deploy.measure=true, the default)")
               if deployed.rows.empty and not deployed.notes else deploy_section(deployed, several))
    return [*fair, untuned, sections.variant_part(table, runs, several=several), serving, sections.pareto(table),
            forgetting.section(table) or Missing("Accuracy vs forgetting", "bench run experiment=smollm2-quick"),
            sections.breakdown(runs, table), sections.time(table), sections.predicted(runs, table),
            sections.rank(table), sections.targets(table), sections.loss(histories, runs),
            sections.timelines(runs, table, timelines), sections.failures(runs), sections.all_runs(runs, several),
            sections.provenance(raw, runs)]
