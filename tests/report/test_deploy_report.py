"""Deployment cost in the report: the table recomputed from deploy_store's ground truth (means over the counted
seeds, the merge deltas), causal and classifier columns apart, no row from a run that measured nothing, one scatter
point per configuration and form, the merge sentences' numbers, summary.md, and no table where nothing was measured."""

from __future__ import annotations

import html
import math
import re
import statistics
from pathlib import Path

import pytest
from deploy_store import (
    CAUSAL,
    CLASSIFIER,
    DEPLOY_EXPERIMENT,
    DEPLOYED,
    ERROR,
    FORMS,
    IN_MEMORY,
    LATENCY_BATCH,
    THROUGHPUT_BATCH,
    figures,
    run_level,
)
from report_expect import close, number, plot
from report_store import tables

from bench.report import analyse, load
from bench.report.deploy import deploy_markdown, deploy_section, deployment, measured
from bench.techniques import report_order

# Header → the figure it shows (deploy/<form>/<figure>), as the table names them with the batches every run shared.
SHOWN = {"size": "bytes", "load": "load_s", "test accuracy %": "accuracy", "Δ accuracy vs unmerged": "accuracy_delta",
         "max |logit diff|": "max_abs_logit_diff", "perplexity": "perplexity",
         f"p50 ms @{LATENCY_BATCH}": "latency_p50_ms", f"p90 ms @{LATENCY_BATCH}": "latency_p90_ms",
         f"rows/s @{THROUGHPUT_BATCH}": "rows_per_s", "TTFT ms": "ttft_ms", "gen tokens/s": "gen_tokens_per_s",
         "decode tokens/s": "decode_tokens_per_s"}
# Interval header → (figure, decimals its bounds are written with).
INTERVALS = {"p50 ms 95 % interval": ("latency_p50_ms", 2), "p90 ms 95 % interval": ("latency_p90_ms", 2),
             "rows/s 95 % interval": ("rows_per_s", 1), "TTFT ms 95 % interval": ("ttft_ms", 2),
             "gen tokens/s 95 % interval": ("gen_tokens_per_s", 1)}
CAUSAL_ONLY = {"perplexity", "TTFT ms", "gen tokens/s", "decode tokens/s"}
CLASSIFIER_ONLY = {f"p50 ms @{LATENCY_BATCH}", f"p90 ms @{LATENCY_BATCH}", f"rows/s @{THROUGHPUT_BATCH}"}


def _expected() -> dict[tuple[str, str, str], dict[str, float]]:
    """(model, technique, form) → n and the mean of each figure over the finished runs that measured the form
    (`max_abs_logit`: the runs' logit scale)."""
    logged: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    for run, forms in DEPLOYED:
        if run.status == "FINISHED":
            for form in forms:
                scale = run_level(run)["deploy/max_abs_logit"]
                logged.setdefault((run.model, run.technique, form), []).append(
                    {**figures(run, form), "max_abs_logit": scale})
    return {key: {"n": len(found), **{name: statistics.fmean(f[name] for f in found) for name in found[0]}}
            for key, found in logged.items()}


def _label(model: str, technique: str) -> str:
    return f"{model} {technique}" + ("" if technique == "full" else " r=8 qv")


def _rows(page: str) -> dict[tuple[str, str, str], dict]:
    return {(row["model"][1], row["technique"][1], row["form"][1]): row for row in tables(page)["deploy-table"]}


def _bounds(want: dict[str, float], figure: str, decimals: int) -> str:
    """`[5.00, 5.52]`, an unbounded end as ∞."""
    low, high = (want[f"{figure}_{end}"] for end in ("low", "high"))
    return f"[{low:,.{decimals}f}, {'∞' if math.isinf(high) else f'{high:,.{decimals}f}'}]"


def test_each_row_is_the_mean_over_seeds_of_the_store(deploy_report: Path) -> None:
    rows, expected = _rows((deploy_report / "index.html").read_text()), _expected()
    assert set(rows) == set(expected)
    for key, want in expected.items():
        row = rows[key]
        assert row["n"][1] == str(want["n"]), key
        for header, figure in SHOWN.items():
            assert close(number(row[header]), want.get(figure, math.nan)), (key, header)
        for header, (figure, decimals) in INTERVALS.items():
            assert row[header][1] == (_bounds(want, figure, decimals) if figure in want else ""), (key, header)
    lora = rows[CLASSIFIER, "lora", "merged16"]  # three seeds: no single run's figures
    assert lora["n"][1] == "3" and lora["Δ accuracy vs unmerged"][1] == f"{0.008 / 3 * 100:+.2f} pp"
    assert rows[CLASSIFIER, "qalora", "merged4"]["rows/s 95 % interval"][1].endswith(", ∞]")  # as MLflow stored it
    assert rows[CLASSIFIER, "qalora", "unmerged"]["load"][1] == ""  # measured in memory: no load time


