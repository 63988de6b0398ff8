"""What a run measured, as its final metrics: throughput, the monitor's summary, the memory breakdown and
how far the prediction made before training was off."""

from __future__ import annotations

import sys
from typing import Any


def prediction_error(predicted: float, measured: dict[str, float]) -> tuple[dict[str, float], str]:
    """`mem/prediction_error_pct` (positive: predicted too much) and the metric it was compared with: the
    measured tensor peak, since the prediction counts tensors too (on CPU and CUDA alike)."""
    target = "mem/tensor_peak_bytes"
    actual = measured.get(target)
    if not actual:
        return {}, target
    return {"mem/prediction_error_pct": 100.0 * (predicted - actual) / actual}, target


def run_metrics(*, result: Any, monitor: Any, predicted: float | None) -> tuple[dict[str, float], dict[str, str]]:
    """Final metrics and tags from the training result and the finished monitor; `predicted`: the peak predicted
    before training, or None where there is no prediction."""
    measured = {"train/time_s": result.time_s, "train/steps": result.steps, "train/tokens": result.tokens,
                **result.timing, **monitor.summary(), **result.state_bytes}
    if predicted is None:
        return measured, monitor.tags()
    error, target = prediction_error(predicted, measured)
    return {**measured, **error}, {**monitor.tags(), "mem/prediction_compared_with": target}


def upload_timeline(monitor: Any, tracker: Any) -> None:
    """`monitor/timeline.csv` into the run's artifacts, if the monitor wrote one. Called on failure too, so
    a store error here is reported, never raised over the run's own error."""
    if monitor.timeline is None or not monitor.timeline.exists():
        return
    try:
        tracker.log_artifacts(monitor.timeline.parent, "monitor")
    except Exception as error:  # noqa: BLE001
        print(f"warning: the monitor timeline was not uploaded: {type(error).__name__}: {error}", file=sys.stderr)
