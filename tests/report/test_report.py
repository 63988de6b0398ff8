"""`bench report` over a synthetic store: the numbers, the files, escaping, offline-ness, and the CLI."""

from __future__ import annotations

import csv
import html
import math
import os
import re
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_store import BASE_MS, EVIL_NAME, EVIL_TARGET, EXPERIMENT, RUNS, SWEEP, build_store, finished_groups, tables
from scipy import stats

from bench.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp("report-store")
    return build_store(folder), folder


@pytest.fixture(scope="module")
def report(store: tuple[str, Path]) -> Path:
    """The report of the experiment, written through the real `bench report` entry point."""
    uri, folder = store
    out = folder / "report"
    assert main(["report", "--experiment", EXPERIMENT, "--tracking-uri", uri, "--out", str(out)]) == 0
    return out


def _expected(runs: list) -> dict[str, float]:
    """Mean and 95 % Student-t interval computed by hand."""
    accuracies = [run.accuracy for run in runs]
    n, mean = len(accuracies), statistics.fmean(accuracies)
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(accuracies) / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "half": half, "peak": statistics.fmean(r.peak for r in runs),
            "speed": statistics.fmean(r.tokens_per_s for r in runs), "size": statistics.fmean(r.adapter for r in runs)}


def _row(rows: list[dict], model: str, technique: str, r: int | None, targets: str | None) -> dict:
    found = [row for row in rows if row["model"][1] == model and row["technique"][1] == technique
             and row["r"][1] == ("" if r is None else str(r)) and row["targets"][1] == (targets or "")]
    assert len(found) == 1, (model, technique, r, targets)
    return found[0]


def _value(cell: tuple[dict, str]) -> float:
    return float(cell[0]["data-v"]) if cell[0].get("data-v") else math.nan


def _close(actual: float, expected: float) -> bool:
    return (math.isnan(actual) and math.isnan(expected)) or math.isclose(actual, expected, rel_tol=1e-9)


def test_headline_numbers_match_a_hand_computation(report: Path) -> None:
    rows = tables((report / "index.html").read_text())["headline-table"]
    groups = finished_groups()
    assert len(rows) == len(groups)
    full = _expected(groups[("minilm", "full", None, None)])
    for (model, technique, r, targets), runs in groups.items():
        want, row = _expected(runs), _row(rows, model, technique, r, targets)
        assert row["n"][1] == str(want["n"])
        assert _close(_value(row["accuracy %"]), want["mean"]) and row["accuracy %"][1] == f"{want['mean'] * 100:.2f}"
        ci = row["95 % CI"]
        if want["n"] == 1:
            assert ci[1] == "no interval (n=1)" and not ci[0]["data-v"]
        else:
            low, high = want["mean"] - want["half"], want["mean"] + want["half"]
            assert _close(_value(ci), want["half"]) and _close(float(ci[0]["data-low"]), low)
            assert ci[1] == f"± {want['half'] * 100:.2f} [{low * 100:.2f}, {high * 100:.2f}]"
        assert _close(_value(row["peak memory"]), want["peak"])
        assert _close(_value(row["tokens/s"]), want["speed"])
        reference = full if model == "minilm" else None  # tinybert has no full fine-tuning run
        expected_deltas = {"Δ accuracy": want["mean"] - full["mean"], "memory ×": want["peak"] / full["peak"],
                           "speed ×": want["speed"] / full["speed"], "size ×": want["size"] / full["size"]}
        for column, value in expected_deltas.items():
            assert _close(_value(row[column]), value if reference else math.nan), (model, technique, column)
            assert (row[column][1] == "") == (reference is None)


def test_displayed_deltas_and_optional_columns(report: Path) -> None:
    rows = tables((report / "index.html").read_text())["headline-table"]
    full, qlora = (_expected(finished_groups()[key]) for key in [("minilm", "full", None, None),
                                                                   ("minilm", "qlora", 8, "qv")])
    row = _row(rows, "minilm", "qlora", 8, "qv")
    assert row["Δ accuracy"][1] == f"{(qlora['mean'] - full['mean']) * 100:+.2f} pp"
    assert row["memory ×"][1] == f"{qlora['peak'] / full['peak']:.2f}×"
    # Measured on the qlora runs only: the columns appear, blank elsewhere.
    assert _close(_value(row["peak reserved"]), statistics.fmean([0.95e9, 0.97e9, 0.96e9, 0.98e9]))
    assert _close(_value(row["energy"]), 5150.0) and row["energy"][1] == "5,150 J"
    assert _row(rows, "minilm", "full", None, None)["energy"][1] == ""


