"""The MLflow UI itself, as a user meets it after a sweep: `mlflow ui` on 127.0.0.1 over a store with a two-cell
sweep, opened in headless Chromium (driven over the DevTools protocol, tests/ui/cdp.py). The page bench prints
opens on the runs table; the sweep's row holds its two cells, named by what they are, with their data sets in the
Dataset column and their headline result as their description; the dataset filter keeps them; the report renders
among the parent run's artifacts. MLflow 3.17's UI opens an experiment on its GenAI pages until the browser has
chosen "Model training" once (its tag `mlflow.experimentKind` no longer decides), which the page bench prints
does by its `?workflowType=machine_learning`.
`nox -s browser` keeps the screenshots in the folder $BENCH_UI_SCREENSHOTS names (reports/mlflow-ui/, not tracked);
the plain test suite writes only temporary files."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from cdp import Browser, Page
from support import TINY, finished_runs, run_cli_here

pytestmark = pytest.mark.browser
CHROMIUM = next((path for path in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if path and Path(path).is_file()), None)
# Before each page's own scripts: the UI's assistant panel stays shut (it opens itself on a first visit and would
# cover half of every screenshot).
QUIET = ("try { localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
         " localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true'); } catch (e) {}")
ROWS = "Array.from(document.querySelectorAll('.ag-center-cols-container .ag-row'))"


@dataclass(frozen=True)
class Served:
    """The UI's address, the sweep in it, and what the sweep printed."""

    base: str
    experiment_id: str
    sweep_id: str
    parent: str
    children: dict[str, str]  # run id -> run name
    printed: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """A two-cell sweep (full fine-tuning and LoRA on the tiny model) in a fresh store, and `mlflow ui` on it."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium, or `nox -s browser`)")
    folder = tmp_path_factory.mktemp("mlflow-ui")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    result = run_cli_here("-m", *TINY, "tracker.log_model=false", "method=full,lora", f"tracker.uri={store}",
                          f"hydra.sweep.dir={folder / 'sweep'}", cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = finished_runs(store)
    parent = runs[runs["tags.sweep_role"] == "parent"].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]
    port = _free_port()
    log = (folder / "ui.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host",
                               "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=folder, stdout=log,
                              stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            pytest.fail(f"mlflow ui did not start: {(folder / 'ui.log').read_text()[-2000:]}")
        time.sleep(1)
    yield Served(base, str(parent["experiment_id"]), parent["tags.sweep_id"], parent["run_id"],
                 dict(zip(children["run_id"], children["tags.mlflow.runName"], strict=True)), result.stdout)
    server.send_signal(signal.SIGTERM)  # by its PID; its worker goes with it
    server.wait(timeout=60)
    log.close()


@pytest.fixture
def page(served: Served, tmp_path: Path):
    """A fresh browser profile (no choice remembered from an earlier visit) and one tab, 1600 x 1000."""
    with Browser(CHROMIUM, tmp_path / "profile") as browser:
        tab = browser.page()
        tab.send("Page.addScriptToEvaluateOnNewDocument", {"source": QUIET})
        yield tab


def _printed_link(served: Served, which: str) -> str:
    """A page the sweep's last lines point to (`view` or `report`), at this test's port instead of 5000."""
    line = next(line for line in served.printed.splitlines() if line.startswith(f"{which}: "))
    links = re.findall(r"http://127\.0\.0\.1:5000(/#\S+?)(?:\)|$|\s)", line)
    return served.base + links[0]


def _by_row(column: str, value: str) -> str:
    """JavaScript for {row id: `value` of the row's `cell` in `column`} over the rows the table shows."""
    return (f"Object.fromEntries(Array.from(document.querySelectorAll('.ag-row')).map(row => [row, "
            f"row.querySelector('[col-id=\"{column}\"]')]).filter(([row, cell]) => cell).map(([row, cell]) => "
            f"[row.getAttribute('row-id'), {value}]))")


def _keep(shot: Path, name: str) -> None:
    keep = os.environ.get("BENCH_UI_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(keep) / name)


def test_the_printed_page_opens_on_the_runs_with_the_sweeps_cells_and_their_data(served: Served, page: Page,
                                                                                 tmp_path: Path) -> None:
    page.goto(_printed_link(served, "view"))
    parent_row = f".ag-row[row-id=\"{served.parent}\"]"
    page.wait_for(f"document.querySelector('{parent_row}') !== null", what="the sweep's row")
    assert page.evaluate("location.hash").startswith(f"#/experiments/{served.experiment_id}/runs?")
    sweep = page.evaluate(f"Array.from(document.querySelectorAll('{parent_row}')).map(r => r.innerText).join(' ')")
    assert f"sweep method=full,lora · {served.sweep_id}" in sweep
    assert "tweets-train" in sweep  # the sweep's own row names its data sets

    # one click on the sweep's expander shows its cells nested under it
    page.evaluate(f"document.querySelector('{parent_row} button[data-component-id*=\"runnamecellrenderer\"]').click()")
    shown = page.wait_for(f"(ids => {json.dumps(sorted(served.children))}.every(id => ids.includes(id)) && ids)"
                          f"({ROWS}.map(r => r.getAttribute('row-id')))", what="the sweep's cells")
    assert shown[0] == served.parent and len(shown) == 3  # the sweep, then its two cells
    names = page.evaluate(_by_row("attributes.`Run Name`", "(cell.querySelector('a') || cell).innerText.trim()"))
    assert {run: names[run] for run in served.children} == served.children
    assert set(served.children.values()) == {"full · tiny-bert · tweets · s42", "lora r=8 · tiny-bert · tweets · s42"}
    datasets = page.evaluate(_by_row("attributes.`Dataset`", "cell.innerText"))
    for run in served.children:
        assert re.search(r"tweets-train \([0-9a-f]{8}\)\s*Train", datasets[run]), datasets[run]
        assert re.search(r"tweets-validation \([0-9a-f]{8}\)\s*Validation", datasets[run]), datasets[run]
    time.sleep(1)  # the row animation settles
    shot = page.screenshot(tmp_path / "runs.png")
    assert shot.stat().st_size > 40_000  # a blank page is a few kB
    _keep(shot, "mlflow-ui-runs.png")

    # a cell's page: its description says what it was and what it scored
    lora = next(run for run, name in served.children.items() if name.startswith("lora"))
    page.goto(f"{served.base}/#/experiments/{served.experiment_id}/runs/{lora}?workflowType=machine_learning")
    page.wait_for("/LoRA r=8 on tiny-bert, tweets \\(seed 42\\): test accuracy 0\\.\\d{3}, tensor peak [\\d.]+ MiB, "
                  "[\\d,]+ tokens\\/s/.test(document.body.innerText)", what="the run's description")


def test_once_model_training_is_chosen_the_experiment_opens_on_its_runs(served: Served, page: Page) -> None:
    """The UI's GenAI | Model training switch, clicked once, is remembered: then the experiment's own address (the
    experiments list's link) opens on the runs table too."""
    page.goto(f"{served.base}/#/experiments")
    switch = "Array.from(document.querySelectorAll('[role=button]')).find(e => e.innerText.trim() === 'Model training')"
    page.wait_for(f"{switch} !== undefined", what="the GenAI | Model training switch")
    page.evaluate(f"{switch}.click()")
    page.goto(f"{served.base}/#/experiments/{served.experiment_id}")
    page.wait_for(f"location.hash.startsWith('#/experiments/{served.experiment_id}/runs?')", what="the runs page")
    page.wait_for(f"document.querySelector('.ag-row[row-id=\"{served.parent}\"]') !== null", what="the sweep's row")


def test_the_dataset_filter_keeps_the_sweep_and_a_digest_it_never_saw_keeps_nothing(served: Served, page: Page) -> None:
    found = _offered_datasets(page, served)
    train = next(item for item in found if item["context"] == "train")
    for digest, expected in ((train["digest"], {served.parent, *served.children}), ("00000000", set())):
        chosen = [{**train, "digest": digest}]
        encoded = urllib.parse.quote(base64.b64encode(json.dumps(chosen).encode()).decode())
        page.goto(f"{served.base}/#/experiments/{served.experiment_id}/runs?workflowType=machine_learning"
                  f"&datasetsFilter={encoded}")
        page.wait_for(f"/\\b{len(expected)} matching runs?/.test(document.body.innerText)",
                      what=f"{len(expected)} matching runs")
        if expected:
            expander = f".ag-row[row-id=\"{served.parent}\"] button[data-component-id*=\"runnamecellrenderer\"]"
            page.wait_for(f"document.querySelector('{expander}') !== null", what="the sweep's row")
            page.evaluate(f"document.querySelector('{expander}').click()")
            page.wait_for(f"{ROWS}.length === {len(expected)}", what="the sweep and its cells")
        assert set(page.evaluate(f"{ROWS}.map(r => r.getAttribute('row-id'))")) == expected


def _offered_datasets(page: Page, served: Served) -> list[dict[str, str]]:
    """The data sets the UI's dataset filter offers for the experiment (what its drop-down lists)."""
    page.goto(f"{served.base}/#/experiments/{served.experiment_id}/runs?workflowType=machine_learning")
    page.wait_for("document.readyState === 'complete'")
    body = json.dumps({"experiment_ids": [served.experiment_id]})
    found = page.evaluate(f"fetch('/ajax-api/2.0/mlflow/experiments/search-datasets', {{method: 'POST', headers: "
                          f"{{'Content-Type': 'application/json'}}, body: {json.dumps(body)}}}).then(r => r.json())")
    summaries = found["dataset_summaries"]
    assert {(item["name"], item["context"]) for item in summaries} == {
        ("tweets-train", "train"), ("tweets-validation", "validation"), ("tweets-test", "test")}
    return summaries


def test_the_report_renders_among_the_parent_runs_artifacts(served: Served, page: Page, tmp_path: Path) -> None:
    page.goto(_printed_link(served, "report"))
    page.wait_for("document.querySelector('iframe.mlflow-html-iframe') !== null", what="the report's frame")
    # the UI shows an HTML artifact in a sandboxed frame, which runs in a process of its own: read it there
    frame = _frame_session(page)
    title = page.wait_for("document.title", session=frame, what="the report's title")
    assert title == f"bench report: {served.sweep_id}"
    plots = page.wait_for("document.querySelectorAll('.js-plotly-plot .main-svg').length", session=frame,
                          what="plotly's drawings")
    rows = page.evaluate("document.getElementById('headline-table').tBodies[0].rows.length", session=frame)
    assert plots >= 2 and rows == 2  # full fine-tuning and LoRA, one configuration each
    assert page.evaluate("location.hash").startswith(f"#/experiments/{served.experiment_id}/runs/{served.parent}/"
                                                     "artifacts/report/index.html")
    shot = page.screenshot(tmp_path / "report.png")
    assert shot.stat().st_size > 40_000
    _keep(shot, "mlflow-ui-report.png")


def _frame_session(page: Page) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sessions = page.frame_sessions()
        if sessions:
            return sessions[-1]
        time.sleep(0.5)
    raise AssertionError("the report's frame never attached")
