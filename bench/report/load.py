"""MLflow → pandas. The only module of the report that talks to MLflow, so a SQLite file and a tracking server
behave the same: runs come from `mlflow.search_runs`, histories and artifacts from `MlflowClient`; a SQLite store is
read straight from its tables (`bench.report.sqlite_store`, the same frame, without MLflow's ORM or its import)."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from bench.report import sqlite_store

DEFAULT_EXPERIMENT = "bench"  # tracker.experiment's default (TrackerConfig); tests/unit/test_defaults.py checks it
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
TIMELINE_WORD = "timeline"  # the monitor's artifact: any CSV whose name contains this word


class StoreError(Exception):
    """The store, experiment or sweep asked for is not there; the CLI prints it as one line (exit code 2)."""


def resolve_uri(explicit: str | None) -> str:
    """`--tracking-uri`, else $MLFLOW_TRACKING_URI, else ./mlflow.db, the same fallback as `bench run`."""
    from bench.tracking.store import resolve_uri as store_uri

    return store_uri(explicit)


def display_uri(uri: str) -> str:
    """The URI without user:password, so a report never carries credentials."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _sqlite(uri: str) -> Path | None:
    """The store's file when it is SQLite (read directly), None otherwise; a missing file is a StoreError, since
    MLflow would silently create an empty store."""
    path = sqlite_store.path_of(uri)
    if path is not None and not path.is_file():
        raise StoreError(f"no MLflow store at {path}; run `bench run` first or pass --tracking-uri")
    return path


def _client(uri: str) -> Any:
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)  # schema chatter when MLflow opens a SQLite file
    _sqlite(uri)
    return mlflow.MlflowClient(uri)


def load_runs(uri: str, *, experiment: str | None, sweep_id: str | None) -> pd.DataFrame:
    """Every run of the experiment (or of the sweep, across experiments) as `mlflow.search_runs` returns it,
    plus `experiment_name`."""
    path = _sqlite(uri)
    if experiment is None and sweep_id is None:
        experiment = DEFAULT_EXPERIMENT
    names = sqlite_store.experiments(path) if path else {
        e.experiment_id: e.name for e in _client(uri).search_experiments()}
    if experiment is not None and experiment not in names.values():
        raise StoreError(f"no experiment {experiment!r} at {display_uri(uri)}; "
                         f"experiments: {', '.join(sorted(names.values()))}")
    experiment_ids = [i for i, name in names.items() if experiment in (None, name)]
    if sweep_id and "'" in sweep_id:
        raise StoreError(f"sweep id {sweep_id!r} may not contain a quote")
    if path:
        runs = sqlite_store.search_runs(path, experiment_ids, sweep_id)
    else:
        runs = _sweep_runs(uri, experiment_ids, sweep_id) if sweep_id else _search(uri, experiment_ids, "")
    if runs.empty:
        where = f"sweep {sweep_id!r}" if sweep_id else f"experiment {experiment!r}"
        raise StoreError(f"no runs in {where} at {display_uri(uri)}")
    return runs.assign(experiment_name=runs["experiment_id"].map(names))


def _search(uri: str, experiment_ids: list[str], filter_string: str) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(uri)  # search_runs has no uri argument
    return mlflow.search_runs(experiment_ids=experiment_ids, filter_string=filter_string, max_results=1_000_000)


def _sweep_runs(uri: str, experiment_ids: list[str], sweep_id: str) -> pd.DataFrame:
    """The runs tagged with the sweep id (its parent run among them) and every child of its parent runs, since
    a sweep's cells are linked to the parent by `mlflow.parentRunId` and need not carry the id themselves."""
    tagged = _search(uri, experiment_ids, f"tags.sweep_id = '{sweep_id}'")
    parents = tagged["run_id"][_tag(tagged, "sweep_role") == "parent"] if not tagged.empty else []
    children = [_search(uri, experiment_ids, f"tags.mlflow.parentRunId = '{parent}'") for parent in parents]
    frames = [frame for frame in (tagged, *children) if not frame.empty]
    if not frames:
        return tagged
    return pd.concat(frames, ignore_index=True).drop_duplicates("run_id").reset_index(drop=True)


