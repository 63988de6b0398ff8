"""The training phase's own clock and energy meter: training is entered at `mark_training` and left and
re-entered around each evaluation, so its wall time and the GPU's energy are summed over those segments,
with evaluation (and loading) left out.

Energy comes from the GPU's total-energy counter read at each segment's ends; a segment where a reading
failed is not counted, and the figure says it is partial. Where the GPU has no counter at all (pre-Volta),
the caller falls back to mean training power x training time.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TrainingSegments:
    """`enter()` when training starts or resumes, `leave()` when it pauses or ends."""

    def __init__(self, read_energy_j: Callable[[], float | None]) -> None:
        self._read_energy = read_energy_j
        self.seconds = 0.0
        self.energy_j = 0.0
        self.segments = 0  # segments entered
        self.metered = 0  # segments whose energy was read at both ends
        self._started: tuple[float, float | None] | None = None

    @property
    def active(self) -> bool:
        return self._started is not None

    def enter(self) -> None:
        if self._started is None:
            self._started = (time.perf_counter(), self._read_energy())
            self.segments += 1

    def leave(self) -> None:
        if self._started is None:
            return
        began, energy_before = self._started
        self._started = None
        self.seconds += time.perf_counter() - began
        energy_after = self._read_energy()
        if energy_before is not None and energy_after is not None:
            self.energy_j += energy_after - energy_before
            self.metered += 1

    def energy(self) -> tuple[float | None, str]:
        """(joules over the training segments, how complete): `full`, `partial (m of n segments)` or `none`."""
        if not self.metered:
            return None, "none"
        if self.metered < self.segments:
            return self.energy_j, f"partial ({self.metered} of {self.segments} training segments)"
        return self.energy_j, "full"
