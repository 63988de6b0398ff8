"""What a run measured, as its final metrics: throughput, the monitor's summary, the memory breakdown and
how far the prediction made before training was off."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from bench.core.metrics import TENSOR_PEAK_BYTES

if TYPE_CHECKING:
    from bench.measure.monitor.monitor import Monitor
    from bench.tracking.tracker import Tracker


def prediction_errors(plan: Any, measured: dict[str, float]) -> dict[str, float]:
    """How far the plan at the largest batch the run met (`plan/met_peak_bytes`) was from the measured tensor
    peak (positive: predicted too much): `mem/prediction_error_pct` for the traced plan,
    `mem/analytic_error_pct` for the formula at the same batch."""
    actual = measured.get(TENSOR_PEAK_BYTES)
    if not actual or plan is None:
        return {}
    errors = {"plan/met_peak_bytes": float(plan.peak_bytes),
              "mem/prediction_error_pct": 100.0 * (plan.peak_bytes - actual) / actual}
    if plan.analytic_peak_bytes:
        errors["mem/analytic_error_pct"] = 100.0 * (plan.analytic_peak_bytes - actual) / actual
    return errors


def run_metrics(*, result: Any, monitor: Monitor, plan: Any) -> tuple[dict[str, float], dict[str, str]]:
    """Final metrics and tags from the training result and the finished monitor; `plan`: the memory plan at the
    largest batch the run met (bench.plan.engine.MemoryPlan), or None where there is none."""
    measured = {"train/time_s": result.time_s, "train/steps": result.steps, "train/tokens": result.tokens,
                **result.timing, **monitor.summary(), **result.state_bytes}
    return {**measured, **prediction_errors(plan, measured)}, monitor.tags()


def upload_timeline(monitor: Monitor, tracker: Tracker) -> None:
    """`monitor/timeline.csv` and `monitor/profile/` (the trace) into the run's artifacts, where the monitor wrote
    them. Called on failure too, so a store error here is reported, never raised over the run's own error."""
    folders = set()  # the profile sits beside the timeline, so usually one folder
    if monitor.timeline is not None and monitor.timeline.exists():
        folders.add(monitor.timeline.parent)
    if monitor.profiler is not None and monitor.profiler.folder.exists():
        folders.add(monitor.profiler.folder.parent)
    try:
        for folder in folders:
            tracker.log_artifacts(folder, "monitor")
    except Exception as error:  # noqa: BLE001
        print(f"warning: the monitor timeline was not uploaded: {type(error).__name__}: {error}", file=sys.stderr)