def test_results_csv_has_one_row_per_run_with_its_configuration_figures(report: Path) -> None:
    with (report / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(RUNS)  # the sweep's parent run is not a result
    groups, full = finished_groups(), _expected(finished_groups()[("minilm", "full", None, None)])
    by_name = {row["run_name"]: row for row in rows}
    assert by_name["lora-rerun-old"]["superseded"] == "True"
    for row in rows:
        if row["status"] != "FINISHED" or row["superseded"] == "True":
            continue
        rank = int(float(row["r"])) if row["r"] else None
        key = (row["model"], row["technique"], rank, row["target_modules"] or None)
        want = _expected(groups[key])
        assert _close(float(row["group_accuracy_mean"]), want["mean"])
        assert _close(float(row["group_accuracy_ci95"] or "nan"), want["half"])
        assert int(row["group_n"]) == want["n"]
        delta = want["mean"] - full["mean"] if row["model"] == "minilm" else math.nan
        assert _close(float(row["delta_accuracy"] or "nan"), delta)
        assert float(row["metrics.eval/accuracy"]) in [run.accuracy for run in groups[key]]


def test_summary_markdown_holds_the_headline(report: Path) -> None:
    summary = (report / "summary.md").read_text()
    full = _expected(finished_groups()[("minilm", "full", None, None)])
    assert f"| {full['mean'] * 100:.2f} | ± {full['half'] * 100:.2f}" in summary
    assert "n=1, no interval" in summary
    assert "\\<img src=x" in summary and "<img" not in summary.replace("\\<img", "")


def test_values_are_escaped(report: Path) -> None:
    page = (report / "index.html").read_text()
    assert EVIL_NAME not in page and EVIL_TARGET not in page
    assert html.escape(EVIL_NAME) in page and html.escape(EVIL_TARGET) in page
    runs = tables(page)["runs-table"]
    assert EVIL_NAME in [row["run"][1] for row in runs]  # shown as the text it is


class _Resources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "data", "poster", "srcset", "xlink:href", "formaction"):
                self.links.append((tag, name, value or ""))
            if tag == "link" or (tag == "meta" and (dict(attrs).get("http-equiv") or "").lower() == "refresh"):
                self.links.append((tag, name, value or ""))


def test_page_is_self_contained(report: Path) -> None:
    page = (report / "index.html").read_text()
    parser = _Resources()
    parser.feed(page)
    outside = [link for link in parser.links if re.match(r"\s*(https?:)?//", link[2]) or link[0] == "link"]
    assert not outside, outside
    assert not re.search(r"<script[^>]*\bsrc=", page)
    styles = "".join(re.findall(r"<style>(.*?)</style>", page, re.S))
    assert "@import" not in styles and not re.search(r"url\(\s*['\"]?(https?:)?//", styles)
    from plotly.offline import get_plotlyjs

    assert page.count(get_plotlyjs()[:200]) == 1  # plotly.js inlined exactly once


def test_sections_plots_failures_and_provenance(report: Path) -> None:
    page = (report / "index.html").read_text()
    for plot in ("plot-pareto", "plot-rank", "plot-targets", "plot-loss", "plot-timeline-0"):
        assert f'id="{plot}"' in page, plot
    timeline = page[page.index('id="plot-timeline-0"'):]
    timeline = timeline[:timeline.index("</script>")]
    assert '"rss_bytes"' in timeline and '"gpu_util_pct"' in timeline and "phase" not in timeline
    failed = {row["status"][1]: row for row in tables(page)["failures-table"]}
    assert set(failed) == {"FAILED", "KILLED"}
    assert failed["FAILED"]["failure"][1] == "oom" and "CUDA out of memory" in failed["FAILED"]["error"][1]
    provenance = page[page.index('id="provenance"'):]
    for text in ("version/torch", "2.13.0", "hw/gpu", "Test GPU 80GB", "abc1234", "sweep_overrides",
                 "method=full,lora,qlora seed=1,2,3", SWEEP):
        assert text in provenance, text
    first_start = BASE_MS + 60_000  # the sweep's parent run is not a result, so its times don't count
    last_end = BASE_MS + len(RUNS) * 60_000 + 30_000
    stamps = [datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
              for ms in (first_start, last_end)]
    assert " → ".join(stamps) in page


def test_sweep_report_in_the_default_folder(store: tuple[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    uri, _ = store
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--sweep", SWEEP, "--tracking-uri", uri]) == 0
    page = (tmp_path / "reports" / SWEEP / "index.html").read_text()
    models = {row["model"][1] for row in tables(page)["runs-table"]}
    assert models == {"minilm"}  # the sweep's children only; tinybert ran outside it
    assert "sweep-sw1" not in page.split('id="runs"')[1].split("</section>")[0]  # the parent is not a result
    assert f"reports/{SWEEP}/index.html" in capsys.readouterr().out


def test_bad_requests_fail_with_one_line(store: tuple[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    uri, _ = store
    assert main(["report", "--experiment", "nope", "--tracking-uri", uri, "--out", str(tmp_path)]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err
    assert main(["report", "--sweep", "missing", "--tracking-uri", uri, "--out", str(tmp_path)]) == 2
    assert "no runs in sweep 'missing'" in capsys.readouterr().err
    assert main(["report", "--tracking-uri", f"sqlite:///{tmp_path / 'absent.db'}"]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert not (tmp_path / "absent.db").exists()


def test_report_never_imports_torch(store: tuple[str, Path], tmp_path: Path) -> None:
    uri, _ = store
    argv = ["report", "--experiment", EXPERIMENT, "--tracking-uri", uri, "--out", str(tmp_path)]
    code = (f"import sys; from bench.cli import main; rc = main({argv!r}); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules, 'torch was imported'; print('no torch')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no torch" in result.stdout and (tmp_path / "index.html").is_file()
