"""The report's "Predicted against measured" section over the synthetic store: one point per run that logged both
plan/peak_bytes and mem/tensor_peak_bytes, the line y = x and a ±5 % band, and each configuration's mean error,
all recomputed from report_store's ground truth."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pandas as pd
from report_expect import close, label, number, plot
from report_store import RUNS, finished_groups, tables

from bench.report.plots import prediction_scatter
from bench.report.prediction import BAND

MIB = 2 ** 20


def _planned() -> dict[tuple, list]:
    """The runs each configuration's row averages: finished, the latest of a repeated config, with a plan."""
    groups = {key: [run for run in runs if run.plan is not None] for key, runs in finished_groups().items()}
    return {key: runs for key, runs in groups.items() if runs}


def _error(run) -> float:
    return (run.plan - run.peak) / run.peak * 100


def test_the_table_gives_each_configurations_mean_error(report: Path) -> None:
    rows = {row["configuration"][1]: row for row in tables((report / "index.html").read_text())["prediction-table"]}
    planned = _planned()
    assert set(rows) == {label(key) for key in planned}
    assert not any(" dora" in name for name in rows)  # DoRA's runs logged no plan: left out, nothing stands in
    for key, runs in planned.items():
        row = rows[label(key)]
        assert row["n"][1] == str(len(runs))
        assert close(number(row["predicted MiB"]), statistics.fmean(run.plan for run in runs))
        assert close(number(row["measured MiB"]), statistics.fmean(run.peak for run in runs))
        mean_error = statistics.fmean(map(_error, runs))
        assert close(number(row["mean error %"]), mean_error) and row["mean error %"][1] == f"{mean_error:+.2f}"
        assert close(number(row["max |error| %"]), max(abs(_error(run)) for run in runs))


def test_the_plot_has_a_point_per_run_the_diagonal_and_the_band(report: Path) -> None:
    page = (report / "index.html").read_text()
    data, layout = plot(page, "plot-prediction")
    band, diagonal, *techniques = data
    runs = [run for group in _planned().values() for run in group]
    for trace in techniques:  # one trace per technique, its points the runs' (predicted, measured) in MiB
        mine = [run for run in runs if run.technique == trace["name"]]
        assert sorted(zip(trace["x"], trace["y"], strict=True)) == sorted(
            (run.plan / MIB, run.peak / MIB) for run in mine)
    assert {trace["name"] for trace in techniques} == {run.technique for run in runs} == {"full", "lora", "qlora"}
    assert diagonal["x"] == diagonal["y"]
    low, high = band["x"][0], band["x"][1]
    assert band["y"] == [low * (1 - BAND), high * (1 - BAND), high * (1 + BAND), low * (1 + BAND)]
    every = [value / MIB for run in runs for value in (run.plan, run.peak)]
    assert low < min(every) and high > max(every)
    assert max(every) >= 10 * min(every) and layout["xaxis"]["type"] == layout["yaxis"]["type"] == "log"
    outside = sum(abs(_error(run)) > BAND * 100 for run in runs)
    assert outside == 6  # the premise: QLoRA's plans miss by 7 %, the others' stay inside the band
    mean_abs = statistics.fmean(abs(_error(run)) for run in runs)
    assert f"{len(runs)} runs with both figures; mean |error| {mean_abs:.2f} %, {outside} outside ±5 %." in page


def test_runs_without_a_plan_are_counted_nowhere(report: Path) -> None:
    page = (report / "index.html").read_text()
    data, _ = plot(page, "plot-prediction")
    shown = sum(len(trace["x"]) for trace in data[2:])
    unplanned = [run for run in RUNS if run.status == "FINISHED" and run.plan is None]
    assert unplanned and shown == sum(len(runs) for runs in _planned().values())


def test_axes_stay_linear_when_the_figures_span_less_than_a_decade() -> None:
    found = pd.DataFrame({"run_id": ["a", "b"], "technique": ["lora", "full"], "predicted": [100 * MIB, 300 * MIB],
                          "measured": [110 * MIB, 290 * MIB], "error_pct": [-100 / 11, 100 / 29]})
    runs = pd.DataFrame({"run_id": ["a", "b"], "run_name": ["run-a", "run-b"]})
    figure = prediction_scatter(found, runs, BAND)
    assert "type" not in figure["layout"]["xaxis"] and "type" not in figure["layout"]["yaxis"]
    points = {trace["name"]: (trace["x"], trace["y"], trace["text"]) for trace in figure["data"][2:]}
    assert points == {"lora": ([100.0], [110.0], ["run-a"]), "full": ([300.0], [290.0], ["run-b"])}
    assert math.isclose(figure["data"][1]["x"][0], figure["data"][1]["y"][0])
    assert prediction_scatter(found.iloc[:0], runs, BAND) is None


def test_the_plan_at_the_largest_batch_met_is_compared_where_a_run_logged_it() -> None:
    from bench.report.prediction import points

    runs = pd.DataFrame({"run_id": ["a", "b"], "run_name": ["a", "b"], "technique": ["lora", "lora"],
                         "group": ["g", "g"], "status": ["FINISHED", "FINISHED"], "superseded": [False, False],
                         "plan_peak_bytes": [200.0, 120.0], "plan_met_peak_bytes": [110.0, math.nan],
                         "tensor_peak_bytes": [100.0, 100.0]})
    found = points(runs).set_index("run_id")
    # a: its batches stayed shorter than data.max_length, so the plan at what it met (110) is compared, not 200
    assert found.loc["a", "predicted"] == 110.0 and math.isclose(found.loc["a", "error_pct"], 10.0)
    assert found.loc["b", "predicted"] == 120.0  # no plan at the batch met: the plan made before training


def test_the_summary_says_how_many_runs_were_compared_at_max_length() -> None:
    from bench.report.prediction import points, summary

    runs = pd.DataFrame({"run_id": ["a", "b"], "run_name": ["a", "b"], "technique": ["lora", "lora"],
                         "group": ["g", "g"], "status": ["FINISHED", "FINISHED"], "superseded": [False, False],
                         "plan_peak_bytes": [200.0, 120.0], "plan_met_peak_bytes": [110.0, math.nan],
                         "tensor_peak_bytes": [100.0, 100.0]})
    text = summary(points(runs))
    assert text.startswith("2 runs with both figures; mean |error| 15.00 %, 2 outside ±5 %.")
    assert "1 of them logged no plan at the batch they met" in text
