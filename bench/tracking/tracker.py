"""The MLflow run: params, tags, buffered metrics, artifacts, and the right status however the run ends."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.config import ConfigError, TrackerConfig
from bench.tracking.store import (
    check_reachable,
    close_stale_runs,
    open_store,
    process_tags,
    redact,
    redact_text,
    resolve_uri,
    retrying,
)
from bench.tracking.ui_meta import NOTE, failed_note, mark_training_experiment

_BATCH = 200  # metrics per log_batch call (MLflow accepts up to 1000)
STRICT_METRICS = "BENCH_STRICT_METRICS"  # "1": an unregistered metric name raises (tests/conftest.py sets it)
_WARNED: set[str] = set()


def tracking_uri(spec: TrackerConfig) -> str:
    """`tracker.uri`, else $MLFLOW_TRACKING_URI, else the embedded SQLite file in the working directory."""
    return resolve_uri(spec.uri)


def failure_kind(error: BaseException) -> str:
    """The `failure` tag: oom, nan, config or error."""
    from bench.core.errors import NonFiniteLoss

    if isinstance(error, ConfigError):
        return "config"
    if isinstance(error, NonFiniteLoss):
        return "nan"
    if type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower():
        return "oom"
    return "error"


def check_metric_names(names: Iterable[str]) -> None:
    """Every name sent to MLflow must have its definition in bench.core.metrics. Where that fails is a choice:
    with $BENCH_STRICT_METRICS=1, which tests/conftest.py sets for every test and the processes it starts, an
    unregistered name raises UnregisteredMetric at the call that logs it, so a typo fails the suite at its source.
    Without it (a user's run) the metric is logged anyway, with one warning per name: a name must never cost hours
    of training, and the figure stays in the store, only unknown to the report and the README until registered."""
    from bench.core.metrics import UnregisteredMetric, definition

    for name in names:
        try:
            definition(name)
        except UnregisteredMetric as error:
            if os.environ.get(STRICT_METRICS) == "1":
                raise
            if name not in _WARNED:
                _WARNED.add(name)
                print(f"warning: {error}; logged anyway", file=sys.stderr)


class Tracker:
    """`with Tracker(spec, run_name=...) as tracker:` one MLflow run, closed FINISHED, FAILED or KILLED.
    `subject`: what the run is, in words (`LoRA r=8 on minilm, tweets (seed 42)`): its description in the MLflow
    UI from the start, completed by `describe` or, when the run fails, by how it ended."""

    def __init__(self, spec: TrackerConfig, *, run_name: str, parent_run_id: str | None = None,
                 subject: str | None = None) -> None:
        self.spec, self.run_name, self.uri = spec, run_name, tracking_uri(spec)
        self.parent_run_id, self.subject = parent_run_id, subject
        self.run_id, self.experiment_id = "", ""
        self._pending: list[Any] = []
        self._client: Any = None

    def __enter__(self) -> Tracker:
        import mlflow

        check_reachable(self.uri)
        logging.getLogger("alembic").setLevel(logging.WARNING)  # schema set-up chatter on a new store
        experiment = open_store(self.uri, self.spec.experiment)
        self.experiment_id = experiment.experiment_id
        self._client = mlflow.MlflowClient(self.uri)
        mark_training_experiment(self._client, experiment)  # the UI opens it on its runs, not on GenAI traces
        retrying(lambda: close_stale_runs(self._client, experiment.experiment_id))
        # the caller's tags (a fair comparison's fair/*) go on at creation, so no run is ever seen without them
        tags = {**{key: _as_text(value) for key, value in redact(self.spec.tags).items()}, **process_tags()}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id  # nests the run under its sweep in the UI
        if self.subject:
            tags[NOTE] = redact_text(self.subject)
        name = redact_text(self.run_name)
        run = retrying(lambda: self._client.create_run(experiment.experiment_id, run_name=name, tags=tags))
        self.run_id = run.info.run_id
        return self

    @property
    def client(self) -> Any:
        """The run's MlflowClient, for what the tracker has no method of its own."""
        return self._client

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, _as_text(value)) for key, value in sorted(redact(params).items())]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            batch = items[start:start + 100]
            retrying(lambda batch=batch: self._client.log_batch(self.run_id, params=batch))

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, _as_text(v)) for k, v in sorted(redact(tags).items())]
        retrying(lambda: self._client.log_batch(self.run_id, tags=items))

    def describe(self, text: str) -> None:
        """The run's description in the MLflow UI (`mlflow.note.content`)."""
        self.set_tags({NOTE: text})

    def log_inputs(self, inputs: list[Any]) -> None:
        """MLflow `DatasetInput`s (`bench.tracking.datasets`): the UI's Dataset column and dataset filter."""
        retrying(lambda: self._client.log_inputs(self.run_id, datasets=inputs))

    def log(self, metrics: dict[str, float], step: int = 0) -> None:
        """Queue metrics; they are written in batches, so logging costs the loop almost nothing. Each name is
        checked against the registry first (`check_metric_names`)."""
        from mlflow.entities import Metric

        check_metric_names(metrics)
        now = int(time.time() * 1000)
        self._pending += [Metric(key, float(value), now, step) for key, value in metrics.items()]
        if len(self._pending) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
            retrying(lambda batch=batch: self._client.log_batch(self.run_id, metrics=batch))

    def log_artifacts(self, folder: str | Path, artifact_path: str) -> None:
        self._client.log_artifacts(self.run_id, str(folder), artifact_path)

    def log_artifact(self, path: str | Path, artifact_path: str) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def __exit__(self, exc_type: Any, error: BaseException | None, _tb: Any) -> None:
        if self._client is None or not self.run_id:
            return
        try:
            self.flush()  # the metrics logged so far are part of the record, whatever happened
        finally:
            self._close(error)

    def _close(self, error: BaseException | None) -> None:
        if error is not None:
            error.bench_run_id = self.run_id  # type: ignore[attr-defined]  # "this failure is on record"
        if error is None:
            retrying(lambda: self._client.set_terminated(self.run_id, "FINISHED"))
            return
        if isinstance(error, KeyboardInterrupt | SystemExit):
            self.set_tags({"failure": "killed", "error": f"interrupted ({type(error).__name__})",
                           **self._failed_note("interrupted", "")})
            retrying(lambda: self._client.set_terminated(self.run_id, "KILLED"))
            return
        kind, message = failure_kind(error), f"{type(error).__name__}: {error}"
        self.set_tags({"failure": kind, "error": message[:4000], **self._failed_note(f"failed ({kind})", message)})
        retrying(lambda: self._client.set_terminated(self.run_id, "FAILED"))

    def _failed_note(self, ending: str, message: str) -> dict[str, str]:
        return {NOTE: failed_note(self.subject, failure=ending, error=message)} if self.subject else {}


def _as_text(value: Any) -> str:
    """Param/tag values as MLflow stores them (strings of at most 6000 characters)."""
    text = "null" if value is None else str(value)
    return text[:6000]
