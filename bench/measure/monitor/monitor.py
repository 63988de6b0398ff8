"""The run's resource monitor: a baseline before the model loads, the tensor-level peak, exact process peaks
per phase, a sampled timeline, summaries.

    with Monitor.for_device(device, spec, timeline_dir=folder) as monitor:
        ...load the model...
        monitor.mark_training()
        ...train with the monitor as the loop's hooks (bench.training.loop.StepHooks)...
    metrics, tags = monitor.summary(), monitor.tags()

Two views of memory, each named for what it is:
- tensors (`bench.measure.monitor.tensors`): the peak of live tensor bytes in training, by category, on CPU and CUDA
  alike. It is the run's headline figure.
- the process: RSS (the kernel's VmHWM) on CPU; on CUDA torch's peak allocated and reserved, and NVML's
  process memory. Phases (load, train, eval) have their own peaks: counters are read and reset, and on CUDA
  the allocator's cache emptied, at each phase change (`bench.measure.monitor.peak`).
NVML peaks, means, utilisation and power come from samples; utilisation, power and energy cover training
only. `spec.enabled=False` keeps the counters and the tensor accounting and drops the thread (unless the
kernel counter is missing, when the thread is the only way to see the RSS peak).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import MonitorConfig
from bench.measure.monitor.backends import Backend, ProcessSource, TorchCudaSource, cpu_seconds, pick_backend
from bench.measure.monitor.peak import PeakMemory
from bench.measure.monitor.phases import TrainingSegments
from bench.measure.monitor.sampler import Sampler

if TYPE_CHECKING:
    import torch

TIMELINE = "timeline.csv"
# Sampled column -> the coarse per-step metric logged at each flush (peak for memory, mean for rates).
_COARSE = {"rss_bytes": "monitor/rss_bytes", "allocated_bytes": "monitor/allocated_bytes",
           "reserved_bytes": "monitor/reserved_bytes", "nvml_device_bytes": "monitor/nvml_device_bytes",
           "nvml_process_bytes": "monitor/nvml_process_bytes", "gpu_util_pct": "monitor/gpu_util_pct",
           "power_w": "monitor/power_w"}


class Monitor:
    """Resource measurement over a run; a context manager so the thread stops however the run ends."""

    def __init__(self, device: torch.device, spec: MonitorConfig, backend: Backend, reason: str, *,
                 timeline_dir: Path | None, sample: bool, static_tensors: Any = None) -> None:
        self.device, self.spec, self.backend, self.reason = device, spec, backend, reason
        self.timeline = timeline_dir / TIMELINE if timeline_dir is not None and sample else None
        self.peaks = PeakMemory(device)
        self.sampler: Sampler | None = None
        self.baseline: dict[str, float | None] = {}
        self.training = TrainingSegments(backend.energy_j)
        self.tensors = None
        if spec.tensors != "off":
            from bench.measure.monitor.tensors import TensorAccounting

            self.tensors = TensorAccounting(device, spec.tensors, static_tensors)
        self.allocator = None  # CPU: the allocator's own peak (on CUDA the caching allocator keeps one)
        if device.type == "cpu" and spec.tensors != "off":
            from bench.measure.monitor.allocator import AllocatorPeak

            self.allocator = AllocatorPeak(spec.tensors)
        self.modules_imported_late: list[str] = []
        self._sample, self._phase = sample, "load"
        self._times: dict[str, float] = {}
        self._flush_at: tuple[float, float] = (0.0, 0.0)
        self._modules: set[str] = set()
        self.profiler = _profiler(device, spec, timeline_dir)
        self._model: Any = None

    @classmethod
    def for_device(cls, device: torch.device, spec: MonitorConfig | None = None, *, timeline_dir: Path | None = None,
                   static_tensors: Any = None) -> Monitor:
        """The backend is picked here, once: NVML on CUDA when it answers, else the CPU backend.
        `static_tensors(model)`: tensors that hold weights outside parameters and buffers (4-bit state)."""
        spec = spec or MonitorConfig()
        if spec.enabled:
            backend, reason = pick_backend(device)
        else:  # the counters still need the baseline readings; no NVML, no thread
            sources: list[Any] = [ProcessSource()] + ([TorchCudaSource(device)] if device.type == "cuda" else [])
            backend, reason = Backend("off", sources), "monitor.enabled=false"
        return cls(device, spec, backend, reason, timeline_dir=timeline_dir, sample=spec.enabled,
                   static_tensors=static_tensors)

    def __enter__(self) -> Monitor:
        self.peaks.start()  # first: on CUDA it creates the context, whose memory then sits in the baseline
        self._sample = self._sample or not self.peaks.kernel  # no kernel counter: sampling is the only peak
        if self.timeline is not None:
            self.timeline.parent.mkdir(parents=True, exist_ok=True)
        self.backend.open()
        self.sampler = Sampler(self.backend, interval_s=self.spec.interval_s, timeline=self.timeline)
        self.baseline = dict(zip(self.backend.columns, self.sampler.sample(), strict=True))
        if self.allocator is not None:
            self.allocator.start()
        self._times = {"wall": time.perf_counter(), "cpu": cpu_seconds()}
        self._flush_at = (self._times["wall"], self._times["cpu"])
        self._modules = set(sys.modules)
        if self._sample:
            self.sampler.start()
        return self

    def _enter_phase(self, phase: str) -> None:
        """Close the current phase's peaks (and, on CUDA, empty the allocator's cache) and start `phase`."""
        self.peaks.split(self._phase)
        self._phase = phase
        if self.sampler is not None:
            self.sampler.new_phase(phase)

    def mark_training(self) -> None:
        """The model is loaded; training starts."""
        self._enter_phase("train")
        self.training.enter()

    # bench.training.loop.StepHooks
    def on_train_start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if self.tensors is not None:
            self.tensors.start(model, optimizer)
        if self.allocator is not None:
            self.allocator.on_train_start(model)
        self._model = model
        self._profile_after(0)

    @contextlib.contextmanager
    def step(self, step: int, batch: dict[str, Any]) -> Iterator[str]:
        busy = self.profiler is not None and self.profiler.recording
        allocator = self.allocator.step(step, batch, profiler_busy=busy) if self.allocator is not None else \
            contextlib.nullcontext()
        with allocator:  # outside the tensor accounting: the two instruments do not see each other
            profiled = "profiled" if self.profiler is not None and self.profiler.covers(step) else ""
            if self.allocator is not None and self.allocator.active:
                profiled = "watched"  # the allocator's profiler window slows every op too
            if self.tensors is None:
                yield profiled
                return
            with self.tensors.step(step, batch):
                watched = self.tensors.watching()
                if watched and busy:  # slower ops: the profile says so
                    self.profiler.watched_steps.add(step)
                yield "watched" if watched else profiled

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """An evaluation between epochs: its own phase, outside training's peaks, time and energy."""
        self._stop_profile()  # a profile is of training steps: one that reaches an epoch's end stops there
        self.training.leave()
        self._enter_phase("eval")
        try:
            with self.tensors.evaluation() if self.tensors is not None else contextlib.nullcontext():
                yield
        finally:
            self._enter_phase("train")
            self.training.enter()

    def on_step(self, step: int) -> None:
        """The loop's step counter, stamped on each timeline row (a plain attribute write: free); the profiled
        window opens and closes at step ends."""
        if self.sampler is not None:
            self.sampler.step = step
        if self.profiler is not None:
            self.profiler.step_ended(step)
            self._profile_after(step)

    def _profile_after(self, step: int) -> None:
        """Step `step` ended (0: training starts): open or close the profiled window. Its steps are out of the
        training segment too, so the profiler's cost is in no energy or utilisation figure."""
        if self.profiler is None:
            return
        if step == self.profiler.first_step - 1:
            self.training.leave()
            self.profiler.start(self._model)
        elif step == self.profiler.last_step:
            self._stop_profile()

    def _stop_profile(self) -> None:
        if self.profiler is not None and self.profiler.recording:
            self.profiler.stop()
            self.training.enter()

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
        self.training.leave()
        self._times = {"wall": time.perf_counter() - self._times["wall"], "cpu": cpu_seconds() - self._times["cpu"]}
        self.modules_imported_late = sorted(set(sys.modules) - self._modules)
        try:
            if self.sampler is not None:
                self.sampler.stop()
            if self.profiler is not None:  # after training, before the artifacts are uploaded
                self.profiler.finish()
        finally:
            self.peaks.split(self._phase)
            self.backend.close()

    def summary(self) -> dict[str, float]:
        """Every monitor metric of the run (after the block): tensor peaks, process peaks per phase, GPU totals."""
        from bench.measure.monitor.summary import monitor_metrics

        assert self.sampler is not None, "summary() needs a finished `with Monitor...` block"
        return {**monitor_metrics(self), **(self.profiler.metrics() if self.profiler is not None else {})}

    def tags(self) -> dict[str, str]:
        """`monitor/backend`, `monitor/reason`, where the tensor peak was, and anything that did not work."""
        from bench.measure.monitor.summary import monitor_tags

        return {**monitor_tags(self), **(self.profiler.tags() if self.profiler is not None else {})}

    @property
    def times(self) -> dict[str, float]:
        """Wall and CPU seconds of the whole monitored block."""
        return self._times

    @property
    def sampling(self) -> bool:
        """Whether the sampler thread ran (means over samples exist)."""
        return self._sample


def _profiler(device: torch.device, spec: MonitorConfig, timeline_dir: Path | None) -> Any:
    """The profiled window after warm-up, when `monitor.profile` asks for one; its files go beside the timeline."""
    if not spec.profile:
        return None
    import tempfile

    from bench.measure.profile.profiler import StepProfiler

    folder = timeline_dir if timeline_dir is not None else Path(tempfile.mkdtemp(prefix="bench-profile-"))
    return StepProfiler(device, first_step=spec.warmup_steps + 1, steps=spec.profile_steps, folder=folder / "profile")
