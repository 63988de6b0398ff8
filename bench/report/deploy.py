"""Deployment cost: what serving a trained model costs in each form it can be shipped in, from the
`deploy/<form>/<figure>` metrics a run logs after training (`bench.measure.deploy`). Pure pandas over the runs, like
`analyse`, with the section's figures and text; a run that measured nothing (`deploy.measure=false`, or older than
the measurement) adds no row.

Forms: `base` (the base model alone, speed only), `unmerged` (base + adapter as peft serves it), `merged16` (the
adapter merged into 16-bit weights), `merged4` (the merge quantized again to 4 bits), `full` (full fine-tuning's
checkpoint)."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from bench.report import analyse, columns, plots, render
from bench.report.columns import milliseconds, rate
from bench.report.deploy_plots import latency_bars, size_accuracy
from bench.report.labels import labels, several
from bench.report.logged import columns as logged_columns
from bench.report.render import Section, empty
from bench.report.tuned import TUNE

FORMS = ("base", "unmerged", "merged16", "merged4", "full")  # the table's order within a configuration
RUN_FIGURES = logged_columns({name: f"deploy/{name}" for name in ("latency_batch", "throughput_batch", "new_tokens",
                                                                  "max_abs_logit")})
NOTE_TAGS = ("tags.deploy/notes", "tags.deploy/error")  # how a run's forms were measured; why it measured none
UNBOUNDED = sys.float_info.max  # MLflow stores an interval's infinite end as the largest double
# Figures logged with a 95 % interval (`<figure>_low`, `_high`), and how the interval's bounds read.
INTERVALS: dict[str, Callable[[float], str]] = {
    "latency_p50_ms": milliseconds, "latency_p90_ms": milliseconds, "rows_per_s": rate, "ttft_ms": milliseconds,
    "gen_tokens_per_s": rate}
MERGED = ("merged16", "merged4")  # compared with the unmerged form in the sentences
_FORM_METRIC = re.compile(r"^metrics\.deploy/([^/]+)/([^/]+)$")
_ORDER = ["dataset", "device", "model", "fair_id", "stage", "_technique", "technique", "target_modules", "r", "config",
          "_form"]  # the headline's order of configurations, then the forms'

INTRO = (
    "What serving the trained model costs in each form it can be shipped in: base (the base model alone, no adapter: "
    "speed only), unmerged (the adapter on its base, as peft serves it; its size is the adapter alone, the base being "
    "shared), merged16 (the adapter merged into 16-bit weights), merged4 (that merge quantized again to 4 bits: NF4 "
    "for QLoRA and LoftQ; QA-LoRA's merge stays INT4) and full (full fine-tuning's checkpoint). One row per "
    "configuration and form; each figure is a mean over the seeds that measured the form (n), each interval the mean "
    "of the seeds' bounds (for one seed, its own: for p50 and p90 latency a distribution-free 95 % interval of the "
    "quantile). Accuracy is the form's on the test split; Δ is the form minus the unmerged form of the same run, max "
    "|logit diff| the largest distance of its logits from the unmerged model's (for the unmerged form and full "
    "fine-tuning's checkpoint, from the trained model in memory). Latency per request and rows/s at the batch "
    "the header names (@); causal LMs show time to first token and tokens/s instead.")


def measured(raw: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (counted run, form it measured): run_id, group, form, each `deploy/<form>/<figure>` as
    `<figure>`, and the run's batches. Counted: finished, not superseded, not a fair comparison's tuning run."""
    counted = _counted(runs)
    logged = raw.set_index("run_id").reindex(counted["run_id"])
    by_form: dict[str, dict[str, str]] = {}
    for column in logged.columns:
        if found := _FORM_METRIC.match(column):
            by_form.setdefault(found[1], {})[column] = found[2]
    shared = {column: name for name, column in RUN_FIGURES.items() if column in logged}
    parts = []
    for form, names in by_form.items():
        figures = logged[list(names)].rename(columns=names).apply(pd.to_numeric, errors="coerce").dropna(how="all")
        figures = figures.replace({UNBOUNDED: math.inf, -UNBOUNDED: -math.inf})
        parts.append(figures.assign(form=form).join(logged[list(shared)].rename(columns=shared)))
    if not parts:
        return pd.DataFrame(columns=["run_id", "group", "form"])
    found = pd.concat(parts).rename_axis("run_id").reset_index()
    return found.merge(counted[["run_id", "group"]], on="run_id")


