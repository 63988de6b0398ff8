"""Sweeps: one MLflow parent run per sweep, resumable cells, and failures recorded as data.

Hydra runs the grid; this module only adds what Hydra does not know about MLflow:
- `SweepCallback.on_multirun_start` (in the launching process) finds or creates the parent run and writes
  `bench_sweep.json` into the sweep folder, where every cell's job reads it, in this process or in a joblib,
  SLURM or Ray worker alike (a shared filesystem is what Hydra's launchers assume too).
- The sweep id is a hash of the sweep's overrides and experiment, so running the same command again
  lands in the same parent, and cells already FINISHED with the same config hash are skipped.
- The job skips a FINISHED cell, else runs the cell in a fresh process of its own (`bench.run.cells`,
  `bench.run.isolation`), so no cell's memory figures carry what an earlier cell left in a process. A process that
  dies without a result leaves its run RUNNING: `close_crashed_cell` finds it among the parent's children by its
  `process/pid` tag and closes it FAILED. Every cell's run is tagged `timing/shared` (`bench.run.overlap`).
- `on_multirun_end` gives the parent the data sets its cells logged, writes the sweep's report into the sweep's
  folder and the parent's artifacts (`report/index.html`, which the MLflow UI shows; `tracker.log_report=false`
  turns it off), closes it with the cell counts and says where the report is, on disk and in the UI.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback

from bench.run import overlap

if TYPE_CHECKING:
    from omegaconf import DictConfig

SWEEP_FILE = "bench_sweep.json"
REPORT_ARTIFACT = "report"  # the parent run's artifact folder holding the sweep's report (index.html, ...)
LAST_SUMMARY: dict[str, int] = {}  # read by the CLI after Hydra returns, to set the exit code
ACTIVE: list[SweepContext] = []  # the sweep this process launched, until it ends (for Ctrl-C)


@dataclass(frozen=True)
class SweepContext:
    """What every cell of a sweep needs to know about the sweep."""

    sweep_id: str
    parent_run_id: str
    total_cells: int
    tracking_uri: str
    experiment: str


def sweep_overrides(config: DictConfig) -> list[str]:
    """The sweep as overrides: the command line's plus those of a `sweep=` preset (`hydra.sweeper.params`)."""
    from omegaconf import OmegaConf

    preset = config.hydra.sweeper.get("params")
    params = OmegaConf.to_container(preset, resolve=True) if preset else {}
    return sorted([*config.hydra.overrides.task, *(f"{key}={value}" for key, value in params.items())])


def count_cells(overrides: list[str]) -> int:
    """Grid size: the product of the number of values of each sweep override (`a=1,2` counts 2)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    sizes = {o.key_or_group: len(list(o.sweep_string_iterator())) for o in parsed if o.is_sweep_override()}
    return math.prod(sizes.values()) if sizes else 1


def swept_overrides(overrides: list[str]) -> list[str]:
    """The overrides that make the grid (`method=full,lora`), as given; not `tracker.tags={a:1,b:2}`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [text for text, override in zip(overrides, parsed, strict=True) if override.is_sweep_override()]


