"""Profiler events -> time per category. Pure: it reads the events' names, nesting, sequence numbers and self
times, so it can be tested on events made by hand as well as on a real profile.

Each event's own (self) time goes to one category, chosen in this order:
1. dequantization, if its name says so (a bitsandbytes dequantize op), whatever scope it runs in;
2. the category of the range it is (`bench::<category>`), so the innermost scope decides;
3. its parent's category;
4. for the root of a backward op (`autograd::engine::evaluate_function: ...`), the category of the forward op
   that made its autograd node (the last to record the node's sequence number): backward costs are charged to
   what made them;
5. `other`.
The window's wall time not covered by any event's self time is host work (Python between ops, the loop, the
hooks): it joins `data_host`. On CUDA the times are the kernels' (device self time), and the rest of the window
is then the time the GPU sat idle, waiting for the host.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bench.measure.profile.categories import CATEGORIES, category_of_range, is_dequant_op

BACKWARD_ROOT = "autograd::engine::evaluate_function: "
STEP_END = "bench::step_end"  # an instant the profiler records at each optimizer step's end


@dataclass(frozen=True)
class Event:
    """One profiler event, reduced to what the split reads. `parent` indexes the list it is in."""

    name: str
    self_us: float
    parent: int | None = None
    sequence_nr: int = -1
    thread: int = 0
    forward_thread: int = 0  # for a backward op: the thread of the forward op that recorded it
    start_us: float = 0.0  # from the profiler's start


def from_profiler(events: Iterable[Any], *, device_time: bool) -> list[Event]:
    """torch's FunctionEvents (`profile.events()`) in start order; self time on the host (CPU) or on the device
    (`device_time`: the kernels each op launched itself)."""
    ordered = sorted(events, key=lambda e: (e.time_range.start, -e.time_range.end))
    index = {id(event): i for i, event in enumerate(ordered)}
    return [Event(name=e.name, self_us=float(e.self_device_time_total if device_time else e.self_cpu_time_total),
                  parent=index.get(id(e.cpu_parent)) if e.cpu_parent is not None else None,
                  sequence_nr=int(e.sequence_nr), thread=int(e.thread), forward_thread=int(e.fwd_thread or 0),
                  start_us=float(e.time_range.start))
            for e in ordered]


def categorise(events: list[Event]) -> list[str]:
    """The category of each event (`events` in start order, parents before children)."""
    found: list[str] = []
    forward: dict[tuple[int, int], str] = {}  # (thread, sequence number) of a forward op -> its category
    in_backward: list[bool] = []
    for event in events:
        parent = event.parent
        backward = event.name.startswith(BACKWARD_ROOT) or (parent is not None and in_backward[parent])
        own = "dequant" if is_dequant_op(event.name) else category_of_range(event.name)
        if own is None and parent is not None:
            own = found[parent]
        if own is None and event.name.startswith(BACKWARD_ROOT):
            own = forward.get((event.forward_thread, event.sequence_nr))
        category = own or "other"
        if not backward and event.sequence_nr >= 0 and (parent is None or
                                                         events[parent].sequence_nr != event.sequence_nr):
            # An op records the sequence number the next autograd node will take, so an op that makes no node
            # shares it with the one that does, which comes later: the last op to record it (the outermost of a
            # nest that shares it, as a custom Function's own ops do) is the node's maker.
            forward[(event.thread, event.sequence_nr)] = category
        found.append(category)
        in_backward.append(backward)
    return found


@dataclass(frozen=True)
class Counted:
    """The events a split counts, each with its category, and the steps they fall in: their wall time and number."""

    events: list[tuple[Event, str]]
    window_us: float
    steps: int


def count(events: list[Event], *, window_us: float, steps: int, left_out: frozenset[int] = frozenset()) -> Counted:
    """The training threads' events, categorised once, over a window of `steps` steps that lasted `window_us`.
    Where the window holds step-end markers (`STEP_END`), the steps are told apart by them and those in `left_out`
    (0 = the window's first) are dropped with their events."""
    threads = _training_threads(events)
    counted = [(e, c) for e, c in zip(events, categorise(events), strict=True)
               if e.thread in threads and e.name != STEP_END]
    ends = sorted(e.start_us for e in events if e.name == STEP_END)
    if ends:
        kept = [i for i in range(len(ends)) if i not in left_out] or list(range(len(ends)))
        counted = [(e, c) for e, c in counted if bisect.bisect_right(ends, e.start_us) in kept]
        window_us, steps = sum(ends[i] - (ends[i - 1] if i else 0.0) for i in kept), len(kept)
    return Counted(counted, window_us, steps)


def split(counted: Counted) -> dict[str, float]:
    """Milliseconds per step in each category (`CATEGORIES`, all present): the part of the steps' wall time no
    event covers is added to `data_host`."""
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for event, category in counted.events:
        totals[category] += event.self_us
    totals["data_host"] += max(counted.window_us - sum(totals.values()), 0.0)
    return {category: us / 1000.0 / counted.steps for category, us in totals.items()}


def _training_threads(events: list[Event]) -> set[int]:
    """The threads that ran the step: those of bench's ranges and of backward ops. A sampler thread's stray
    events (a CUDA memory query, say) are not the step's time."""
    return {e.thread for e in events if category_of_range(e.name) or e.name.startswith(BACKWARD_ROOT)} or \
        {e.thread for e in events}


def top_ops(counted: Counted, *, per_category: int = 10) -> list[tuple[str, str, float, float]]:
    """(category, op, milliseconds per step, calls per step) of the ops that take most of each category's time in
    the steps counted, so a category's figure can be read down to what ran in it."""
    totals: dict[tuple[str, str], list[float]] = {}
    for event, category in counted.events:
        entry = totals.setdefault((category, event.name), [0.0, 0.0])
        entry[0] += event.self_us
        entry[1] += 1
    ranked = sorted(totals.items(), key=lambda item: (list(CATEGORIES).index(item[0][0]), -item[1][0]))
    kept: dict[str, int] = {}
    rows = []
    for (category, name), (us, calls) in ranked:
        kept[category] = kept.get(category, 0) + 1
        if kept[category] <= per_category:
            rows.append((category, name, us / 1000.0 / counted.steps, calls / counted.steps))
    return rows
