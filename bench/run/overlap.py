"""Whether a sweep cell was timed alone: the tag `timing/shared` on every cell's run.

A sweep can run several cells at once on one machine (joblib's `n_jobs=2`); their tokens/s, training time and energy
then measure the neighbour as much as the technique. Each cell's job keeps a span in the sweep's folder
(`.timing/<job>.json`: the host, when the job began, and once its process has ended, when that was). When a cell's
process ends, its job reads every span: another cell of the sweep on the same host whose span overlaps its own (one
still running counts as overlapping) makes the run `timing/shared=true`; none, `false`. The span is the whole job,
from before it looks for a finished run to the end of its process, not only the training, so a neighbour's imports
or evaluation count as sharing too: a run tagged `false` had the machine to itself, as far as this sweep goes
(another program on the machine is not seen). Cells on other hosts (a SLURM or Ray launcher) never share.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

FOLDER = ".timing"  # in the sweep's folder, beside `bench_sweep.json`
SHARED_TAG = "timing/shared"


@dataclass(frozen=True)
class Span:
    """When one cell's job ran: `end` None while it runs."""

    host: str
    start: float  # time.time()
    end: float | None = None


def clear(sweep_folder: Path) -> None:
    """A new launch of the sweep: the spans a last launch left (one killed keeps no end) must not count."""
    shutil.rmtree(sweep_folder / FOLDER, ignore_errors=True)


def begin(sweep_folder: Path, job: int) -> Span:
    """Record that cell `job` has begun, before it does anything that takes the machine."""
    span = Span(host=socket.gethostname(), start=time.time())
    _write(sweep_folder, job, span)
    return span


def finish(sweep_folder: Path, job: int, span: Span) -> bool:
    """Record that cell `job` has ended; True when another cell of the sweep on this host overlapped it."""
    now = time.time()
    shared = any(other.host == span.host and other.start < now and (other.end is None or other.end > span.start)
                 for other in _others(sweep_folder, job))
    _write(sweep_folder, job, Span(host=span.host, start=span.start, end=now))
    return shared


class Timing:
    """One cell's span, begun when made; `end()` closes it once and says whether another cell overlapped it."""

    def __init__(self, sweep_folder: Path, job: int) -> None:
        self.sweep_folder, self.job = sweep_folder, job
        self.span = begin(sweep_folder, job)
        self.shared: bool | None = None

    def end(self) -> bool:
        if self.shared is None:
            self.shared = finish(self.sweep_folder, self.job, self.span)
        return self.shared


def _others(sweep_folder: Path, job: int) -> list[Span]:
    """The other cells' spans; one half written or unreadable is read as overlapping (never a false `alone`)."""
    spans = []
    for path in (sweep_folder / FOLDER).glob("*.json"):
        if path.stem == str(job):
            continue
        try:
            spans.append(Span(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            spans.append(Span(host=socket.gethostname(), start=0.0))
    return spans


def _write(sweep_folder: Path, job: int, span: Span) -> None:
    folder = sweep_folder / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    written = folder / f"{job}.json.tmp"
    written.write_text(json.dumps(asdict(span)))
    written.replace(folder / f"{job}.json")  # whole or absent for a reader in another process
