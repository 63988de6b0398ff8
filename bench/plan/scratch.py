"""What an op allocates beyond its outputs, traced: the scratch space of library ops whose CPU kernels are Python.

A dispatch mode (the tensor accounting's, the plan's trace) sees an op's outputs, never the tensors its kernel makes
and frees inside: bitsandbytes' CPU kernels are Python functions registered with `torch.library`, and its 8-bit
optimizer's update, for one, dequantizes both states, the gradient and the update to fp32 inside the op (five
fp32 copies of the parameter at once, where the CUDA kernel keeps none). A run's allocator counts them; so must
the plan of a CPU run. `OpScratch` sits on top of the trace's tracker: for each op of `TRACED` it runs the op's
CPU kernel once more on the same fake tensors (`redispatch` to the CPU key: shapes only, nothing allocated), the
tracker set aside, under a counter of the storages the kernel makes and frees; the largest sum of those, on top of
the bytes the tracker holds live when the op starts, is a candidate for the allocator's peak. Then the op runs as
it would have, for the tracker. Only kernels that are torch code throughout can run on fake tensors: the others
hand raw pointers to C (on a fake tensor: a crash), so the library's other ops are named in `untraced` and add
nothing (what C allocates with malloc is outside torch's allocator anyway; what it allocates through torch is its
output, which the tracker sees).

Used for CPU plans only: a CUDA kernel's scratch is not its CPU twin's (on CUDA the term is calibrated from runs,
`bench.plan.overhead`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode, _len_torch_dispatch_stack, _pop_mode_temporarily
from torch.utils._pytree import tree_flatten

LIBRARIES = ("bitsandbytes",)  # op namespaces whose CPU kernels can allocate what no dispatch mode sees
# kernels read in bitsandbytes 0.50's backends/cpu/ops.py: torch code only (their inner bitsandbytes ops run as fakes)
TRACED = ("bitsandbytes::optimizer_update_8bit_blockwise", "bitsandbytes::optimizer_update_32bit")


def _tensors(tree: Any) -> list[Any]:
    import torch

    return [leaf for leaf in tree_flatten(tree)[0] if isinstance(leaf, torch.Tensor)]


class _Counter(TorchDispatchMode):
    """The peak bytes of the storages made inside one kernel (its inputs' storages left out)."""

    def __init__(self, inputs: list[Any]) -> None:
        super().__init__()
        self.known = {StorageWeakRef(tensor.untyped_storage()).cdata for tensor in inputs}
        self.live: dict[int, tuple[Any, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in _tensors(out):
            ref = StorageWeakRef(tensor.untyped_storage())
            if ref.cdata not in self.known and ref.cdata not in self.live:
                self.live[ref.cdata] = (ref, tensor.untyped_storage().nbytes())
        self.live = {key: held for key, held in self.live.items() if not held[0].expired()}
        self.peak = max(self.peak, sum(size for _, size in self.live.values()))
        return out


class OpScratch(TorchDispatchMode):
    """Over traced micro-batches: `peaks[phase]`, the largest live bytes + scratch of any library op in that
    phase; `now()` gives the tracker's live bytes and the step's phase (forward, backward, optimizer)."""

    def __init__(self, now: Callable[[], tuple[int, str]]) -> None:
        super().__init__()
        self.now = now
        self.peaks: dict[str, int] = {}
        self.untraced: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "namespace", "") in LIBRARIES:
            if func.name() in TRACED:
                self._measure(func, args, kwargs)
            else:
                self.untraced.add(func.name())
        return func(*args, **kwargs)

    def _measure(self, func: Any, args: Any, kwargs: Any) -> None:
        import torch

        live, phase = self.now()
        counter = _Counter(_tensors((args, kwargs)))
        below = _pop_mode_temporarily() if _len_torch_dispatch_stack() else contextlib.nullcontext()
        with below, counter:  # the tracker set aside: the kernel's own tensors are not the run's
            func.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), *args, **kwargs)
        self.peaks[phase] = max(self.peaks.get(phase, 0), live + counter.peak)
