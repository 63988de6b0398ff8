"""A run's own memory plan: made before its weights load (`bench plan`'s engine, for the run's config) and, after
training, made again at the largest batch the run met, which is what the measured peaks are compared with. Beside
the traced tensor peak it predicts the allocator's peak, what the CUDA allocator reserves and the process, with the
terms the trace cannot see taken from earlier runs in the run's own store (`bench.plan.overhead`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.config import RunConfig

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

    from bench.tracking.tracker import Tracker


def plan_before_training(cfg: RunConfig, *, config: PretrainedConfig, device: torch.device, tracker: Tracker) -> Any:
    """The run's memory plan (`bench plan`'s, for this config), logged as `plan/*`, with the analytic estimate as
    `mem/predicted_peak_bytes` where it covers the task, and where the terms beyond the tensors came from as the
    tag `plan/calibration`. Planning never fails a run: an error is a tag."""
    from bench.plan.engine import plan_memory
    from bench.plan.overhead import overhead_for, this_gpu, with_fit

    if not tracker.run_id:  # a rank other than 0 records nothing, so it plans nothing
        return None
    try:
        plan = plan_memory(cfg, device=device, config=config)
        gpu, title = this_gpu(device) if device.type == "cuda" else (None, "")
        plan = with_fit(plan, overhead_for(tracker.uri, cfg, device=device.type, gpu=gpu, gpu_title=title))
    except Exception as error:  # noqa: BLE001 - a model the tracer cannot follow still trains and is measured
        tracker.set_tags({"plan/error": f"{type(error).__name__}: {error}"[:1000]})
        return None
    tracker.log({**plan.metrics(), "plan/seconds": plan.seconds,
                 **({"mem/predicted_peak_bytes": plan.analytic_peak_bytes} if plan.analytic_peak_bytes else {})})
    tracker.set_tags({"plan/peak_phase": plan.peak_phase, "plan/notes": "; ".join(plan.notes),
                      "plan/calibration": plan.fit.overhead.describe()[:5000]})
    return plan


def plan_at_largest_batch(cfg: RunConfig, plan: Any, measured: dict[str, float], *, config: PretrainedConfig,
                          device: torch.device) -> Any:
    """The plan at the largest batch the run met (rows x padded length), logged as `plan/met_peak_bytes`: what
    the measured tensor peak is compared with. Real text is padded per batch, so the batches can stay shorter
    than `data.max_length`, which the plan made before training assumes (the worst case); a run whose
    batches reached it reuses that plan."""
    rows, length = int(measured.get("mem/largest_batch_rows", 0)), int(measured.get("mem/largest_batch_length", 0))
    if plan is None or not rows or (rows, length) == (plan.batch_size, plan.seq_len):
        return plan
    from dataclasses import replace

    from bench.plan.engine import plan_memory
    from bench.plan.overhead import with_fit

    try:
        met = plan_memory(replace(cfg, data=replace(cfg.data, max_length=length)), device=device, config=config,
                          batch_size=rows)
    except Exception:  # noqa: BLE001 - the same tracer planned this run before training; keep that plan
        return plan
    return with_fit(met, plan.fit.overhead) if plan.fit is not None else met
