"""Exact peak memory, kept by the kernel or the CUDA allocator rather than sampled.

On Linux the kernel keeps the process's high-water mark (VmHWM) and lets us reset it by writing 5 to
/proc/self/clear_refs, so the CPU peak is exact and costs nothing while training runs. On CUDA, torch's
allocator keeps peak allocated and peak reserved bytes. Both are counters that can only be reset, so a run
is split into phases (model loading, then training): at each split the phase's peak is read and the
counter reset, and the run's peak is the largest phase peak. Where the kernel counter is missing, the
sampler's largest RSS stands in (see `Monitor`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def kernel_peak_rss() -> int | None:
    """VmHWM in bytes: the largest resident set since the last reset (None off Linux)."""
    try:
        match = re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def reset_kernel_peak() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it (then peaks are sampled)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return kernel_peak_rss() is not None


@dataclass
class PhasePeaks:
    """Peaks of one phase: `rss` (kernel, or None), and on CUDA `allocated` and `reserved`."""

    rss: int | None = None
    allocated: int = 0
    reserved: int = 0


@dataclass
class PeakMemory:
    """Phase-split exact peaks: `start()`, `split("load")`, `split("train")`, then `phases` and `run_peak()`."""

    device: Any
    kernel: bool = False  # whether the kernel counter works here
    phases: dict[str, PhasePeaks] = field(default_factory=dict)

    def start(self) -> None:
        """Reset every counter: what follows is measured from here."""
        if self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        self.kernel = reset_kernel_peak()

    def split(self, phase: str) -> PhasePeaks:
        """Read the peaks since the last reset as `phase`, then reset the counters for the next phase."""
        peaks = PhasePeaks(rss=kernel_peak_rss() if self.kernel else None)
        if self.device.type == "cuda":
            import torch

            # Host-side allocator counters: reading them does not wait for the GPU.
            peaks.allocated = int(torch.cuda.max_memory_allocated(self.device))
            peaks.reserved = int(torch.cuda.max_memory_reserved(self.device))
        self.phases[phase] = peaks
        self.start()
        return peaks

    def run_peak(self, name: str) -> int | None:
        """The largest `rss`, `allocated` or `reserved` over all phases."""
        values = [getattr(p, name) for p in self.phases.values() if getattr(p, name) is not None]
        return max(values) if values else None
