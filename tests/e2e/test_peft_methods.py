"""`method=peft`: any peft method by its type, through the real `bench run`, measured and reported like the rest;
two types side by side stay apart in run names and report rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from support import REQUIRED_METRICS, TINY, assert_one_error_line, assert_plan_matches, finished_runs, run_cli_here

TYPES = {"LOHA": ["method.options.r=4", "method.options.alpha=8"], "IA3": []}


@pytest.fixture(scope="module")
def peft_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp("peft")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    for peft_type, options in TYPES.items():
        result = run_cli_here(*TINY, "method=peft", f"method.options.peft_type={peft_type}", *options,
                              f"tracker.uri={store}", f"hydra.run.dir={folder / peft_type}", cwd=folder)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"'peft-{peft_type.lower()} · tiny-bert · tweets · s42'" in result.stdout
    return store, folder


def test_each_peft_type_finishes_with_every_metric_and_its_plan(peft_runs) -> None:
    store, _ = peft_runs
    runs = finished_runs(store).set_index("params.method.options.peft_type")
    assert sorted(runs.index) == sorted(TYPES) and set(runs["status"]) == {"FINISHED"}
    assert set(runs["tags.technique"]) == {"peft"}
    for peft_type in TYPES:
        run = runs.loc[peft_type]
        assert run["tags.mlflow.runName"].startswith(f"peft-{peft_type.lower()} · ")
        for metric in REQUIRED_METRICS:
            assert run[f"metrics.{metric}"] == run[f"metrics.{metric}"], (peft_type, metric)
        assert_plan_matches(run)  # the traced plan knows any peft module
        # the analytic formula does not know an arbitrary method's size: no figure rather than a guess
        assert pd.isna(run.get("metrics.mem/predicted_peak_bytes"))
    assert runs.loc["LOHA", "params.method.options.r"] == "4"
    assert runs.loc["IA3", "metrics.params/trainable"] < runs.loc["LOHA", "metrics.params/trainable"]


def test_the_report_tells_one_peft_type_from_another(peft_runs) -> None:
    from bench.report.build import build_report

    store, folder = peft_runs
    built = build_report(uri=store, experiment="bench", sweep_id=None, out=folder / "report")
    summary = (built.folder / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "peft" in line]
    assert any("options.peft_type=LOHA" in row for row in rows), summary
    assert any("options.peft_type=IA3" in row for row in rows), summary


def test_an_unknown_peft_type_is_one_line(tmp_path: Path) -> None:
    result = run_cli_here(*TINY, "method=peft", "method.options.peft_type=LORAX", cwd=tmp_path)
    assert_one_error_line(result, "method.options.peft_type='LORAX' is not a peft method", "LOHA", "IA3")


def test_an_option_the_peft_type_lacks_is_one_line(tmp_path: Path) -> None:
    result = run_cli_here(*TINY, "method=peft", "method.options.peft_type=IA3", "method.options.r=4", cwd=tmp_path)
    assert_one_error_line(result, "method.options.r is not an option of peft's IA3Config", "feedforward_modules")