def _tag(runs: pd.DataFrame, name: str) -> pd.Series:
    column = f"tags.{name}"
    return runs[column] if column in runs else pd.Series(None, index=runs.index, dtype=object)


def metric_histories(uri: str, run_ids: list[str], key: str) -> dict[str, pd.DataFrame]:
    """`key`'s history (step, value) for each run; callers pass only the runs a plot shows, since each costs a query."""
    from concurrent.futures import ThreadPoolExecutor

    path = _sqlite(uri)
    if path:
        return sqlite_store.metric_histories(path, run_ids, key)
    client = _client(uri)
    # A few requests in flight hide a tracking server's latency; on SQLite they cost nothing extra.
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = pool.map(lambda run_id: client.get_metric_history(run_id, key), run_ids)
        histories = {}
        for run_id, points in zip(run_ids, answers, strict=True):
            if points:
                frame = pd.DataFrame({"step": [p.step for p in points], "value": [p.value for p in points]})
                histories[run_id] = frame.sort_values("step", kind="stable").reset_index(drop=True)
    return histories


def timelines(uri: str, run_ids: list[str], artifact_uris: dict[str, str]) -> dict[str, pd.DataFrame]:
    """The monitor's timeline CSV of each run that has one, numeric columns only; runs without one are left out.
    Artifacts on this machine (`artifact_uris`: each run's, as the run frame holds them) are read in place; others
    are downloaded through MLflow."""
    found, remote = {}, []
    for run_id in run_ids:
        folder = sqlite_store.local_folder(artifact_uris.get(run_id))
        if folder is None:
            remote.append(run_id)
        elif csv := sqlite_store.find_file(folder, TIMELINE_WORD, ".csv"):
            frame = _numeric_csv(csv)
            if frame is not None:
                found[run_id] = frame
    return {**found, **(_downloaded(uri, remote) if remote else {})}


def _downloaded(uri: str, run_ids: list[str]) -> dict[str, pd.DataFrame]:
    """Timelines of runs whose artifacts live elsewhere, through MLflow's artifact client."""
    client = _client(uri)
    found = {}
    with tempfile.TemporaryDirectory(prefix="bench-report-") as scratch, _no_progress_bars():
        for run_id in run_ids:
            path = _find_timeline(client, run_id)
            if path is None:
                continue
            local = client.download_artifacts(run_id, path, str(Path(scratch) / run_id))
            frame = _numeric_csv(Path(local))
            if frame is not None:
                found[run_id] = frame
    return found


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """MLflow draws a progress bar per download: noise for a few small CSVs."""
    before = os.environ.get(_PROGRESS_BAR)
    os.environ[_PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = before


def _find_timeline(client: Any, run_id: str, folder: str | None = None, depth: int = 2) -> str | None:
    """The first artifact within `depth` folders whose name contains "timeline" and ends in .csv."""
    try:
        entries = client.list_artifacts(run_id, folder)
    except Exception:  # an artifact store we cannot list is the same as no timeline for the report
        return None
    for entry in entries:
        name = entry.path.rsplit("/", 1)[-1].lower()
        if not entry.is_dir and TIMELINE_WORD in name and name.endswith(".csv"):
            return entry.path
    for entry in entries:
        if entry.is_dir and depth > 1:
            hit = _find_timeline(client, run_id, entry.path, depth - 1)
            if hit:
                return hit
    return None


def _numeric_csv(path: Path) -> pd.DataFrame | None:
    """A CSV's numeric columns (whatever the monitor measured), or None when it has none or cannot be read."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError):
        return None
    numeric = frame.apply(pd.to_numeric, errors="coerce").dropna(axis=1, how="all")
    return numeric if not numeric.empty else None
