"""One job of `bench run`: a single run, or one cell of a sweep.

In a sweep, a cell never stops the sweep: whatever goes wrong (a bad value for this cell, an exception,
out of memory, a NaN loss) is recorded as a FAILED child run with its `failure` kind, and the next cell
starts. A single run fails loudly instead, so a typo costs a second.
"""

from __future__ import annotations

import sys
from contextlib import suppress
from typing import Any

from bench.config import RunConfig, TrackerConfig, config_hash


def run_job(raw: dict[str, Any]) -> float | None:
    """Hydra's job: returns the final eval accuracy, or None for a skipped or failed sweep cell."""
    from bench.runner import run_experiment
    from bench.sweep import current_context, finished_cell

    sweep = current_context()
    if sweep is None:
        return run_experiment(RunConfig.from_dict(raw))["eval/accuracy"]
    context, number = sweep
    label = f"cell {number + 1}/{context.total_cells}"
    print(f"{label}: {' '.join(_cell_overrides())}", flush=True)
    try:
        config = RunConfig.from_dict(raw)
        done = None if config.force else finished_cell(context, _hash(config))
        if done:
            print(f"{label} skipped: already FINISHED as run {done} (force=true reruns it)", flush=True)
            return None
        return run_experiment(config, parent_run_id=context.parent_run_id)["eval/accuracy"]
    except Exception as error:  # noqa: BLE001 - a failed cell is a result; the sweep goes on
        from bench.tracking import failure_kind

        if not getattr(error, "bench_run_id", None):
            _record_failed_cell(raw, error, context)
        print(f"{label} failed ({failure_kind(error)}): {error}", file=sys.stderr, flush=True)
        return None


def _hash(config: RunConfig) -> str:
    """The config hash the run will carry: the device and dtypes it will resolve to are part of it."""
    from bench.precision import hardware_identity, pick_device

    return config.hash(hardware_identity(config.method, pick_device(config.trainer.device)))


def _cell_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)


def _record_failed_cell(raw: dict[str, Any], error: Exception, context: Any) -> None:
    """A cell that failed before its run started (e.g. `method.r=-1`) still gets a FAILED child run."""
    from bench.config import flatten
    from bench.tracking import Tracker

    values = {k: v for k, v in raw.items() if k not in ("hydra", "tracker", "output_dir", "force")}
    method, model, data = (raw.get(k) or {} for k in ("method", "model", "data"))
    spec = TrackerConfig(uri=context.tracking_uri, experiment=context.experiment)
    name = f"{method.get('name')}-{model.get('name')}-{data.get('name')}-s{raw.get('seed')}"
    with suppress(type(error)), Tracker(spec, run_name=name, parent_run_id=context.parent_run_id) as tracker:
        tracker.log_params(flatten(values))
        tracker.set_tags({"technique": method.get("name"), "model": model.get("name"), "dataset": data.get("name"),
                          "config_hash": config_hash(values), "sweep_id": context.sweep_id})
        raise error  # leaves the block the way any failed run does: FAILED, with failure and error tags