def test_rows_follow_the_headlines_order_then_the_forms(deploy_report: Path) -> None:
    order = [key for key in _rows((deploy_report / "index.html").read_text())]
    techniques = report_order()
    assert order == sorted(order, key=lambda k: (k[0], techniques.index(k[1]), FORMS.index(k[2])))


def test_causal_columns_only_where_a_causal_lm_measured_them(deploy_report: Path, store: tuple[str, Path]) -> None:
    rows = _rows((deploy_report / "index.html").read_text())
    for (model, _, _), row in rows.items():
        for header in CAUSAL_ONLY - {"perplexity"}:  # every causal form is timed, the base form too
            assert (row[header][1] != "") == (model == CAUSAL), (model, header)
        for header in CLASSIFIER_ONLY:
            assert (row[header][1] != "") == (model == CLASSIFIER), (model, header)
    uri, _ = store
    raw = load.load_runs(uri, experiment=DEPLOY_EXPERIMENT, sweep_id=None)
    runs = analyse.tidy(raw)
    classifiers = deployment(raw, runs[runs["model"] == CLASSIFIER])
    section = deploy_section(classifiers, {"several_datasets": False, "several_devices": False})
    headers = set(tables(section.body)["deploy-table"][0])
    assert headers >= CLASSIFIER_ONLY and not headers & CAUSAL_ONLY


def test_a_run_that_measured_nothing_adds_no_row(deploy_report: Path, store: tuple[str, Path]) -> None:
    page = (deploy_report / "index.html").read_text()
    assert "dora" in {row["technique"][1] for row in tables(page)["headline-table"]}  # it finished, and shows there
    assert "dora" not in {technique for _, technique, _ in _rows(page)}
    uri, _ = store
    raw = load.load_runs(uri, experiment=DEPLOY_EXPERIMENT, sweep_id=None)
    runs = analyse.tidy(raw)
    names = set(runs.set_index("run_id").loc[measured(raw, runs)["run_id"], "run_name"])
    assert names == {run.name for run, forms in DEPLOYED if forms and run.status == "FINISHED"}
    assert any(run.status == "KILLED" and forms for run, forms in DEPLOYED)  # the premise: it logged, yet is left out


def test_the_scatter_has_one_point_per_configuration_and_form(deploy_report: Path) -> None:
    data, layout = plot((deploy_report / "index.html").read_text(), "plot-deploy")
    found = {(trace["name"], form[0].split(" ")[0]): (x, y) for trace in data if "customdata" in trace
             for form, x, y in zip(trace["customdata"], trace["x"], trace["y"], strict=True)}
    want = {(_label(model, technique), form): (values["bytes"] / 2 ** 20, values["accuracy"] * 100)
            for (model, technique, form), values in _expected().items() if "accuracy" in values}
    assert set(found) == set(want) and sum(len(t["x"]) for t in data if "customdata" in t) == len(want)
    for key, (x, y) in want.items():
        assert found[key] == (pytest.approx(x, rel=1e-12), pytest.approx(y, rel=1e-12)), key
    assert layout["xaxis"]["type"] == "log"
    assert {t["name"] for t in data if "customdata" not in t} == {f"form: {f}" for _, f in want}  # a key to symbols


def _sentences() -> list[str]:
    """The merge sentences recomputed from the store, in the table's order."""
    expected, said = _expected(), []
    for model in (CLASSIFIER, CAUSAL):
        for technique in report_order():
            unmerged = expected.get((model, technique, "unmerged"), {})
            steps = []
            for form in ("merged16", "merged4"):
                values = expected.get((model, technique, form))
                if values is None:
                    continue
                words = ("merged into 16 bits" if form == "merged16" else "merged and quantized again to 4 bits"
                         if (model, technique, "merged16") in expected else "merged into its 4-bit base")
                change = (f"test accuracy {values['accuracy_delta'] * 100:+.2f} points" if "accuracy_delta" in values
                          else f"perplexity {values['perplexity']:.2f} (unmerged {unmerged['perplexity']:.2f})")
                steps.append(f"{words}, {change}, max |logit diff| {values['max_abs_logit_diff']:.3g} "
                             f"(of logits up to {values['max_abs_logit']:.3g})")
            if steps:
                said.append(f"{_label(model, technique)}, against the unmerged model: {'; '.join(steps)}.")
    return said


