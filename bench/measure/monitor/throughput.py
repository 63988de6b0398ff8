"""Step times and throughput: each optimizer step timed end to end, warm-up steps left out.

A step's time runs from the end of the previous step (or the end of an evaluation) to the end of this one,
so data loading counts and evaluation does not. On CPU it is `perf_counter`. On CUDA the step boundaries
are CUDA events on the training stream, read in bulk when the loop already waits for the GPU (every
`trainer.log_every` steps): in steady state the gap between two step-end events is the step's wall time
(when the GPU waits for the CPU the event waits too), but no step has to block on the GPU to be timed, which
a `synchronize()` per step would force. The loop's clock still synchronises at the ends of each training
segment, so `train/time_s` is synchronised wall time.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between ranks, as numpy's default."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class StepTimer:
    """`start()` before the first step and after each evaluation; `step(samples, tokens)` after each step.

    Left out of the figures besides the warm-up: steps the memory accounting watched (`untimed="watched"`: they
    run slower under its dispatch mode), steps profiled (`untimed="profiled"`: the profiler and its hooks slow
    them), and on CUDA the first step after an evaluation, which regrows the allocator's cache that the monitor
    empties when a phase starts."""

    def __init__(self, device: torch.device, *, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps
        self.durations: list[float] = []  # seconds, one per step, in order
        self._work: list[tuple[int, int]] = []  # (samples, tokens) per step
        self._untimed: list[str] = []  # per step: "" when it counts, else why not (watched, profiled, regrow)
        self._regrow = False
        self._cuda = device.type == "cuda"
        self._stream = None
        if self._cuda:
            import torch

            self._stream = torch.cuda.current_stream(device)
        self._mark: Any = None
        self._pending: list[tuple[Any, Any]] = []  # CUDA event pairs not read yet

    def _now(self) -> Any:
        if not self._cuda:
            return time.perf_counter()
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record(self._stream)
        return event

    def start(self) -> None:
        """A step boundary that is not the end of a step (the loop starts, or an evaluation ended)."""
        self._regrow = self._cuda and bool(self._work)  # after an evaluation, not at the very start
        self._mark = self._now()

    def step(self, samples: int, tokens: int, *, untimed: str = "") -> None:
        """One optimizer step ended; `untimed` (why: "watched", "profiled") leaves it out of the figures."""
        mark = self._now()
        if self._cuda:
            self._pending.append((self._mark, mark))
        else:
            self.durations.append(mark - self._mark)
        self._mark = mark
        self._work.append((samples, tokens))
        self._untimed.append(untimed or ("regrow" if self._regrow else ""))
        self._regrow = False

    def collect(self) -> None:
        """Turn recorded CUDA events into seconds; call it where the loop has already waited for the GPU."""
        if self._pending:
            self._pending[-1][1].synchronize()  # normally already complete: the caller just waited
            self.durations += [begin.elapsed_time(end) / 1000.0 for begin, end in self._pending]
            self._pending.clear()

    def summary(self) -> dict[str, float]:
        """`train/step_time_p50_s`, `_p90_s`, `train/tokens_per_s`, `train/samples_per_s` after warm-up."""
        self.collect()
        skip = self.warmup_steps if len(self.durations) > self.warmup_steps else 0  # too short: time every step
        kept = [i for i in range(skip, len(self.durations)) if not self._untimed[i]]
        excluded = self._untimed[skip:].count("watched")
        if not kept and len(self.durations) > skip:  # every step was watched (policy `every`): time those
            kept, excluded = list(range(skip, len(self.durations))), 0
        timed, work = [self.durations[i] for i in kept], [self._work[i] for i in kept]
        seconds = sum(timed)
        return {"train/step_time_p50_s": percentile(timed, 50), "train/step_time_p90_s": percentile(timed, 90),
                "train/tokens_per_s": sum(t for _, t in work) / seconds if seconds else math.nan,
                "train/samples_per_s": sum(s for s, _ in work) / seconds if seconds else math.nan,
                "train/timed_steps": len(timed), "train/warmup_steps_excluded": skip,
                "train/watched_steps_excluded": excluded,
                "train/profiled_steps_excluded": self._untimed[skip:].count("profiled")}
