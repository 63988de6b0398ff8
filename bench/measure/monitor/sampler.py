"""The sampler thread: reads the backend every `interval_s`, appends a row to the timeline CSV, and keeps
running statistics so nothing is held in memory however long the run.

Each tick costs a few reads of /proc (and NVML calls on CUDA) and one buffered CSV line: tens of
microseconds every 100 ms. The thread never raises into the run: a failure stops sampling and is kept
in `error`, which the run records as a tag.
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path
from typing import Any


class Series:
    """Statistics of one sampled column: over the run (or a phase) and since the last `window()`."""

    __slots__ = ("count", "total", "peak", "first", "last", "window_total", "window_count", "window_peak")

    def __init__(self) -> None:
        self.count, self.total = 0, 0.0
        self.peak = self.first = self.last = self.window_peak = None
        self.window_total, self.window_count = 0.0, 0

    def add(self, value: float | None) -> None:
        if value is None:
            return
        self.count, self.total = self.count + 1, self.total + value
        self.first = value if self.first is None else self.first
        self.last = value
        self.peak = value if self.peak is None else max(self.peak, value)
        self.window_total, self.window_count = self.window_total + value, self.window_count + 1
        self.window_peak = value if self.window_peak is None else max(self.window_peak, value)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def window(self) -> tuple[float | None, float | None]:
        """(mean, peak) since the last call, then start a new window; the last value if none came in between."""
        if not self.window_count:
            return self.last, self.last
        mean, peak = self.window_total / self.window_count, self.window_peak
        self.window_total, self.window_count, self.window_peak = 0.0, 0, None
        return mean, peak


class Sampler(threading.Thread):
    """`sample()` once by hand for the baseline, `start()`, later `stop()`; `series[column]` holds the stats
    over the run, `by_phase[phase][column]` over each phase (load, train, eval; a phase entered several times,
    as training is between evaluations, accumulates)."""

    def __init__(self, backend: Any, *, interval_s: float, timeline: Path | None) -> None:
        super().__init__(daemon=True, name="bench-monitor")  # a daemon never keeps a killed run alive
        self.backend, self.interval_s = backend, interval_s
        self.series = {column: Series() for column in backend.columns}
        self.step, self.phase, self.error, self.samples = 0, "load", "", 0
        self.by_phase: dict[str, dict[str, Series]] = {"load": {column: Series() for column in backend.columns}}
        self._lock, self._stop_event = threading.Lock(), threading.Event()
        self._t0 = time.perf_counter()
        self._file = timeline.open("w", newline="") if timeline is not None else None
        self._csv = csv.writer(self._file) if self._file is not None else None
        if self._csv is not None:
            self._csv.writerow(["time_s", "step", "phase", *backend.columns])

    def sample(self) -> list[float | None]:
        """Read every column now, record the row and update the statistics."""
        values = self.backend.read()
        elapsed = time.perf_counter() - self._t0
        with self._lock:
            phase = self.by_phase[self.phase]
            for column, value in zip(self.backend.columns, values, strict=True):
                self.series[column].add(value)
                phase[column].add(value)
            self.samples += 1
        if self._csv is not None:
            cells = ("" if value is None else f"{value:.12g}" for value in values)
            self._csv.writerow([f"{elapsed:.3f}", self.step, self.phase, *cells])
        return values

    def run(self) -> None:
        deadline = time.perf_counter()
        while True:
            deadline = max(deadline + self.interval_s, time.perf_counter())  # after a stall, do not burst
            if self._stop_event.wait(deadline - time.perf_counter()):
                return
            try:
                self.sample()
            except Exception as error:  # noqa: BLE001 - measuring must never take the run down
                self.error = f"{type(error).__name__}: {error}"
                return

    def new_phase(self, phase: str) -> None:
        """A reading closes the phase that ends (so its last moment is in it), then samples count for `phase`."""
        if not self.error:
            self.sample()
        with self._lock:
            self.phase = phase
            self.by_phase.setdefault(phase, {column: Series() for column in self.backend.columns})

    def window(self) -> dict[str, tuple[float | None, float | None]]:
        """(mean, peak) of each column since the last call."""
        with self._lock:
            return {column: series.window() for column, series in self.series.items()}

    def stop(self) -> None:
        """Stop the thread, take a last sample so the end of the run is in, close the timeline."""
        self._stop_event.set()
        if self.is_alive():
            self.join()
        try:
            if not self.error:
                self.sample()
        finally:
            if self._file is not None:
                self._file.close()
