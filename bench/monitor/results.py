"""What a run measured, as its final metrics: throughput, the monitor's summary, the memory breakdown and
how far the prediction made before training was off."""

from __future__ import annotations

import sys
from typing import Any


def activations_peak_bytes(train_peak_allocated: int, parts: dict[str, float]) -> float:
    """CUDA only: the training peak of allocated memory minus its static parts (weights, gradients, optimizer
    state), i.e. activations and temporaries at the peak. Where the peak comes before the gradients exist
    (end of the forward pass) the gradients' share is subtracted anyway, so this is a slight lower bound."""
    static = sum(parts.get(key, 0.0) for key in ("mem/weights_bytes", "mem/grads_bytes", "mem/optimizer_bytes"))
    return max(0.0, train_peak_allocated - static)


def prediction_error(predicted: float, measured: dict[str, float], device: Any) -> tuple[dict[str, float], str]:
    """`mem/prediction_error_pct` (positive: predicted too much) and the metric it was compared with: torch's
    peak allocated on CUDA (the estimate counts tensors), the RSS increase over the baseline on CPU."""
    target = "mem/peak_allocated_bytes" if device.type == "cuda" else "mem/peak_rss_net_bytes"
    actual = measured.get(target)
    if not actual:
        return {}, target
    return {"mem/prediction_error_pct": 100.0 * (predicted - actual) / actual}, target


def run_metrics(*, result: Any, monitor: Any, static: dict[str, float], predicted: float | None,
                device: Any) -> tuple[dict[str, float], dict[str, str]]:
    """Final metrics and tags from the training result and the finished monitor; `predicted`: the peak predicted
    before training, or None where there is no prediction."""
    measured = {"train/time_s": result.time_s, "train/steps": result.steps, "train/tokens": result.tokens,
                **result.timing, **monitor.summary(), **result.state_bytes}
    train_phase = monitor.peaks.phases.get("train")
    if device.type == "cuda" and train_phase is not None:
        measured["mem/activations_peak_bytes"] = activations_peak_bytes(train_phase.allocated,
                                                                         {**static, **measured})
    if predicted is None:
        return measured, monitor.tags()
    error, target = prediction_error(predicted, measured, device)
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
