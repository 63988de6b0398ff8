"""The profiled window: a few optimizer steps right after warm-up, recorded by torch's profiler with bench's
scopes installed, then split by category (`bench.measure.profile.breakdown`).

    profiler = StepProfiler(device, first_step=6, steps=3, folder=run_dir / "monitor" / "profile")
    profiler.start(model)    # after step 5 ends
    ...steps 6 (the profiler's warm-up, left out), 7, 8, 9...
    profiler.stop()          # after step 9 ends; the events are split later, in finish()

The window runs from the end of one step to the end of another, so each profiled step's data loading is in it.
Its steps, and the first step after it (which pays for stopping the profiler), are kept out of every throughput
figure by the monitor. Artifacts: `trace.json.gz` (Chrome trace format: ui.perfetto.dev opens it), `ops.csv`
(the ops that take most of each category's time) and, on CUDA, `memory_snapshot.pickle`, the allocator's history
over the same steps (pytorch.org/memory_viz opens it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.measure.profile.breakdown import STEP_END, count, from_profiler, split, top_ops
from bench.measure.profile.categories import CATEGORIES

if TYPE_CHECKING:
    import torch

TRACE = "trace.json.gz"
OPS = "ops.csv"  # the ops that take most of each category's time, per step
MEMORY_SNAPSHOT = "memory_snapshot.pickle"
MEMORY_HISTORY_ENTRIES = 200_000  # allocator events kept; a few steps of a 7B model stay well inside


class StepProfiler:
    """Records steps `first_step` .. `first_step + steps` and says where the time of all but the first went: the
    first is the profiler's own warm-up (its lazy set-up lands there), as torch's `schedule(warmup=1)` leaves one
    out."""

    def __init__(self, device: torch.device, *, first_step: int, steps: int, folder: Path) -> None:
        self.device, self.first_step, self.steps, self.folder = device, first_step, steps, folder
        self.last_step = first_step + steps
        self._profile: Any = None
        self._scopes: Any = None
        self._started = 0.0
        self.window_s = 0.0
        self.profiled = 0  # steps that ended inside the window, the warm-up step included
        self.recording = self.done = False
        self._last_seen = 0
        self._figures: dict[str, float] = {}
        self.watched_steps: set[int] = set()  # profiled steps the tensor accounting watched too (slower ops)
        self.counted = 0  # profiled steps in the figures: the watched ones are left out

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def covers(self, step: int) -> bool:
        """Whether optimizer step `step` runs inside the window, or is the first after it (which pays for the
        stop)."""
        return self.recording or (self.done and step == self.first_step + self.profiled)

    def step_ended(self, step: int) -> None:
        """Optimizer step `step` ended (before the window opens or closes at this step end): inside the window, an
        instant in the trace marks it, so the split can tell the steps apart."""
        import torch

        self._last_seen = step
        if self.recording:
            self.profiled += 1
            with torch.profiler.record_function(STEP_END):
                pass

    def start(self, model: torch.nn.Module) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile

        from bench.measure.profile.scopes import ModuleScopes

        self.folder.mkdir(parents=True, exist_ok=True)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self._scopes = ModuleScopes(model).__enter__()
        if self.cuda:
            torch.cuda.memory._record_memory_history(max_entries=MEMORY_HISTORY_ENTRIES)
            torch.cuda.synchronize(self.device)
        self._profile = profile(activities=activities)
        self._profile.start()
        self.recording = True
        self._started = time.perf_counter()

    def stop(self) -> None:
        import torch

        if not self.recording:
            return
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.window_s = time.perf_counter() - self._started
        self.recording = False
        self._profile.stop()
        self._scopes.__exit__(None, None, None)
        if self.cuda:
            torch.cuda.memory._dump_snapshot(str(self.folder / MEMORY_SNAPSHOT))
            torch.cuda.memory._record_memory_history(enabled=None)
        self.done = True

    def metrics(self) -> dict[str, float]:
        """`prof/<category>_ms` (per step) and `_pct` (of the step), `prof/step_ms`, `prof/steps` (after `finish`)."""
        return self._figures

    def finish(self) -> None:
        """After training: write the trace and split the window's time. Nothing if the window never closed."""
        self.stop()
        if self.done and self.profiled and not self._figures:
            self._figures = self._split()

    def _split(self) -> dict[str, float]:
        self._profile.export_chrome_trace(str(self.folder / TRACE))
        events = from_profiler(self._profile.events(), device_time=self.cuda)
        # left out: the profiler's warm-up step, and steps the tensor accounting slowed
        left_out = frozenset({0, *(step - self.first_step for step in self.watched_steps)})
        counted = count(events, window_us=self.window_s * 1e6, steps=self.profiled, left_out=left_out)
        _write_ops(self.folder / OPS, top_ops(counted))
        per_step = split(counted)
        self.counted = counted.steps
        total = sum(per_step.values())
        figures = {"prof/steps": float(self.counted), "prof/step_ms": total}
        for category in CATEGORIES:
            figures[f"prof/{category}_ms"] = per_step[category]
            figures[f"prof/{category}_pct"] = 100.0 * per_step[category] / total if total else 0.0
        return figures

    def tags(self) -> dict[str, str]:
        """Which steps were profiled and where the files are, or why nothing was."""
        if not self.done or not self.profiled:
            return {"prof/skipped": f"training ended at step {self._last_seen}, before the profiled steps "
                                    f"{self.first_step + 1}-{self.last_step} (after monitor.warmup_steps and the "
                                    "profiler's own warm-up step)"}
        files = [TRACE, OPS] + ([MEMORY_SNAPSHOT] if self.cuda else [])
        first = self.first_step + (1 if self.profiled > 1 else 0)
        tags = {"prof/window": f"steps {first}-{self.first_step + self.profiled - 1}",
                "prof/artifacts": ", ".join(f"monitor/profile/{name}" for name in files)}
        watched = sorted(step for step in self.watched_steps if step > self.first_step)
        if watched:
            left = "left out of the figures" if self.counted < self.profiled - 1 else "kept: no other step was profiled"
            tags["prof/note"] = (f"step(s) {', '.join(map(str, watched))} of the window were also "
                                 f"watched by the tensor accounting, whose dispatch mode slows every op ({left})")
        return tags


def _write_ops(path: Path, rows: list[tuple[str, str, float, float]]) -> None:
    import csv

    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["category", "op", "ms_per_step", "calls_per_step"])
        writer.writerows((category, name, f"{ms:.3f}", f"{calls:g}") for category, name, ms, calls in rows)
