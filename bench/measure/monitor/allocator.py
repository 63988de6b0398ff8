"""The CPU allocator's own peak: an instrument that shares no code with the tensor accounting or the plan.

`bench.measure.monitor.tensors` (torch's MemTracker, a dispatch mode) counts the storages ops return; `bench plan`
traces with the same accounting, so whatever it misses is missing from both sides of the plan's check. This
module asks the allocator instead. torch's CPU allocator reports every allocation and free it makes to the
profiler when `profile_memory=True` (c10's `ProfiledCPUMemoryReporter`): scratch space an op allocates and frees
inside itself, oneDNN's buffers, anything that goes through `c10::GetCPUAllocator`. A watched micro-batch runs
inside such a profiler window, and its peak is

    bytes live when the window opens + the largest rise of the window's running sum of allocations and frees.

The profiler reports only what it saw allocated (a block from before the window is freed without an event), so
the bytes live at the opening are counted another way: a census of every CPU tensor storage a Python object
holds, with the gradient each trainable tensor holds (gradients made by backward have no Python object until
read), less the storages alive at the monitor's baseline (the tokenized data, before the model loads). Between
micro-batches nothing else holds tensor memory: the autograd graph is freed by backward.

Which micro-batches: the first two optimizer steps, then each micro-batch with more padded elements than any
before it of its kind (with or without gradients alive), the policy the tensor accounting documents, decided
here on its own (`monitor.tensors` switches both; `off` watches nothing). On CUDA the caching allocator keeps its
own peak (`max_memory_allocated`, `bench.measure.monitor.peak`), and this module is not used.
"""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def _live_tensors() -> list[Any]:
    """Every tensor object the garbage collector tracks (`type()`, not `isinstance`: a lazy module's
    `__class__` can warn)."""
    import torch

    return [obj for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor)]


def _storage(tensor: Any) -> tuple[int, int] | None:
    """(address, bytes) of a real CPU tensor's storage; None for other devices, fake or meta tensors."""
    try:
        storage = tensor.untyped_storage()
        if storage.device.type != "cpu" or type(tensor).__name__ == "FakeTensor":
            return None
        address = storage.data_ptr()
    except (RuntimeError, NotImplementedError, TypeError):  # sparse, nested, storage-less subclasses
        return None
    return (address, storage.nbytes()) if address else None


def census(exclude: set[int] = frozenset()) -> int:  # type: ignore[assignment]
    """Bytes of the distinct CPU storages held by live tensors and their gradients, those at `exclude` left out."""
    sizes: dict[int, int] = {}
    for tensor in _live_tensors():
        for held in (tensor, tensor.grad if tensor.is_leaf and tensor.requires_grad else None):
            found = _storage(held) if held is not None else None
            if found is not None and found[0] not in exclude:
                sizes[found[0]] = found[1]
    return sum(sizes.values())


def rise(events: list[tuple[int, int]]) -> int:
    """The largest rise of the running sum of (time, signed bytes) allocator events, taken in time order."""
    running = highest = 0
    for _, change in sorted(events, key=lambda event: event[0]):
        running += change
        highest = max(highest, running)
    return highest


def _window_events(profile: Any) -> list[tuple[int, int]]:
    """The CPU allocator's events of a finished profiler window: (start in ns, signed bytes)."""
    return [(event.start_ns(), event.nbytes()) for event in profile.profiler.kineto_results.events()
            if event.name() == "[memory]" and event.device_type().name == "CPU"]


class AllocatorPeak:
    """Watches micro-batches through the CPU allocator's events: `start()` at the baseline, `on_train_start`,
    `step(...)` around each micro-batch, then `metrics()`."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.peak = -1
        self.base_at_peak = 0  # the bytes live when the window that peaked opened
        self.windows = 0
        self.skipped = 0  # watched micro-batches another profiler window covered
        self.active = False  # a window is open now (its micro-batch stays out of the throughput)
        self._baseline: list[Any] = []  # weak references to the tensors alive at the baseline
        self._trainable: list[Any] = []
        self._largest: dict[bool, int] = {}

    def start(self) -> None:
        """The baseline: the tensors alive now (the data, not the model) are never counted."""
        self._baseline = [weakref.ref(tensor) for tensor in _live_tensors() if _weakly_referable(tensor)]

    def on_train_start(self, model: torch.nn.Module) -> None:
        """The model whose gradients tell a micro-batch's kind."""
        self._trainable = [p for p in model.parameters() if p.requires_grad]

    def _excluded(self) -> set[int]:
        alive = (ref() for ref in self._baseline)
        return {found[0] for tensor in alive if tensor is not None and (found := _storage(tensor)) is not None}

    def _watch(self, step: int, batch: dict[str, Any]) -> bool:
        if self.policy == "off":
            return False
        ids = batch.get("input_ids")
        size = int(ids.numel()) if ids is not None else sum(int(v.numel()) for v in batch.values())
        kind = any(p.grad is not None for p in self._trainable)
        larger = size > self._largest.get(kind, -1)
        self._largest[kind] = max(self._largest.get(kind, -1), size)
        return self.policy == "every" or step <= 2 or larger

    @contextlib.contextmanager
    def step(self, step: int, batch: dict[str, Any], *, profiler_busy: bool = False) -> Iterator[None]:
        """Around one micro-batch of optimizer step `step`; `profiler_busy`: another profiler window is open (torch
        runs one at a time), so a micro-batch this policy watches is counted in `skipped` instead."""
        if not self._watch(step, batch):
            yield
            return
        if profiler_busy:
            self.skipped += 1
            yield
            return
        from torch.profiler import ProfilerActivity, profile

        base = census(self._excluded())
        window = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        window.start()
        self.active = True
        try:
            yield
        finally:
            window.stop()
            self.active = False
            self.windows += 1
            total = base + rise(_window_events(window))
            if total > self.peak:
                self.peak, self.base_at_peak = total, base

    def metrics(self) -> dict[str, float]:
        """`mem/allocator_peak_bytes` and `mem/allocator_base_bytes`, with the windows they come from."""
        if self.peak < 0:
            return {}
        return {"mem/allocator_peak_bytes": float(self.peak), "mem/allocator_base_bytes": float(self.base_at_peak),
                "mem/allocator_windows": float(self.windows)}

    def tags(self) -> dict[str, str]:
        """`mem/allocator_source`, and watched micro-batches left out where another profiler held the window."""
        tags = {"mem/allocator_source": "cpu_profiler_events"} if self.peak >= 0 else {}
        if self.skipped:
            tags["mem/allocator_skipped"] = (f"{self.skipped} watched micro-batch(es) ran inside monitor.profile's "
                                             "window (torch runs one profiler at a time): not in the allocator peak")
        return tags


def _weakly_referable(tensor: Any) -> bool:
    try:
        weakref.ref(tensor)
    except TypeError:
        return False
    return True