def test_the_merge_sentences_name_the_means_of_the_store(deploy_report: Path) -> None:
    page = (deploy_report / "index.html").read_text()
    section = page[page.index('<section id="deploy">'):]
    section = section[:section.index("</section>")]
    notes = [html.unescape(text) for text in re.findall(r'<p class="note">(.*?)</p>', section)]
    # the runs' own notes follow: how QA-LoRA measured, why LoftQ measured nothing
    want = [*_sentences(), f"{_label(CLASSIFIER, 'loftq')}: deployment not measured in 1 of 1 runs ({ERROR})",
            f"{_label(CLASSIFIER, 'qalora')}: {IN_MEMORY}"]  # in the headline's order, as the table
    assert notes == want
    assert ("minilm qlora r=8 qv, against the unmerged model: merged into 16 bits, test accuracy +0.15 points, max "
            "|logit diff| 0.003 (of logits up to 9.5); merged and quantized again to 4 bits, test accuracy -1.45 "
            "points, max |logit diff| 0.15 (of logits up to 9.5).") in want  # the oracle itself, once by eye
    summary = (deploy_report / "summary.md").read_text()
    assert all(f"- {sentence.replace('|', chr(92) + '|')}" in summary for sentence in want)


def test_summary_md_has_the_table(deploy_report: Path) -> None:
    summary = (deploy_report / "summary.md").read_text()
    part = summary[summary.index("## Deployment cost"):]
    header = next(line for line in part.splitlines() if line.startswith("| model |"))
    assert "| form | n | size | load | test accuracy % |" in header and "TTFT ms" in header
    qlora = _expected()[CLASSIFIER, "qlora", "merged4"]
    line = next(line for line in part.splitlines()
                if line.startswith(f"| {CLASSIFIER} | qlora |") and "| merged4 |" in line)
    assert f"| {qlora['accuracy'] * 100:.2f} | {qlora['accuracy_delta'] * 100:+.2f} pp |" in line
    assert summary.index("## Headline") < summary.index("## Deployment cost")


def test_the_section_sits_after_the_variants(deploy_report: Path) -> None:
    page = (deploy_report / "index.html").read_text()
    anchors = [page.index(f'<section id="{anchor}">') for anchor in ("headline", "variants", "deploy", "pareto")]
    assert anchors == sorted(anchors)
    assert '<a href="#deploy">Deployment cost</a>' in page


def test_a_report_without_deploy_metrics_has_no_deploy_table(report: Path) -> None:
    page = (report / "index.html").read_text()
    assert "deploy-table" not in tables(page) and 'id="plot-deploy' not in page
    assert '<section id="deploy">' not in page  # left out, and listed with the command that adds it
    assert "Deployment cost (<code>bench run (deploy.measure=true, the default)</code>)" in page
    assert "## Deployment cost" not in (report / "summary.md").read_text()


def test_a_failed_measurement_alone_says_why_and_draws_no_table(store: tuple[str, Path]) -> None:
    uri, _ = store
    raw = load.load_runs(uri, experiment=DEPLOY_EXPERIMENT, sweep_id=None)
    runs = analyse.tidy(raw)
    failed = deployment(raw, runs[runs["technique"] == "loftq"])
    assert failed.rows.empty and failed.notes == [f"loftq r=8 qv: deployment not measured in 1 of 1 runs ({ERROR})"]
    body = deploy_section(failed, {"several_datasets": False, "several_devices": False}).body
    assert "deploy-table" not in tables(body) and '<p class="empty">No finished run logged deploy/*' in body
    assert html.escape(failed.notes[0]) in body
    summary = deploy_markdown(failed, {"several_datasets": False, "several_devices": False})
    assert summary.startswith("## Deployment cost") and "OutOfMemoryError" in summary and "| form |" not in summary
