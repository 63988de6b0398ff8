"""What a run measured, as its final metrics: throughput, the monitor's summary, the memory breakdown and
how far the prediction made before training was off."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from bench.core.metrics import TENSOR_PEAK_BYTES

if TYPE_CHECKING:
    from bench.measure.monitor.monitor import Monitor
    from bench.tracking.tracker import Tracker


def _error(predicted: float, actual: float | None) -> float | None:
    return 100.0 * (predicted - actual) / actual if actual else None


def prediction_errors(plan: Any, measured: dict[str, float]) -> dict[str, float]:
    """How far the plan at the largest batch the run met was from what the run measured (positive: predicted too
    much). `mem/prediction_error_pct`: the plan's allocator peak (`plan/met_allocator_peak_bytes`) against the
    allocator's own (`mem/allocator_peak_bytes`), an instrument that shares no code with the plan's trace;
    `mem/tensor_prediction_error_pct`: the traced tensor peak (`plan/met_peak_bytes`) against the tensor
    accounting's, which the trace shares; `mem/process_prediction_error_pct`: the process figure (CUDA: NVML's,
    CPU: peak RSS), where the plan's terms were calibrated; `mem/analytic_error_pct`: the formula's tensor peak."""
    if plan is None:
        return {}
    tensor, fit = measured.get(TENSOR_PEAK_BYTES), getattr(plan, "fit", None)
    errors = {"plan/met_peak_bytes": float(plan.peak_bytes), **(fit.metrics("plan/met_") if fit is not None else {})}
    found = {"mem/tensor_prediction_error_pct": _error(plan.peak_bytes, tensor)}
    if plan.analytic_peak_bytes:
        found["mem/analytic_error_pct"] = _error(plan.analytic_peak_bytes, tensor)
    if fit is not None:
        found["mem/prediction_error_pct"] = _error(fit.allocator_bytes, measured.get("mem/allocator_peak_bytes"))
        process = measured.get("mem/peak_nvml_process_bytes" if plan.device == "cuda" else "mem/peak_rss_bytes")
        if fit.overhead.calibrated:
            found["mem/process_prediction_error_pct"] = _error(fit.process_bytes, process)
    return errors | {name: value for name, value in found.items() if value is not None}


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
