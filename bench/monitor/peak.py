"""Peak memory over a block of code, measured by the kernel or the CUDA allocator, not by sampling.

On Linux the kernel keeps the process's high-water mark (VmHWM) and lets us reset it by writing 5 to
/proc/self/clear_refs, so the CPU peak is exact and costs nothing while training runs. Where that is not
possible we sample RSS from a thread. On CUDA the figure is torch's peak reserved memory (what the
caching allocator took from the driver), reset when the block starts.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _kernel_peak_rss() -> int | None:
    try:
        match = re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _reset_kernel_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _kernel_peak_rss() is not None


class _RssSampler(threading.Thread):
    """Fallback: the largest RSS seen, sampled every `interval_s`."""

    def __init__(self, interval_s: float = 0.05) -> None:
        super().__init__(daemon=True, name="bench-rss-sampler")
        import psutil

        self._process = psutil.Process()
        self._interval_s = interval_s
        self._stop_event = threading.Event()
        self.peak = self._process.memory_info().rss

    def run(self) -> None:
        while not self._stop_event.wait(self._interval_s):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, self._process.memory_info().rss)


class PeakMemory:
    """`with PeakMemory(device) as peak: ...` then `peak.bytes` and `peak.source`."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.bytes = 0
        self.source = ""
        self._sampler: _RssSampler | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.source = "cuda_peak_reserved"
        elif _reset_kernel_peak():
            self.source = "kernel_vmhwm"
        else:
            self._sampler = _RssSampler()
            self._sampler.start()
            self.source = "rss_sampled"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            self.bytes = int(torch.cuda.max_memory_reserved(self.device))
        elif self._sampler is not None:
            self.bytes = self._sampler.stop()
        else:
            self.bytes = _kernel_peak_rss() or 0
