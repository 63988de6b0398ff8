"""MLflow → pandas. The only module of the report that talks to MLflow, so a SQLite file and a tracking server
behave the same: runs come from `mlflow.search_runs`, histories and artifacts from `MlflowClient`."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

DEFAULT_EXPERIMENT = "bench"  # conf/tracker/mlflow.yaml's `experiment`
TIMELINE_WORD = "timeline"  # the monitor's artifact: any CSV whose name contains this word


class StoreError(Exception):
    """The store, experiment or sweep asked for is not there; the CLI prints it as one line (exit code 2)."""


def resolve_uri(explicit: str | None) -> str:
    """`--tracking-uri`, else $MLFLOW_TRACKING_URI, else ./mlflow.db, the same fallback as `bench run`."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def display_uri(uri: str) -> str:
    """The URI without user:password, so a report never carries credentials."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _client(uri: str) -> Any:
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)  # schema chatter when MLflow opens a SQLite file
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():  # MLflow would silently create an empty store; say what is missing instead
            raise StoreError(f"no MLflow store at {path}; run `bench run` first or pass --tracking-uri")
    return mlflow.MlflowClient(uri)


def load_runs(uri: str, *, experiment: str | None, sweep_id: str | None) -> pd.DataFrame:
    """Every run of the experiment (or of the sweep, across experiments) as `mlflow.search_runs` returns it."""
    import mlflow

    client = _client(uri)
    if experiment is None and sweep_id is None:
        experiment = DEFAULT_EXPERIMENT
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = sorted(e.name for e in client.search_experiments())
            raise StoreError(f"no experiment {experiment!r} at {display_uri(uri)}; experiments: {', '.join(names)}")
        experiment_ids = [found.experiment_id]
    else:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if sweep_id is not None and "'" in sweep_id:
        raise StoreError(f"sweep id {sweep_id!r} may not contain a quote")
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_ids=experiment_ids, max_results=1_000_000,
                              filter_string=f"tags.sweep_id = '{sweep_id}'" if sweep_id else "")
    if runs.empty:
        where = f"sweep {sweep_id!r}" if sweep_id else f"experiment {experiment!r}"
        raise StoreError(f"no runs in {where} at {display_uri(uri)}")
    return runs


def metric_histories(uri: str, run_ids: list[str], key: str) -> dict[str, pd.DataFrame]:
    """`key`'s history (step, value) for each run; callers pass only the runs a plot shows, since each costs a query."""
    client = _client(uri)
    histories = {}
    for run_id in run_ids:
        points = client.get_metric_history(run_id, key)
        if points:
            frame = pd.DataFrame({"step": [p.step for p in points], "value": [p.value for p in points]})
            histories[run_id] = frame.sort_values("step", kind="stable").reset_index(drop=True)
    return histories


def timelines(uri: str, run_ids: list[str]) -> dict[str, pd.DataFrame]:
    """The monitor's timeline CSV of each run that has one, numeric columns only; runs without one are left out."""
    client = _client(uri)
    found = {}
    with tempfile.TemporaryDirectory(prefix="bench-report-") as scratch:
        for run_id in run_ids:
            path = _find_timeline(client, run_id)
            if path is None:
                continue
            local = client.download_artifacts(run_id, path, str(Path(scratch) / run_id))
            frame = _numeric_csv(Path(local))
            if frame is not None:
                found[run_id] = frame
    return found


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
