"""A SQLite MLflow store read straight from its tables: the frame `mlflow.search_runs` would return, metric
histories and local artifacts, without MLflow's ORM.

Why: over 10,000 runs, `mlflow.search_runs` spent most of the report's time building half a million SQLAlchemy
objects (one per metric, param and tag) and converting each run's times one at a time; a few SELECTs and a pandas
pivot give the same frame in a fraction of it, and a report of a SQLite store no longer imports MLflow at all.
Read-only (`mode=ro`): the report never writes to a store. The frame is checked against `mlflow.search_runs` on
the same store (tests/report/test_sqlite_store.py), so a change in MLflow's schema shows there. A tracking server,
or any other URI, still goes through MLflow (`bench.report.load`).
"""

from __future__ import annotations

import math
import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd

RUN_COLUMNS = ["run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time"]


def path_of(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _query(path: Path, sql: str, args: tuple = ()) -> pd.DataFrame:
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
        return pd.read_sql_query(sql, db, params=args)


def experiments(path: Path) -> dict[str, str]:
    """Active experiments, id → name, as `MlflowClient.search_experiments()` lists them (the default workspace)."""
    columns = set(_query(path, "SELECT name FROM pragma_table_info('experiments')")["name"])
    workspace = " AND workspace = 'default'" if "workspace" in columns else ""
    found = _query(path, f"SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active'{workspace}")
    return dict(zip(found["experiment_id"].astype(str), found["name"], strict=True))


def _picked(experiment_ids: list[str], sweep_id: str | None) -> tuple[str, tuple]:
    """A SELECT of the run ids wanted: the active runs of the experiments, or of those the sweep's: tagged with
    its id, or children of a parent run so tagged (`mlflow.parentRunId`)."""
    marks = ",".join("?" * len(experiment_ids))
    active = f"SELECT run_uuid FROM runs WHERE lifecycle_stage = 'active' AND experiment_id IN ({marks})"
    if sweep_id is None:
        return active, tuple(experiment_ids)
    tagged = "SELECT run_uuid FROM tags WHERE key = 'sweep_id' AND value = ?"
    parents = f"SELECT run_uuid FROM tags WHERE key = 'sweep_role' AND value = 'parent' AND run_uuid IN ({tagged}) " \
              f"AND run_uuid IN ({active})"
    children = f"SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId' AND value IN ({parents})"
    return (f"{active} AND (run_uuid IN ({tagged}) OR run_uuid IN ({children}))",
            (*experiment_ids, sweep_id, sweep_id, *experiment_ids))


def search_runs(path: Path, experiment_ids: list[str], sweep_id: str | None = None) -> pd.DataFrame:
    """The runs as `mlflow.search_runs` returns them: newest first, `metrics.<key>` (each metric's latest value),
    `params.<key>`, `tags.<key>`, times as UTC timestamps."""
    if not experiment_ids:
        return pd.DataFrame()
    picked, args = _picked(experiment_ids, sweep_id)
    runs = _query(path, "SELECT run_uuid AS run_id, experiment_id, status, artifact_uri, start_time, end_time FROM "
                  f"runs WHERE run_uuid IN ({picked}) ORDER BY start_time DESC, run_uuid", args)
    if runs.empty:
        return pd.DataFrame()
    runs["experiment_id"] = runs["experiment_id"].astype(str)
    for column in ("start_time", "end_time"):
        runs[column] = pd.to_datetime(runs[column], unit="ms", utc=True)
    metrics = _query(path, "SELECT run_uuid, key, CASE WHEN is_nan THEN NULL ELSE value END AS value FROM "
                     f"latest_metrics WHERE run_uuid IN ({picked})", args)
    metrics["value"] = metrics["value"].astype(float).fillna(math.nan)
    parts = [runs.set_index("run_id")]
    for prefix, frame in (("metrics", metrics),
                          ("params", _query(path, f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN "
                                                  f"({picked})", args)),
                          ("tags", _query(path, f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({picked})",
                                          args))):
        if not frame.empty:
            wide = frame.pivot(index="run_uuid", columns="key", values="value")
            parts.append(wide.rename(columns=lambda key, p=prefix: f"{p}.{key}"))
    joined = parts[0].join(parts[1:]) if len(parts) > 1 else parts[0]
    return joined.rename_axis("run_id").reset_index().rename_axis(columns=None)


def metric_histories(path: Path, run_ids: list[str], key: str) -> dict[str, pd.DataFrame]:
    """`key`'s history (step, value) of each run that logged it, sorted by step, in one query."""
    if not run_ids:
        return {}
    marks = ",".join("?" * len(run_ids))
    points = _query(path, "SELECT run_uuid, step, CASE WHEN is_nan THEN NULL ELSE value END AS value FROM metrics "
                    f"WHERE key = ? AND run_uuid IN ({marks}) ORDER BY timestamp, step", (key, *run_ids))
    points["value"] = points["value"].astype(float)
    return {run_id: rows[["step", "value"]].sort_values("step", kind="stable").reset_index(drop=True)
            for run_id, rows in points.groupby("run_uuid", sort=False)}


def local_folder(artifact_uri: str | None) -> Path | None:
    """The folder of a run's artifacts when they live on this machine (`file://` or a plain path), else None."""
    if not isinstance(artifact_uri, str) or not artifact_uri:
        return None
    parts = urlsplit(artifact_uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    return Path(artifact_uri) if parts.scheme == "" else None


def find_file(folder: Path, word: str, suffix: str, depth: int = 2) -> Path | None:
    """The first file within `depth` folders whose name contains `word` and ends in `suffix`: files before folders,
    each in name order, as MLflow lists artifacts."""
    try:
        entries = sorted(folder.iterdir(), key=lambda entry: entry.name)
    except OSError:
        return None
    for entry in entries:
        name = entry.name.lower()
        if entry.is_file() and word in name and name.endswith(suffix):
            return entry
    for entry in entries:
        if entry.is_dir() and depth > 1 and (hit := find_file(entry, word, suffix, depth - 1)):
            return hit
    return None
