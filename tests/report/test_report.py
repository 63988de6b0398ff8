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
from report_expect import (
    FULL_CPU,
    FULL_GPU,
    QLORA_CPU,
    QLORA_GPU,
    close,
    expected,
    full_of,
    headline_row,
    hints,
    number,
)
from report_store import BASE_MS, EVIL_NAME, EVIL_TARGET, EXPERIMENT, GPU, RUNS, SWEEP, finished_groups, tables

from bench.cli import main
from bench.core.metrics import is_registered


def test_the_synthetic_store_logs_only_registered_metrics(store: tuple[str, Path]) -> None:
    """The report is tested on the names real runs log (bench.core.metrics), never on a name of the store's own."""
    import mlflow

    client = mlflow.MlflowClient(store[0])
    logged = {name for experiment in client.search_experiments()
              for run in client.search_runs([experiment.experiment_id], max_results=5000) for name in run.data.metrics}
    assert len(logged) > 100 and sorted(name for name in logged if not is_registered(name)) == []


def test_headline_numbers_match_a_hand_computation(report: Path) -> None:
    rows = tables((report / "index.html").read_text())["headline-table"]
    groups = finished_groups()
    assert len(rows) == len(groups)
    for key, runs in groups.items():
        want, row, full = expected(runs), headline_row(rows, *key), full_of(key)
        assert row["n"][1] == str(want["n"])
        accuracy = row["val accuracy %"]
        assert close(number(accuracy), want["mean"]) and accuracy[1] == f"{want['mean'] * 100:.2f}"
        ci = row["val 95 % CI"]
        if want["n"] == 1:
            assert ci[1] == "no interval (n=1)" and not ci[0]["data-v"]
        else:
            low, high = want["mean"] - want["half"], want["mean"] + want["half"]
            assert close(number(ci), want["half"]) and close(float(ci[0]["data-low"]), low)
            assert ci[1] == f"± {want['half'] * 100:.2f} [{low * 100:.2f}, {high * 100:.2f}]"
        assert close(number(row["tensor peak"]), want["peak"])
        assert close(number(row["tokens/s"]), want["speed"])
        if full is None:  # tinybert has no full fine-tuning run, and no run of it is compared across devices
            assert all(row[c][1] == "" for c in ("Δ val accuracy", "memory ×", "speed ×", "size ×")), key
            continue
        expected_deltas = {"Δ val accuracy": want["mean"] - full["mean"], "memory ×": want["peak"] / full["peak"],
                           "speed ×": want["speed"] / full["speed"], "size ×": want["size"] / full["size"]}
        for column, value in expected_deltas.items():
            assert close(number(row[column]), value), (key, column)


def test_displayed_deltas_and_optional_columns(report: Path) -> None:
    rows = tables((report / "index.html").read_text())["headline-table"]
    full, qlora = (expected(finished_groups()[key]) for key in (FULL_GPU, QLORA_GPU))
    row = headline_row(rows, *QLORA_GPU)
    assert row["Δ val accuracy"][1] == f"{(qlora['mean'] - full['mean']) * 100:+.2f} pp"
    assert row["memory ×"][1] == f"{qlora['peak'] / full['peak']:.2f}×"
    # CUDA's figures, measured on the GPU runs only: the columns appear, blank on the CPU's rows.
    assert close(number(row["peak reserved"]), statistics.fmean([0.95e9, 0.97e9]))
    assert close(number(row["peak allocated"]), statistics.fmean([0.85e9, 0.86e9]))
    assert close(number(row["NVML process"]), statistics.fmean([1.40e9, 1.45e9]))
    assert close(number(row["energy"]), 5150.0) and row["energy"][1] == "5,150 J"
    cpu = headline_row(rows, *QLORA_CPU)
    assert cpu["energy"][1] == cpu["peak reserved"][1] == cpu["NVML process"][1] == row["net RSS"][1] == ""
    assert close(number(cpu["net RSS"]), statistics.fmean([20e9, 21e9, 20.5e9, 19.5e9]))
    assert close(number(cpu["eval tensor peak"]), 0.35 * statistics.fmean([0.90e9, 0.92e9, 0.91e9, 0.93e9]))
    assert cpu["bits/weight (quantized)"][1] == "4.13" and cpu["bits/param (model)"][1] == "5.60"
    assert "peak memory" not in rows[0]  # the old ambiguous figure is gone
    headers = hints((report / "index.html").read_text(), "headline-table")
    assert "training" in headers["tensor peak"] and "mem/tensor_peak_bytes" in headers["tensor peak"]
    for title, metric in [("net RSS", "mem/peak_rss_net_bytes"), ("NVML process", "mem/peak_nvml_process_bytes"),
                          ("bits/weight (quantized)", "mem/weight_bits_per_param"),
                          ("bits/param (model)", "mem/model_bits_per_param")]:
        assert headers[title].startswith(metric), title



def test_results_csv_has_one_row_per_run_with_its_configuration_figures(report: Path) -> None:
    with (report / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(RUNS)  # the sweep's parent run is not a result
    groups = finished_groups()
    by_name = {row["run_name"]: row for row in rows}
    assert by_name["lora-rerun-old"]["superseded"] == "True"
    for row in rows:
        if row["status"] != "FINISHED" or row["superseded"] == "True":
            continue
        rank = int(float(row["r"])) if row["r"] else None
        key = (row["model"], row["device"], row["technique"], rank, row["target_modules"] or None)
        want, full = expected(groups[key]), full_of(key)
        assert close(float(row["group_accuracy_mean"]), want["mean"])
        assert close(float(row["group_accuracy_ci95"] or "nan"), want["half"])
        assert int(row["group_n"]) == want["n"]
        assert close(float(row["delta_accuracy"] or "nan"), want["mean"] - full["mean"] if full else math.nan)
        assert close(float(row["memory_ratio"] or "nan"), want["peak"] / full["peak"] if full else math.nan)
        assert close(float(row["group_tensor_peak_bytes"]), want["peak"])
        assert close(float(row["group_at_peak_activations_bytes"]), want["activations"])
        assert float(row["metrics.eval/accuracy"]) in [run.accuracy for run in groups[key]]
        run = next(run for run in groups[key] if run.accuracy == float(row["metrics.eval/accuracy"]))
        assert close(float(row["metrics.mem/tensor_peak_bytes"]), run.peak)
        assert close(float(row["metrics.mem/at_peak/optimizer_bytes"]), run.at_peak()["optimizer"])
        assert (row["peak_module"], row["peak_phase"]) == run.peak_where()
    assert "metrics.mem/peak_bytes" not in rows[0]


def test_summary_markdown_holds_the_headline(report: Path) -> None:
    summary = (report / "summary.md").read_text()
    full = expected(finished_groups()[FULL_CPU])
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
    for plot in ("plot-pareto", "plot-breakdown", "plot-rank", "plot-targets", "plot-loss", "plot-timeline-0"):
        assert f'id="{plot}"' in page, plot
    timeline = page[page.index('id="plot-timeline-0"'):]
    timeline = timeline[:timeline.index("</script>")]
    assert '"rss_bytes"' in timeline and '"gpu_util_pct"' in timeline and "phase" not in timeline
    failed = {row["status"][1]: row for row in tables(page)["failures-table"]}
    assert set(failed) == {"FAILED", "KILLED"}
    assert failed["FAILED"]["failure"][1] == "oom" and "CUDA out of memory" in failed["FAILED"]["error"][1]
    provenance = page[page.index('id="provenance"'):]
    for text in ("version/torch", "2.13.0", "hw/gpu", GPU, "abc1234", "sweep_overrides",
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