def _client(uri: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(uri)


class SweepCallback(Callback):
    """Hydra callback that owns the sweep's parent run."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from bench.config import config_hash
        from bench.run.console import log_line
        from bench.tracking.tracker import tracking_uri

        uri = tracking_uri(_tracker_spec(config))
        experiment = str(config.tracker.experiment)
        overrides = sweep_overrides(config)
        # `force=true` reruns the cells of the same sweep, so it must not make it a different sweep.
        identity = [o for o in overrides if not o.startswith("force=")]
        sweep_id = config_hash({"overrides": identity, "experiment": experiment})
        cells = count_cells(overrides)
        parent = _find_or_create_parent(uri, experiment, sweep_id, overrides, cells)
        context = SweepContext(sweep_id, parent, cells, uri, experiment)
        folder = Path(config.hydra.sweep.dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SWEEP_FILE).write_text(json.dumps(asdict(context)))
        overlap.clear(folder)  # which cells overlapped (tag `timing/shared`): this launch's alone
        ACTIVE[:] = [context]
        print(f"sweep {sweep_id}: {context.total_cells} cells, parent run {parent} in experiment '{experiment}'")
        if line := log_line(folder.resolve() / "<cell>" / "bench.log"):
            print(line)  # once for the sweep: each cell's messages go to its own folder

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from bench.report import report_hint
        from bench.tracking.store import redact_text
        from bench.tracking.tracker import check_metric_names
        from bench.tracking.ui_meta import NOTE, sweep_note, ui_address, ui_link, view_line

        context = load_context(Path(config.hydra.sweep.dir))
        if context is None:
            return
        summary = summarize(context)
        LAST_SUMMARY.clear()
        LAST_SUMMARY.update(summary)
        client = _client(context.tracking_uri)
        counts = {f"sweep/{key}": value for key, value in summary.items()}
        check_metric_names(counts)
        for name, value in counts.items():
            client.log_metric(context.parent_run_id, name, value)
        hint = report_hint(context.experiment, context.sweep_id)
        experiment_id = client.get_run(context.parent_run_id).info.experiment_id
        _log_cell_inputs(client, context, experiment_id)
        folder = Path(config.hydra.sweep.dir).resolve() / REPORT_ARTIFACT  # beside the cells' folders
        logged = (log_report(context, folder) if summary["cells"] and config.tracker.get("log_report", True)
                  else None)
        overrides = sweep_overrides(config)
        client.set_tag(context.parent_run_id, NOTE, redact_text(sweep_note(
            sweep_id=context.sweep_id, overrides=overrides, swept=swept_overrides(overrides), summary=summary,
            total_cells=context.total_cells, report=logged, hint=hint)))
        client.set_terminated(context.parent_run_id, "FAILED" if summary["failed"] == summary["cells"] else "FINISHED")
        ACTIVE.clear()
        address = ui_address(context.tracking_uri)
        report = (f"{folder / 'index.html'} (in the MLflow UI: "
                  f"{ui_link(experiment_id, context.parent_run_id, artifact=logged, address=address)})"
                  if logged else f"`{hint}` writes it")
        print(f"sweep {context.sweep_id} done: {summary['finished']} finished, {summary['failed']} failed "
              f"of {summary['cells']} distinct cells, in experiment '{context.experiment}' at {context.tracking_uri}\n"
              f"report: {report}\n{view_line(context.tracking_uri, ui_link(experiment_id, address=address))}")


def log_report(context: SweepContext, folder: Path) -> str | None:
    """Write the sweep's report (`bench report --sweep <id>`) into `folder` and the parent run's artifacts, where
    the MLflow UI shows it; returns its artifact path, or None, with a warning, when it could not: a report is never
    a reason to fail a sweep whose cells ran."""
    from bench.report.build import build_report

    try:
        build_report(uri=context.tracking_uri, experiment=context.experiment, sweep_id=context.sweep_id, out=folder)
        _client(context.tracking_uri).log_artifacts(context.parent_run_id, str(folder), REPORT_ARTIFACT)
    except Exception as error:  # noqa: BLE001 - no runs to report, an unwritable artifact store, a report bug
        print(f"warning: the sweep's report was not logged to its parent run ({type(error).__name__}: {error}); "
              "`bench report` still writes it", file=sys.stderr)
        return None
    return f"{REPORT_ARTIFACT}/index.html"


def _log_cell_inputs(client: Any, context: SweepContext, experiment_id: str) -> None:
    """The data sets the cells logged, once each, on the parent run too: the runs table's one row per sweep then
    shows them, and filtering on a data set keeps the sweep's row. Never a reason to fail the sweep."""
    from bench.tracking.datasets import distinct_inputs
    from bench.tracking.store import retrying

    try:
        cells = retrying(lambda: client.search_runs(
            [experiment_id], f"tags.mlflow.parentRunId = '{context.parent_run_id}'", max_results=1000))
        inputs = distinct_inputs(item for run in cells for item in run.inputs.dataset_inputs)
        if inputs:
            retrying(lambda: client.log_inputs(context.parent_run_id, datasets=inputs))
    except Exception as error:  # noqa: BLE001 - the cells' own inputs are recorded either way
        print(f"warning: the sweep's data sets were not logged to its parent run ({type(error).__name__}: {error})",
              file=sys.stderr)


def interrupt_active_sweep() -> None:
    """Ctrl-C or SIGTERM stopped the sweep: its parent run ends KILLED rather than staying RUNNING."""
    for context in ACTIVE:
        _client(context.tracking_uri).set_terminated(context.parent_run_id, "KILLED")
    ACTIVE.clear()


def _tracker_spec(config: DictConfig) -> Any:
    from bench.config import TrackerConfig

    return TrackerConfig(uri=config.tracker.uri, experiment=str(config.tracker.experiment))


def _find_or_create_parent(uri: str, experiment: str, sweep_id: str, overrides: list[str], cells: int) -> str:
    """The parent run of this sweep: reopened when the same sweep runs again, created otherwise."""

    from bench.tracking.store import check_reachable, open_store, process_tags, redact_text
    from bench.tracking.ui_meta import NOTE, mark_training_experiment, sweep_note, sweep_title

    check_reachable(uri)
    # Created here, in the launching process, before any cell starts.
    found_experiment = open_store(uri, experiment)
    experiment_id = found_experiment.experiment_id
    client = _client(uri)
    mark_training_experiment(client, found_experiment)  # the UI opens it on its runs, not on GenAI traces
    found = client.search_runs([experiment_id], f"tags.sweep_id = '{sweep_id}' and tags.sweep_role = 'parent'",
                               max_results=1)
    clean, swept = [redact_text(o) for o in overrides], [redact_text(o) for o in swept_overrides(overrides)]
    running = sweep_note(sweep_id=sweep_id, overrides=clean, swept=swept, summary=None, total_cells=cells, report=None,
                         hint="")
    tags = {**process_tags(), "sweep_id": sweep_id, "sweep_role": "parent", "sweep_overrides": " ".join(clean),
            NOTE: running}
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        for key, value in {**process_tags(), NOTE: running}.items():  # this process owns it now
            client.set_tag(run_id, key, value)
        return run_id
    return client.create_run(experiment_id, run_name=sweep_title(swept, sweep_id), tags=tags).info.run_id


def load_context(folder: Path) -> SweepContext | None:
    """The sweep this folder belongs to, if any."""
    path = folder / SWEEP_FILE
    return SweepContext(**json.loads(path.read_text())) if path.is_file() else None


def current_context() -> tuple[SweepContext, int] | None:
    """Inside a Hydra multirun job: the sweep and this cell's number; None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra_config = HydraConfig.get()
    context = load_context(Path(hydra_config.sweep.dir))
    return (context, int(hydra_config.job.num)) if context else None


def finished_cell(context: SweepContext, config_hash: str) -> str | None:
    """The id of a FINISHED child of this sweep with the same config hash, if there is one."""
    import mlflow

    mlflow.set_tracking_uri(context.tracking_uri)
    experiment = mlflow.get_experiment_by_name(context.experiment)
    query = (f"tags.mlflow.parentRunId = '{context.parent_run_id}' and tags.config_hash = '{config_hash}' "
             "and attributes.status = 'FINISHED'")
    found = _client(context.tracking_uri).search_runs([experiment.experiment_id], query, max_results=1)
    return found[0].info.run_id if found else None


def find_cell_run(context: SweepContext, *, pid: int, since: float) -> Any:
    """The run a cell's process `pid` started: the sweep's child with that `process/pid`, started since `since` (a
    time.time()), which tells it from an older run of a process with the same, since reused, PID; None if none."""
    from bench.tracking.store import retrying

    client = _client(context.tracking_uri)
    experiment = retrying(lambda: client.get_experiment_by_name(context.experiment))
    query = (f"tags.mlflow.parentRunId = '{context.parent_run_id}' and tags.`process/pid` = '{pid}' "
             f"and attributes.start_time >= {int(since * 1000)}")
    found = retrying(lambda: client.search_runs([experiment.experiment_id], query, max_results=1))
    return found[0] if found else None


def close_crashed_cell(context: SweepContext, *, pid: int, since: float, error: str) -> bool:
    """A cell's process died without closing its run: the run it started (`find_cell_run`) ends FAILED with
    `failure=crash` and `error`. False when the process had started no run."""
    from bench.tracking.store import retrying

    found = find_cell_run(context, pid=pid, since=since)
    if found is None:
        return False
    run, client = found.info, _client(context.tracking_uri)
    # KILLED: a parallel cell's check for stale runs on this host saw the dead process first. FINISHED or FAILED:
    # the run closed before the process died, and keeps its own status.
    if run.status in ("RUNNING", "KILLED"):
        from mlflow.entities import RunTag

        from bench.tracking.ui_meta import NOTE, failed_note

        subject = found.data.tags.get(NOTE, "").partition(": ")[0]  # what the run is, before how it ended
        tags = [RunTag("failure", "crash"), RunTag("error", error),
                *([RunTag(NOTE, failed_note(subject, failure="failed (crash)", error=error))] if subject else [])]
        retrying(lambda: client.log_batch(run.run_id, tags=tags))
        retrying(lambda: client.set_terminated(run.run_id, "FAILED"))
    return True


def summarize(context: SweepContext) -> dict[str, int]:
    """Distinct cells of the sweep by their latest status (a retried cell counts once, as it ended last)."""
    import mlflow

    mlflow.set_tracking_uri(context.tracking_uri)
    experiment = mlflow.get_experiment_by_name(context.experiment)
    runs = mlflow.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{context.parent_run_id}'",
                              order_by=["attributes.start_time ASC"])
    if runs.empty:
        return {"cells": 0, "finished": 0, "failed": 0}
    latest = runs.groupby("tags.config_hash")["status"].agg(lambda statuses: "FINISHED"
                                                             if (statuses == "FINISHED").any() else statuses.iloc[-1])
    return {"cells": len(latest), "finished": int((latest == "FINISHED").sum()),
            "failed": int((latest != "FINISHED").sum())}
