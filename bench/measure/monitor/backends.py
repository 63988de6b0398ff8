"""What the sampler reads, chosen once per run: process RSS and CPU always; torch's allocator on CUDA; NVML
(device and process memory, utilisation, power, energy) when the library and the device are there.

Each source gives a fixed tuple of columns and one value (or None) per column on each read. A reading that
NVML refuses (an old driver, a field the GPU does not support) is switched off for the rest of the run and
named in `problems`, so one unsupported field never costs a run or a log line per sample.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def cpu_seconds() -> float:
    """CPU time this process has used, all threads, user and system."""
    times = os.times()
    return times.user + times.system


class ProcessSource:
    """Resident set size and CPU utilisation (100 = one core busy, as `top` shows it)."""

    columns = ("rss_bytes", "cpu_util_pct")

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._last: tuple[float, float] | None = None
        self.problems: dict[str, str] = {}

    def open(self) -> None:
        self._last = None

    def read(self) -> list[float | None]:
        """RSS now, and CPU use since the previous read (None on the first: there is no interval yet)."""
        now, used = time.perf_counter(), cpu_seconds()
        last_now, last_used = self._last or (now, used)
        self._last = (now, used)
        util = 100.0 * (used - last_used) / (now - last_now) if now > last_now else None
        return [float(self._process.memory_info().rss), util]

    def close(self) -> None:
        pass


class TorchCudaSource:
    """The caching allocator's current allocated and reserved bytes (host-side counters: no GPU sync)."""

    columns = ("allocated_bytes", "reserved_bytes")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.problems: dict[str, str] = {}

    def open(self) -> None:
        pass

    def read(self) -> list[float | None]:
        import torch

        return [float(torch.cuda.memory_allocated(self.device)), float(torch.cuda.memory_reserved(self.device))]

    def close(self) -> None:
        pass


class NvmlSource:
    """NVML's view of the GPU: device memory used, this process's memory, utilisation, power, energy."""

    columns = ("nvml_device_bytes", "nvml_process_bytes", "gpu_util_pct", "power_w", "energy_j")

    def __init__(self, pynvml: Any, handle: Any) -> None:
        self._nvml, self._handle, self._pid = pynvml, handle, os.getpid()
        self._energy_start_mj: float | None = None
        self.problems: dict[str, str] = {}
        self.process_match = "not_listed"  # pid, single_process or not_listed: see `_process_bytes`

    def open(self) -> None:
        self._energy_start_mj = self._guard("energy_j", self._energy_mj)

    def read(self) -> list[float | None]:
        nvml, handle = self._nvml, self._handle
        energy = self._guard("energy_j", self._energy_mj) if self._energy_start_mj is not None else None
        return [self._guard("nvml_device_bytes", lambda: float(nvml.nvmlDeviceGetMemoryInfo(handle).used)),
                self._guard("nvml_process_bytes", self._process_bytes),
                self._guard("gpu_util_pct", lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
                self._guard("power_w", lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
                None if energy is None else (energy - self._energy_start_mj) / 1000.0]

    def close(self) -> None:
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()

    def energy_j(self) -> float | None:
        """Energy the GPU used since `open()`, in joules, from its counter; None where it has none or it failed."""
        if self._energy_start_mj is None:
            return None
        now = self._guard("energy_j", self._energy_mj)
        return None if now is None else (now - self._energy_start_mj) / 1000.0

    def _energy_mj(self) -> float:
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))  # mJ since the driver loaded

    def _process_bytes(self) -> float | None:
        """This process's GPU memory from the running-process list. In a container NVML may list host PIDs,
        so our PID is missing; if exactly one process uses the GPU it is taken as ours, and the tag says so."""
        processes = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        ours = [p for p in processes if p.pid == self._pid]
        if not ours and len(processes) == 1:
            ours, self.process_match = processes, "single_process"
        elif ours:
            self.process_match = "pid"
        used = [p.usedGpuMemory for p in ours if p.usedGpuMemory is not None]
        return float(sum(used)) if used else None

    def _guard(self, column: str, read: Any) -> float | None:
        if column in self.problems:
            return None
        try:
            return read()
        except self._nvml.NVMLError as error:
            self.problems[column] = type(error).__name__
            return None


class Backend:
    """The sources read on every sample, as one row."""

    def __init__(self, name: str, sources: list[Any]) -> None:
        self.name, self.sources = name, sources
        self.columns = tuple(column for source in sources for column in source.columns)

    def open(self) -> None:
        for source in self.sources:
            source.open()

    def read(self) -> list[float | None]:
        return [value for source in self.sources for value in source.read()]

    def close(self) -> None:
        for source in self.sources:
            source.close()

    def problems(self) -> dict[str, str]:
        return {column: why for source in self.sources for column, why in source.problems.items()}

    def energy_j(self) -> float | None:
        """The GPU's energy counter since `open()` (None without NVML or a counter)."""
        return next((s.energy_j() for s in self.sources if isinstance(s, NvmlSource)), None)

    def nvml_process_match(self) -> str | None:
        return next((s.process_match for s in self.sources if isinstance(s, NvmlSource)), None)


def pick_backend(device: torch.device) -> tuple[Backend, str]:
    """The richest backend this device allows, and why: NVML on CUDA when it answers, else the CPU backend
    (plus torch's allocator counters on CUDA). Never raises: a missing NVML is a tag, not a failure."""
    if device.type != "cuda":
        return Backend("cpu", [ProcessSource()]), f"device is {device.type}"
    try:
        from bench.measure.monitor.nvml import open_handle

        pynvml, handle, how = open_handle(device)
    except Exception as error:  # noqa: BLE001 - NVMLError, ImportError, LookupError, a driver without NVML...
        return (Backend("cpu", [ProcessSource(), TorchCudaSource(device)]),
                f"NVML unavailable: {type(error).__name__}: {error}")
    return (Backend("nvml", [ProcessSource(), TorchCudaSource(device), NvmlSource(pynvml, handle)]),
            f"NVML device matched by {how}")