def _counted(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs the table averages: finished, not superseded by a rerun, not a fair comparison's tuning run."""
    return runs[(runs["status"] == "FINISHED") & ~runs["superseded"] & (runs["stage"] != TUNE)]


@dataclass(frozen=True)
class Deployment:
    """What the section shows: the table's rows (`deploy_rows`) and a line per configuration whose runs noted how
    they measured (`deploy/notes`) or why they measured nothing (`deploy/error`)."""

    rows: pd.DataFrame
    notes: list[str]


def deployment(raw: pd.DataFrame, runs: pd.DataFrame) -> Deployment:
    """The rows and notes of the deployment section, computed once for the page and summary.md."""
    return Deployment(deploy_rows(raw, runs), run_notes(raw, runs))


def run_notes(raw: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """`<configuration>: <note>` for each distinct note its counted runs logged; for errors, how many runs measured
    nothing and the first message."""
    counted, found = _counted(runs), []
    tags = raw.set_index("run_id").reindex(index=counted["run_id"], columns=list(NOTE_TAGS))
    by_group = dict(list(counted.groupby("group", sort=False)))
    for group, label in _identity(runs)[["group", "label"]].itertuples(index=False):
        part = by_group.get(group)
        if part is None:
            continue
        notes, errors = (tags.loc[part["run_id"], tag].dropna() for tag in NOTE_TAGS)
        found += [f"{label}: {note}" for note in notes.unique()]
        if len(errors):
            found.append(f"{label}: deployment not measured in {len(errors)} of {len(part)} runs ({errors.iloc[0]})")
    return found


def deploy_rows(raw: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (configuration, form), configurations as the headline groups runs and in its order, forms in
    FORMS' order: the configuration's keys and label, n (runs that measured the form), the mean over those runs of
    every figure, and `<figure>_interval`, the mean bounds as text. Empty when no counted run measured anything."""
    found = measured(raw, runs)
    if found.empty:
        return pd.DataFrame()
    figures = [c for c in found.columns if c not in ("run_id", "group", "form")]
    grouped = found.groupby(["group", "form"], sort=False)
    rows = grouped[figures].mean().assign(n=grouped.size()).reset_index().merge(_identity(runs), on="group")
    for figure, form in INTERVALS.items():
        if f"{figure}_low" in rows and f"{figure}_high" in rows:
            rows[f"{figure}_interval"] = [_interval(low, high, form) for low, high in
                                          zip(rows[f"{figure}_low"], rows[f"{figure}_high"], strict=True)]
    return _sorted(rows)


def _identity(runs: pd.DataFrame) -> pd.DataFrame:
    """Each configuration's keys and its label, named as the headline names it, in its order."""
    first = runs.groupby("group", sort=False)[list(analyse.KEYS)].first().reset_index()
    return _sorted(first.assign(label=labels(first, **several(runs[runs["stage"] != TUNE]))))


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """In the headline's order of configurations, then in FORMS' order where the frame has a form per row."""
    techniques = analyse.TECHNIQUE_ORDER
    keys = {"_technique": frame["technique"].map(lambda t: techniques.get(t, len(techniques))),
            "_form": frame["form"].map(lambda f: FORMS.index(f) if f in FORMS else len(FORMS)) if "form" in frame
            else 0}
    ordered = frame.assign(**keys).sort_values(_ORDER, na_position="first", kind="stable")
    return ordered.drop(columns=list(keys)).reset_index(drop=True)


def _interval(low: float, high: float, form: Callable[[float], str]) -> str:
    """`[5.00, 5.52]`; an unbounded end (a rate whose timing interval reached zero) reads ∞."""
    def bound(value: float) -> str:
        return form(value) if math.isfinite(value) else ("∞" if value > 0 else "-∞")

    return "" if pd.isna(low) or pd.isna(high) else f"[{bound(low)}, {bound(high)}]"


def merge_sentences(rows: pd.DataFrame) -> list[str]:
    """Per configuration with a merged form, what each merge did against the unmerged model (means over seeds): the
    change in test accuracy in points, perplexity beside the unmerged one's, the largest logit difference."""
    sentences = []
    for _, part in rows.groupby("group", sort=False):
        forms, label = part.set_index("form"), part["label"].iloc[0]
        unmerged = forms.loc["unmerged"] if "unmerged" in forms.index else pd.Series(dtype=float)
        steps = [_change(forms.loc[form], unmerged, _merge_words(form, forms.index)) for form in MERGED
                 if form in forms.index]
        steps = [step for step in steps if step]
        if steps:
            sentences.append(f"{label}, against the unmerged model: {'; '.join(steps)}.")
    return sentences


def _merge_words(form: str, forms: pd.Index) -> str:
    """How a merged form was made: a 4-bit merge without a 16-bit one stayed in its 4-bit base (QA-LoRA)."""
    if form == "merged16":
        return "merged into 16 bits"
    return "merged and quantized again to 4 bits" if "merged16" in forms else "merged into its 4-bit base"


def _change(row: pd.Series, unmerged: pd.Series, words: str) -> str:
    """`merged into 16 bits, test accuracy +0.10 points, max |logit diff| 0.003`, with what the runs logged."""
    delta, logits = _value(row, "accuracy_delta"), _value(row, "max_abs_logit_diff")
    perplexity, before, scale = (_value(row, "perplexity"), _value(unmerged, "perplexity"),
                                 _value(row, "max_abs_logit"))
    parts = [f"test accuracy {delta * 100:+.2f} points" if delta is not None else "",
             f"perplexity {perplexity:.2f}" + (f" (unmerged {before:.2f})" if before is not None else "")
             if perplexity is not None and delta is None else "",
             f"max |logit diff| {logits:.3g}" + (f" (of logits up to {scale:.3g})" if scale is not None else "")
             if logits is not None else ""]
    parts = [part for part in parts if part]
    return f"{words}, {', '.join(parts)}" if parts else ""


def _value(row: pd.Series, field: str) -> float | None:
    value = row.get(field)
    return None if value is None or pd.isna(value) else float(value)


def _batch(rows: pd.DataFrame, field: str) -> float | None:
    """The batch every measured row shares, for the headers; None when it varies or was not logged."""
    values = rows[field].dropna().unique() if field in rows else []
    return float(values[0]) if len(values) == 1 else None


def _columns(rows: pd.DataFrame, spans: dict[str, bool]) -> list[render.Column]:
    return columns.deploy_columns(**spans, latency_batch=_batch(rows, "latency_batch"),
                                  throughput_batch=_batch(rows, "throughput_batch"))


def deploy_section(found: Deployment, spans: dict[str, bool]) -> Section:
    """The page's section: the merge sentences and runs' notes, the size-against-accuracy scatter, latency bars, the
    table. `spans`: whether the report covers several data sets or devices (their columns show only then)."""
    rows = found.rows
    notes = "".join(f'<p class="note">{render.esc(line)}</p>' for line in [*_sentences(rows), *found.notes])
    if rows.empty:
        return Section("deploy", "Deployment cost", INTRO, notes + empty(
            "No finished run logged deploy/* metrics (deploy.measure=false, or runs from before it was measured)."))
    figures = [("plot-deploy", size_accuracy(rows)),
               ("plot-deploy-latency", latency_bars(rows, "latency_p50_ms", "Latency p50 per form (95 % interval)")),
               ("plot-deploy-ttft", latency_bars(rows, "ttft_ms", "Time to first token per form (95 % interval)"))]
    drawn = "".join(plots.figure_html(div, figure) for div, figure in figures if figure)
    return Section("deploy", "Deployment cost", INTRO,
                   notes + drawn + render.table_html(rows, _columns(rows, spans), "deploy-table"))


def _sentences(rows: pd.DataFrame) -> list[str]:
    return merge_sentences(rows) if len(rows) else []


def deploy_markdown(found: Deployment, spans: dict[str, bool]) -> str:
    """summary.md's deployment table with how to read it, the merge sentences and the runs' notes; "" when there is
    neither a row nor a note."""
    lines = [f"- {render.markdown_text(line)}" for line in [*_sentences(found.rows), *found.notes]]
    if not lines and found.rows.empty:
        return ""
    parts = ["## Deployment cost", "Per configuration and form it can be shipped in (base, unmerged, merged16, "
             "merged4, full): means over seeds; accuracy on the test split, Δ against the unmerged form; intervals "
             "are the mean of each seed's 95 % bounds.", *(["\n".join(lines)] if lines else []),
             *([render.markdown_table(found.rows, _columns(found.rows, spans))] if len(found.rows) else [])]
    return "\n\n".join(parts)
