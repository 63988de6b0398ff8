"""A finished monitor's figures as metrics and tags.

Process memory is reported per phase: `mem/peak_<x>_bytes` is training's (evaluations between epochs left
out), with its baseline (taken before the model loads) and `_net_bytes`; `mem/load_peak_<x>_bytes` and
`mem/eval_peak_<x>_bytes` are loading's and evaluation's. Exact counters (VmHWM, torch's allocator) give the
peak where there is one, never below the largest sample of that phase.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.measure.monitor.monitor import Monitor

# Sampled column -> the memory metric stem, and whether an exact counter exists for it.
_MEMORY = {"rss_bytes": ("rss", True), "allocated_bytes": ("allocated", True), "reserved_bytes": ("reserved", True),
           "nvml_device_bytes": ("nvml_device", False), "nvml_process_bytes": ("nvml_process", False)}
_PHASE_PREFIX = {"train": "mem/peak", "load": "mem/load_peak", "eval": "mem/eval_peak"}


def monitor_metrics(monitor: Monitor) -> dict[str, float]:
    """Every monitor metric of a finished run."""
    sampler, times = monitor.sampler, monitor.times
    metrics: dict[str, float | None] = {"cpu/util_mean_pct": 100.0 * times["cpu"] / times["wall"],
                                        "monitor/samples": sampler.samples}
    for column, (stem, exact) in _MEMORY.items():
        if column in sampler.series:
            metrics.update(_memory(monitor, column, stem, exact))
    train = sampler.by_phase.get("train", {})
    if monitor.sampling and "rss_bytes" in train:  # with the thread off there are too few readings for a mean
        metrics["mem/mean_rss_bytes"] = train["rss_bytes"].mean
    metrics.update(_gpu(monitor))
    if monitor.tensors is not None:
        metrics.update(monitor.tensors.metrics())
    metrics.update(allocator_metrics(monitor))
    return {k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(v)}


def _memory(monitor: Monitor, column: str, stem: str, exact: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    for phase, prefix in _PHASE_PREFIX.items():
        series = monitor.sampler.by_phase.get(phase, {}).get(column)
        counted = monitor.peaks.phase_peak(stem, phase) if exact else None
        values = [v for v in (counted, series.peak if series is not None else None) if v is not None]
        if values:
            out[f"{prefix}_{stem}_bytes"] = max(values)
    baseline = monitor.baseline.get(column)
    if baseline is not None and f"mem/peak_{stem}_bytes" in out:
        out |= {f"mem/baseline_{stem}_bytes": baseline, f"mem/peak_{stem}_net_bytes": out[f"mem/peak_{stem}_bytes"]
                - baseline}
    return out


def allocator_metrics(monitor: Monitor) -> dict[str, float]:
    """`mem/allocator_peak_bytes`: the allocator's own training peak, an instrument apart from the tensor
    accounting. CUDA: the caching allocator's peak allocated of the training phase; CPU: its events over the
    watched micro-batches (`bench.measure.monitor.allocator`)."""
    if monitor.allocator is not None:
        return monitor.allocator.metrics()
    allocated = monitor.peaks.phase_peak("allocated", "train")
    return {"mem/allocator_peak_bytes": float(allocated)} if allocated else {}


def _gpu(monitor: Monitor) -> dict[str, float | None]:
    """Utilisation, power and energy of the training phase alone."""
    train = monitor.sampler.by_phase.get("train", {})
    if "gpu_util_pct" not in monitor.sampler.series:
        return {}
    util, power = train.get("gpu_util_pct"), train.get("power_w")
    energy, _ = monitor.training.energy()
    if energy is None and power is not None and power.mean is not None:  # no counter: mean power x time
        energy = power.mean * monitor.training.seconds
    return {"gpu/util_mean_pct": util.mean if util else None, "gpu/power_mean_w": power.mean if power else None,
            "gpu/energy_j": energy, "train/monitored_s": monitor.training.seconds}


def monitor_tags(monitor: Monitor) -> dict[str, str]:
    """What measured what, where the tensor peak was, and anything that did not work."""
    tags = {"monitor/backend": monitor.backend.name, "monitor/reason": monitor.reason,
            "mem/rss_peak_source": "kernel_vmhwm" if monitor.peaks.kernel else "rss_sampled"}
    if monitor.tensors is not None:
        tags |= monitor.tensors.tags()
    if monitor.allocator is not None:
        tags |= monitor.allocator.tags()
    elif monitor.device.type == "cuda":
        tags["mem/allocator_source"] = "cuda_max_memory_allocated"
    if monitor.sampler is not None and monitor.sampler.error:
        tags["monitor/error"] = monitor.sampler.error
    problems = monitor.backend.problems()
    if problems:
        tags["monitor/unsupported"] = ", ".join(f"{column} ({why})" for column, why in sorted(problems.items()))
    if monitor.backend.nvml_process_match():
        tags["monitor/nvml_process_match"] = monitor.backend.nvml_process_match()
    if monitor.sampler is not None and "gpu_util_pct" in monitor.sampler.series:
        energy, coverage = monitor.training.energy()
        tags["gpu/energy_source"] = "energy counter" if energy is not None else "mean power x time"
        tags["gpu/energy_coverage"] = coverage if energy is not None else "estimate"
    if monitor.modules_imported_late:  # after the baseline: their memory counts as the run's
        late = monitor.modules_imported_late
        tags["monitor/imported_late"] = ", ".join(late[:20]) + (f" (+{len(late) - 20} more)" if len(late) > 20 else "")
    return tags
