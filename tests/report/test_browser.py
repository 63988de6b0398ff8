"""The report in a real browser (headless Chromium, offline): plotly draws every plot, the page logs no errors,
injected markup stays text, and screenshots are taken: the report of experiment `cmp` and that of a fair comparison
(its tuned headline and learning-rate curves first). `nox -s browser` keeps them in reports/screenshots/ for a human
to look at ($BENCH_SCREENSHOTS names the folder); the plain test suite writes only temporary files."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fair_store import FAIR_EXPERIMENT, UNTUNED, build_fair
from report_store import EXPERIMENT, build_store, finished_groups

from bench.cli import main

pytestmark = pytest.mark.browser
CHROMIUM = next((path for path in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if path and Path(path).is_file()), None)
# Records uncaught errors and console.error/warn, then drives the headline table (sort by accuracy, descending;
# filter on "qlora"), and writes what it saw into the DOM, so --dump-dom reports it after the scripts ran.
PROBE = """<script>window.__problems = [];
window.addEventListener("error", function (e) { __problems.push("error: " + e.message); });
["error", "warn"].forEach(function (level) { var original = console[level];
  console[level] = function () { __problems.push(level + ": " + Array.prototype.join.call(arguments, " "));
                                 original.apply(console, arguments); }; });
window.addEventListener("load", function () { setTimeout(function () {
  var table = document.getElementById("headline-table");
  var headers = Array.prototype.map.call(table.tHead.rows[0].cells, function (th) { return th.textContent; });
  var column = headers.indexOf("val accuracy %"), header = table.tHead.rows[0].cells[column];
  header.click(); header.click();
  var sorted = Array.prototype.map.call(table.tBodies[0].rows, function (row) {
    return parseFloat(row.cells[column].getAttribute("data-v")); });
  var filter = document.querySelector('input[data-table="headline-table"]');
  filter.value = "qlora"; filter.dispatchEvent(new Event("input"));
  var shown = Array.prototype.filter.call(table.tBodies[0].rows, function (row) { return !row.hidden; }).length;
  var out = document.createElement("pre"); out.id = "probe";
  out.textContent = JSON.stringify({problems: __problems, sorted: sorted, shown: shown});
  document.body.appendChild(out); }, 500); });
</script>"""


def _chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", *extra, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The report of each experiment: `cmp` and the fair comparison's."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium, or `nox -s browser`)")
    folder = tmp_path_factory.mktemp("browser")
    uri = build_store(folder)
    build_fair(folder, uri)
    for experiment in (EXPERIMENT, FAIR_EXPERIMENT):
        out = folder / experiment
        assert main(["report", "--experiment", experiment, "--tracking-uri", uri, "--out", str(out)]) == 0
    return {experiment: folder / experiment / "index.html" for experiment in (EXPERIMENT, FAIR_EXPERIMENT)}


def _probe(page: Path, tmp_path: Path) -> tuple[str, dict, list[str]]:
    """The DOM after the scripts ran, what the probe saw, and the plots plotly drew."""
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    result = _chromium(probed, tmp_path / "profile", "--dump-dom")
    dom = result.stdout
    assert result.returncode == 0 and "</html>" in dom, result.stderr[-2000:]
    probe = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1)))
    assert probe["problems"] == [], probe["problems"]
    uncaught = [line for line in result.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert not uncaught, uncaught
    plots = re.findall(r'<div id="(plot-[\w-]+)" class="plot js-plotly-plot"[^>]*><div class="plot-container', dom)
    assert dom.count('class="main-svg"') >= 2 * len(plots)  # plotly drew an SVG (and its overlay) for each
    return dom, probe, plots


def test_plots_render_tables_sort_and_filter_and_nothing_logs_errors(pages: dict[str, Path], tmp_path: Path) -> None:
    dom, probe, plots = _probe(pages[EXPERIMENT], tmp_path)
    configurations = finished_groups()
    assert probe["sorted"] == sorted(probe["sorted"], reverse=True) and len(probe["sorted"]) == len(configurations)
    # The filter left the QLoRA configurations (one per device), nothing else.
    assert probe["shown"] == sum(technique == "qlora" for _, _, technique, *_ in configurations) == 2
    assert set(plots) == {"plot-pareto", "plot-breakdown", "plot-prediction", "plot-rank", "plot-targets", "plot-loss",
                          "plot-timeline-0"}, plots
    # The hostile run name and target preset stayed text: nothing changed the title, no element was injected.
    assert re.search(r"<title>bench report: cmp</title>", dom)
    assert "<img" not in dom and "&lt;img src=x onerror=" in dom


def test_the_fair_report_draws_its_curves_and_sorts_the_untuned_headline(pages: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    dom, probe, plots = _probe(pages[FAIR_EXPERIMENT], tmp_path)
    assert set(plots) == {"plot-lr", "plot-pareto", "plot-breakdown", "plot-prediction", "plot-loss"}, plots
    untuned = {(technique, alpha) for technique, alpha, *_ in UNTUNED}
    assert probe["sorted"] == sorted(probe["sorted"], reverse=True) and len(probe["sorted"]) == len(untuned)
    assert probe["shown"] == 0  # no untuned QLoRA: the filter leaves nothing
    assert dom.index('id="tuned"') < dom.index('id="plot-lr"') < dom.index('id="headline"')


@pytest.mark.parametrize("experiment", [EXPERIMENT, FAIR_EXPERIMENT])
def test_screenshot(pages: dict[str, Path], tmp_path: Path, experiment: str) -> None:
    shot = tmp_path / "report.png"
    result = _chromium(pages[experiment], tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,2400",
                       "--hide-scrollbars")
    assert shot.is_file() and shot.stat().st_size > 50_000, result.stderr[-2000:]  # a blank page is a few kB
    keep = os.environ.get("BENCH_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        name = "report.png" if experiment == EXPERIMENT else f"report-{experiment}.png"
        shutil.copyfile(shot, Path(keep) / name)
