"""The report reads a SQLite store straight from its tables (`bench.report.sqlite_store`): the frame must be the one
`mlflow.search_runs` returns on the same store, run for run and column for column, so a change in MLflow's schema
fails here rather than in a report; the same for a sweep's runs, metric histories and local artifacts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from report_store import EXPERIMENT, SWEEP

from bench.report import load, sqlite_store


def _same(ours: pd.DataFrame, theirs: pd.DataFrame, *, ordered: bool = True) -> None:
    assert sorted(ours.columns) == sorted(theirs.columns)
    if not ordered:  # a sweep's runs came from two searches, concatenated: the same runs, in another order
        ours, theirs = ours.sort_values("run_id"), theirs.sort_values("run_id")
    assert list(ours["run_id"]) == list(theirs["run_id"])  # newest first, as MLflow orders them
    ours, theirs = ours[sorted(theirs.columns)], theirs[sorted(theirs.columns)]
    pd.testing.assert_frame_equal(ours.reset_index(drop=True), theirs.reset_index(drop=True), check_dtype=False)


@pytest.mark.parametrize("experiment", [EXPERIMENT, "fair", "deploy"])
def test_an_experiment_reads_as_mlflow_search_runs_returns_it(store: tuple[str, Path], experiment: str) -> None:
    uri, _ = store
    path = sqlite_store.path_of(uri)
    names = sqlite_store.experiments(path)
    import mlflow

    assert names == {e.experiment_id: e.name for e in mlflow.MlflowClient(uri).search_experiments()}
    ids = [i for i, name in names.items() if name == experiment]
    _same(sqlite_store.search_runs(path, ids), load._search(uri, ids, ""))


def test_a_sweep_reads_its_tagged_runs_and_its_parents_children(store: tuple[str, Path]) -> None:
    uri, _ = store
    path = sqlite_store.path_of(uri)
    ids = list(sqlite_store.experiments(path))
    ours = sqlite_store.search_runs(path, ids, SWEEP)
    _same(ours, load._sweep_runs(uri, ids, SWEEP), ordered=False)
    assert len(ours) > 2 and sqlite_store.search_runs(path, ids, "no-such-sweep").empty


def test_histories_and_local_artifacts_read_as_mlflow_gives_them(store: tuple[str, Path]) -> None:
    uri, _ = store
    path = sqlite_store.path_of(uri)
    runs = sqlite_store.search_runs(path, list(sqlite_store.experiments(path)))
    ids = list(runs["run_id"][:6])
    import mlflow

    client = mlflow.MlflowClient(uri)
    ours = sqlite_store.metric_histories(path, ids, "train/loss")
    for run_id in ids:
        points = sorted((p.step, p.value) for p in client.get_metric_history(run_id, "train/loss"))
        assert list(zip(ours[run_id]["step"], ours[run_id]["value"], strict=True)) == points
    with_timeline = runs[runs["tags.timeline"].notna()] if "tags.timeline" in runs else runs.iloc[:0]
    uris = dict(zip(runs["run_id"], runs["artifact_uri"], strict=True))
    found = load.timelines(uri, list(runs["run_id"]), uris)
    assert set(found) == set(load._downloaded(uri, list(runs["run_id"])))  # in place or downloaded: the same
    assert len(found) >= 1 or with_timeline.empty
