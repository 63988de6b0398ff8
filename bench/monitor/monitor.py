"""The run's resource monitor: a baseline before the model loads, exact peaks, a sampled timeline, summaries.

    with Monitor.for_device(device, spec, timeline_dir=folder) as monitor:
        ...load the model...
        monitor.mark_training()
        ...train, calling monitor.on_step(step) and logging monitor.on_flush(step)...
    metrics, tags = monitor.summary(), monitor.tags()

Peaks come from counters that cannot miss a spike (the kernel's VmHWM, torch's allocator peaks), with
the sampler's largest reading as a floor; NVML peaks, means, utilisation and power come from samples.
`spec.enabled=False` keeps the counters and drops the thread (unless the kernel counter is missing, when
the thread is the only way to see the RSS peak).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from bench.config import MonitorConfig
from bench.monitor.backends import Backend, ProcessSource, TorchCudaSource, cpu_seconds, pick_backend
from bench.monitor.peak import PeakMemory
from bench.monitor.sampler import Sampler

TIMELINE = "timeline.csv"
# Sampled column -> the memory metric stem: mem/baseline_<stem>_bytes, mem/peak_<stem>_bytes, ..._net_bytes.
_MEMORY = {"rss_bytes": "rss", "allocated_bytes": "allocated", "reserved_bytes": "reserved",
           "nvml_device_bytes": "nvml_device", "nvml_process_bytes": "nvml_process"}
# Sampled column -> the coarse per-step metric logged at each flush (peak for memory, mean for rates).
_COARSE = {"rss_bytes": "monitor/rss_bytes", "allocated_bytes": "monitor/allocated_bytes",
           "reserved_bytes": "monitor/reserved_bytes", "nvml_device_bytes": "monitor/nvml_device_bytes",
           "nvml_process_bytes": "monitor/nvml_process_bytes", "gpu_util_pct": "monitor/gpu_util_pct",
           "power_w": "monitor/power_w"}


class Monitor:
    """Resource measurement over a run; a context manager so the thread stops however the run ends."""

    def __init__(self, device: Any, spec: MonitorConfig, backend: Backend, reason: str, *,
                 timeline_dir: Path | None, sample: bool) -> None:
        self.device, self.spec, self.backend, self.reason = device, spec, backend, reason
        self.timeline = timeline_dir / TIMELINE if timeline_dir is not None and sample else None
        self.peaks = PeakMemory(device)
        self.sampler: Sampler | None = None
        self.baseline: dict[str, float | None] = {}
        self._sample, self._phase = sample, "run"
        self._times: dict[str, float] = {}
        self._flush_at: tuple[float, float] = (0.0, 0.0)
        self._energy_from_power = 0.0

    @classmethod
    def for_device(cls, device: Any, spec: MonitorConfig | None = None, *,
                   timeline_dir: Path | None = None) -> Monitor:
        """The backend is picked here, once: NVML on CUDA when it answers, else the CPU backend."""
        spec = spec or MonitorConfig()
        if spec.enabled:
            backend, reason = pick_backend(device)
        else:  # the counters still need the baseline readings; no NVML, no thread
            sources: list[Any] = [ProcessSource()] + ([TorchCudaSource(device)] if device.type == "cuda" else [])
            backend, reason = Backend("off", sources), "monitor.enabled=false"
        return cls(device, spec, backend, reason, timeline_dir=timeline_dir, sample=spec.enabled)

    def __enter__(self) -> Monitor:
        self.peaks.start()  # first, since on CUDA it creates the context: the baseline then includes it
        self._sample = self._sample or not self.peaks.kernel  # no kernel counter: sampling is the only peak
        if self.timeline is not None:
            self.timeline.parent.mkdir(parents=True, exist_ok=True)
        self.backend.open()
        self.sampler = Sampler(self.backend, interval_s=self.spec.interval_s, timeline=self.timeline)
        self.baseline = dict(zip(self.backend.columns, self.sampler.sample(), strict=True))
        self._times = {"wall": time.perf_counter(), "cpu": cpu_seconds()}
        self._flush_at = (self._times["wall"], self._times["cpu"])
        if self._sample:
            self.sampler.start()
        return self

    def mark_training(self) -> None:
        """The model is loaded; training starts. Splits the peaks into `load` and `train` phases."""
        self.peaks.split("load")
        self._phase = "train"
        if self.sampler is not None:
            self.sampler.new_phase("train")

    def on_step(self, step: int) -> None:
        """The loop's step counter, stamped on each timeline row (a plain attribute write: free)."""
        if self.sampler is not None:
            self.sampler.step = step

    def on_flush(self, step: int) -> dict[str, float]:
        """Coarse metrics since the last flush, for the MLflow UI's charts: memory peaks, mean util and power."""
        now, used = time.perf_counter(), cpu_seconds()
        last_now, last_used = self._flush_at
        self._flush_at = (now, used)
        metrics = {"monitor/cpu_util_pct": 100.0 * (used - last_used) / (now - last_now)} if now > last_now else {}
        if self.sampler is None or not self._sample:
            return metrics
        for column, (mean, peak) in self.sampler.window().items():
            value = mean if column in ("gpu_util_pct", "power_w") else peak
            if column in _COARSE and value is not None:
                metrics[_COARSE[column]] = value
        return metrics

    def __exit__(self, *exc: object) -> None:
        self._times = {"wall": time.perf_counter() - self._times["wall"], "cpu": cpu_seconds() - self._times["cpu"]}
        try:
            if self.sampler is not None:
                self.sampler.stop()
        finally:
            self.peaks.split(self._phase)
            self.backend.close()

    def summary(self) -> dict[str, float]:
        """Every monitor metric of the run (after the block): baselines, peaks raw and net, means, GPU totals."""
        assert self.sampler is not None, "summary() needs a finished `with Monitor...` block"
        series = self.sampler.series
        metrics: dict[str, float] = {"cpu/util_mean_pct": 100.0 * self._times["cpu"] / self._times["wall"],
                                     "monitor/samples": self.sampler.samples}
        for column, stem in _MEMORY.items():
            if column in series:
                metrics.update(self._memory(stem, column))
        if self._sample:  # with the thread off there are only two readings, no mean worth the name
            metrics["mem/mean_rss_bytes"] = series["rss_bytes"].mean
        metrics.update(self._gpu())
        metrics["mem/peak_bytes"] = self._train_peak()
        return {k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(v)}

    def _memory(self, stem: str, column: str) -> dict[str, float]:
        """Peak = the exact counter where there is one (RSS, torch), never below the largest sample."""
        series, baseline = self.sampler.series[column], self.baseline.get(column)  # type: ignore[union-attr]
        exact = self.peaks.run_peak(stem) if stem in ("rss", "allocated", "reserved") else None
        peaks = [value for value in (exact, series.peak) if value is not None]
        if not peaks:
            return {}
        peak = max(peaks)
        out = {f"mem/peak_{stem}_bytes": peak}
        if baseline is not None:
            out |= {f"mem/baseline_{stem}_bytes": baseline, f"mem/peak_{stem}_net_bytes": peak - baseline}
        return out

    def _gpu(self) -> dict[str, float | None]:
        series = self.sampler.series  # type: ignore[union-attr]
        if "gpu_util_pct" not in series:
            return {}
        energy = series["energy_j"].last
        return {"gpu/util_mean_pct": series["gpu_util_pct"].mean, "gpu/power_mean_w": series["power_w"].mean,
                "gpu/energy_j": energy if energy is not None else self._power_integral()}

    def _power_integral(self) -> float | None:
        """Energy as mean power x time, where the GPU has no energy counter (pre-Volta)."""
        power = self.sampler.series["power_w"].mean  # type: ignore[union-attr]
        return None if power is None else power * self._times["wall"]

    def _train_peak(self) -> float | None:
        """`mem/peak_bytes` as it always meant: the training phase's peak reserved (CUDA) or RSS (CPU)."""
        phase = self.peaks.phases.get("train") or self.peaks.phases.get(self._phase)
        if self.device.type == "cuda":
            return phase.reserved if phase else None
        if phase is not None and phase.rss is not None:
            return phase.rss
        return self.sampler.series["rss_bytes"].phase_peak  # type: ignore[union-attr]

    @property
    def peak_source(self) -> str:
        """How `mem/peak_bytes` was measured."""
        if self.device.type == "cuda":
            return "cuda_peak_reserved"
        return "kernel_vmhwm" if self.peaks.kernel else "rss_sampled"

    def tags(self) -> dict[str, str]:
        """`monitor/backend`, `monitor/reason` and anything that did not work, for the run's tags."""
        tags = {"monitor/backend": self.backend.name, "monitor/reason": self.reason,
                "mem/peak_source": self.peak_source}
        if self.sampler is not None and self.sampler.error:
            tags["monitor/error"] = self.sampler.error
        problems = self.backend.problems()
        if problems:
            tags["monitor/unsupported"] = ", ".join(f"{column} ({why})" for column, why in sorted(problems.items()))
        if self.backend.nvml_process_match():
            tags["monitor/nvml_process_match"] = self.backend.nvml_process_match()
        if "energy_j" in problems and "power_w" not in problems:
            tags["gpu/energy_source"] = "mean power x time"
        return tags
