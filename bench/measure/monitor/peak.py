"""Exact peak memory, kept by the kernel or the CUDA allocator rather than sampled.

On Linux the kernel keeps the process's high-water mark (VmHWM) and lets us reset it by writing 5 to
/proc/self/clear_refs, so the CPU peak is exact and costs nothing while training runs. On CUDA, torch's
allocator keeps peak allocated and peak reserved bytes. Both are counters that can only be reset, so a run
is split into phases (model loading, training, evaluation between epochs): at each split the phase's peak is
read and the counters reset, and a phase entered again (training after an evaluation) keeps its largest
peak. On CUDA the allocator's cache is emptied at each split too, so memory reserved while loading (or
evaluating) is not counted as training's. Where the kernel counter is missing, the sampler's largest RSS
stands in (see `Monitor`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

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

    device: torch.device
    kernel: bool = False  # whether the kernel counter works here
    phases: dict[str, PhasePeaks] = field(default_factory=dict)

    def start(self) -> None:
        """Reset every counter: what follows is measured from here. On CUDA, first make sure the context
        exists (its memory then sits in the baseline, not in the first phase) and empty the allocator's cache."""
        if self.device.type == "cuda":
            import torch

            torch.zeros(1, device=self.device)  # creates the CUDA context if nothing has yet
            torch.cuda.synchronize(self.device)  # the work of the phase that ends is done
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        self.kernel = reset_kernel_peak()

    def split(self, phase: str) -> PhasePeaks:
        """Read the peaks since the last reset as (part of) `phase`, then reset the counters for the next one."""
        peaks = PhasePeaks(rss=kernel_peak_rss() if self.kernel else None)
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)  # queued kernels' allocations are in the counters
            peaks.allocated = int(torch.cuda.max_memory_allocated(self.device))
            peaks.reserved = int(torch.cuda.max_memory_reserved(self.device))
        before = self.phases.get(phase)
        if before is not None:  # a phase entered again keeps its largest peak
            peaks = PhasePeaks(rss=_larger(before.rss, peaks.rss), allocated=max(before.allocated, peaks.allocated),
                               reserved=max(before.reserved, peaks.reserved))
        self.phases[phase] = peaks
        self.start()
        return peaks

    def phase_peak(self, name: str, phase: str) -> int | None:
        """`rss`, `allocated` or `reserved` of one phase (None where it did not happen or is not measured)."""
        peaks = self.phases.get(phase)
        value = getattr(peaks, name) if peaks is not None else None
        return None if value is None or (name != "rss" and self.device.type != "cuda") else value


def _larger(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
