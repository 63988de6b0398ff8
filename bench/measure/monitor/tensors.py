"""Tensor-level memory accounting: the peak of live tensor bytes, split by what each tensor is (parameters,
buffers, gradients, optimizer state, activations, temporaries, inputs), and the module running at the peak.

torch's own `MemTracker` (a TorchDispatchMode that sees every storage an op creates) does the counting, on CPU
and CUDA alike; `_Tracker` adapts it to fine-tuning. The training loop hands it one micro-batch at a time (one
per optimizer step unless `trainer.grad_accum_steps` > 1: the last one's context holds the update too), with the
number of the optimizer step it belongs to. `TensorAccounting` decides which micro-batches it watches:

- `largest` (the default): every micro-batch of the first two optimizer steps, and every later micro-batch
  whose batch is the largest so far in padded elements among its kind. Step 1 creates the optimizer's state
  while the gradients exist (full fine-tuning's peak); step 2 is the first whose forward and backward run with
  that state alive (an adapter's peak). After that every step does the same work on its batch, so only a larger
  batch can raise the peak; with shuffled batches that is about ln(steps) more steps. The two kinds: a first
  micro-batch of its step starts without gradients (they were cleared), a later one runs its forward on top of
  the gradients accumulated so far, so the same batch peaks higher there; each kind has its own largest batch
  (without accumulation every micro-batch is of the first kind, and the policy is the plain one above).
  A watched micro-batch runs ~2.6x slower (FACTS.md), so its optimizer step is left out of the step-time and
  throughput figures (the training loop asks `watching()`).
- `every`: every micro-batch (a check of the policy above; slow).
- `off`: none; no tensor figures.

Tensors that exist before a watched step starts are known to the tracker only if registered: the model's
parameters and buffers, the gradients and optimizer state, the quantization state of 4-bit layers (counted as
parameters: it is what holds the weights) and the batch (counted as `other`: the inputs).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from torch.distributed._tools.mem_tracker import _TOTAL_KEY, MemTracker, _MemRefType

if TYPE_CHECKING:
    import torch

# torch's categories -> the names of bench's metrics, mem/at_peak/<name>_bytes
CATEGORIES = {_MemRefType.PARAM: "params", _MemRefType.BUFFER: "buffers", _MemRefType.GRAD: "grads",
              _MemRefType.OPT: "optimizer", _MemRefType.ACT: "activations", _MemRefType.TEMP: "temporaries",
              _MemRefType.OTH: "other"}
POLICIES = ("largest", "every", "off")


class _Tracker(MemTracker):
    """torch's MemTracker, adapted: gradient hooks only on trainable parameters (peft's frozen base weights
    refuse a hook), a new pass of the root module allowed (evaluation runs it once per batch), the global peak
    kept without torch's per-module peaks (the dominant cost per op), and where the peak happened."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.where = ("", "")  # (module, phase) at the peak on `device`
        # the peak of each phase (forward, backward, optimizer) by category: a plan traced at two depths
        # extrapolates each phase, since which one peaks can change with depth
        self.phase_peaks: dict[str, dict[str, int]] = {}
        self.phase_modules: dict[str, str] = {}  # where each phase's peak happened

    def _track_module_params_and_buffers(self, module: torch.nn.Module, install_grad_hooks: bool = True) -> tuple[int,
                                         int]:
        memory = super()._track_module_params_and_buffers(module, install_grad_hooks=False)
        if install_grad_hooks:
            for parameter in module.parameters():
                if parameter.requires_grad and self._param_to_grad_hook_handles.get(parameter) is None:
                    self._param_to_grad_hook_handles[parameter] = (
                        parameter.register_hook(self._grad_hook),
                        parameter.register_post_accumulate_grad_hook(lambda p: self._grad_hook(p.grad)))
        return memory

    def _grad_hook(self, grad: Any) -> None:
        self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)

    def _pre_fw_hook(self, module: torch.nn.Module, inputs: Any) -> None:
        if not self._mod_tracker.is_bw and module in self.memory_tracking:
            name = self._mod_tracker.get_known_fqn(module)
            if set(self._mod_tracker.parents) - {name} == {"Global"}:  # the root module again: a new pass
                self.reset_mod_stats()
        super()._pre_fw_hook(module, inputs)

    def _update_peak_stats(self, peak_state: Any) -> None:
        for device, snapshot in self._curr_mem_snap.items():
            if self._peak_mem.get(device, 0) < snapshot[_TOTAL_KEY]:
                self._peak_mem[device] = snapshot[_TOTAL_KEY]
                self._peak_mem_snap[device] = dict(snapshot)
                if device == self.device:
                    self.where = (self._active_module(), self._phase())
        snapshot = self._curr_mem_snap.get(self.device)
        if snapshot is not None:
            phase = self._phase()
            if snapshot[_TOTAL_KEY] > self.phase_peaks.get(phase, {}).get("total", -1):
                self.phase_peaks[phase] = _by_category(snapshot)
                self.phase_modules[phase] = self._active_module()

    def _active_module(self) -> str:
        """The innermost module running now (the deepest of the active ones), or the optimizer's step."""
        if self._in_opt:
            return "optimizer.step"
        active = [name for name in self._mod_tracker.parents if name != "Global"]
        return max(active, key=lambda name: name.count("."), default="")

    def _phase(self) -> str:
        return "optimizer" if self._in_opt else "backward" if self._mod_tracker.is_bw else "forward"

    def register(self, tensors: list[Any], category: Any) -> None:
        """Count tensors that exist before the tracker starts (quantization state, the batch) in `category`."""
        for tensor in tensors:
            self._update_and_maybe_create_winfos(tensor, category)

    def now(self) -> tuple[int, str]:
        """The live bytes on the tracked device and the step's phase, at this moment (for `bench plan`, which adds
        what an op allocates beyond its outputs)."""
        return int(self._curr_mem_snap.get(self.device, {}).get(_TOTAL_KEY, 0)), self._phase()

    def peak(self) -> dict[str, int]:
        """Bytes by category at the peak on the tracked device, and the peak itself as `total`."""
        return _by_category(self._peak_mem_snap.get(self.device, {}))


def _by_category(snapshot: dict[Any, int]) -> dict[str, int]:
    """A MemTracker snapshot as bytes by category, with the sum as `total`."""
    return {**{name: int(snapshot.get(kind, 0)) for kind, name in CATEGORIES.items()},
            "total": int(snapshot.get(_TOTAL_KEY, 0))}


def tracked_device(device: torch.device) -> Any:
    """The device as the tracker keys it (`cuda` becomes `cuda:<current>`)."""
    import torch

    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(device.type, device.index) if device.index is not None else torch.device(device.type)


def _batch_size(batch: dict[str, Any]) -> int:
    """Padded elements of the batch: what the activations of a step grow with."""
    ids = batch.get("input_ids")
    return int(ids.numel()) if ids is not None else sum(int(v.numel()) for v in batch.values())


class _Peak:
    """The largest peak seen in one phase (training or evaluation) and what it was made of."""

    def __init__(self) -> None:
        self.total, self.categories, self.where = -1, {}, ("", "")
        self.phases: dict[str, dict[str, int]] = {}  # phase -> its peak by category, with `total`
        self.phase_modules: dict[str, str] = {}  # phase -> the module its peak happened in

    def offer(self, tracker: _Tracker) -> None:
        peak = tracker.peak()
        if peak["total"] > self.total:
            self.total, self.where = peak.pop("total"), tracker.where
            self.categories = peak
        for phase, found in tracker.phase_peaks.items():
            if found["total"] > self.phases.get(phase, {}).get("total", -1):
                self.phases[phase] = found
                self.phase_modules[phase] = tracker.phase_modules.get(phase, "")


class TensorAccounting:
    """Which steps to watch, the trackers that watch them, and the resulting metrics."""

    def __init__(self, device: torch.device, policy: str, static_tensors: Any = None) -> None:
        self.device, self.policy = tracked_device(device), policy
        self._static = static_tensors or (lambda model: [])  # model -> tensors held outside params and buffers
        self._model = self._optimizer = None
        self._trainable: list[Any] = []
        self._largest: dict[bool, int] = {}  # per kind (runs on accumulated gradients or not): the largest batch
        self._watching = False
        self.train, self.eval = _Peak(), _Peak()
        self.watched_steps, self.watched_seconds, self._evaluated = 0, 0.0, False
        self.tracker: _Tracker | None = None  # the one watching now, if any
        self.largest_batch: tuple[int, int] = (0, 0)  # (rows, padded length) of the most padded elements met

    def start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """What every watched step must know about: the model and its optimizer."""
        self._model, self._optimizer = model, optimizer
        self._trainable = [p for p in model.parameters() if p.requires_grad]

    def _accumulating(self) -> bool:
        """Whether gradients of earlier micro-batches are alive: the update clears them (set to None), so only
        a micro-batch after the first of its optimizer step finds any."""
        return any(p.grad is not None for p in self._trainable)

    def watching(self) -> bool:
        """Whether the step now running is watched (its time is then left out of the throughput)."""
        return self._watching

    @contextlib.contextmanager
    def step(self, step: int, batch: dict[str, Any]) -> Iterator[None]:
        """Around one micro-batch of optimizer step `step`: watched if the policy says so."""
        if self._model is None:
            yield
            return
        watch, size = self.policy == "every", _batch_size(batch)
        ids = batch.get("input_ids")
        if ids is not None and ids.dim() == 2 and size > self.largest_batch[0] * self.largest_batch[1]:
            self.largest_batch = (int(ids.shape[0]), int(ids.shape[1]))
        if self.policy == "largest":
            kind = self._accumulating()
            watch = step <= 2 or size > self._largest.get(kind, -1)
            self._largest[kind] = max(self._largest.get(kind, -1), size)
        if not watch:
            yield
            return
        with self._watch(self.train, batch):
            yield

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """Around an evaluation: the first one is watched (every later one sees the same batches)."""
        if self.policy == "off" or self._evaluated or self._model is None:
            yield
            return
        self._evaluated = True
        with self._watch(self.eval, {}):
            yield

    @contextlib.contextmanager
    def _watch(self, into: _Peak, batch: dict[str, Any]) -> Iterator[None]:
        tracker = _Tracker(self.device)
        tracker.track_external(self._model, self._optimizer)
        tracker.register(list(self._static(self._model)), _MemRefType.PARAM)
        tracker.register([v for v in batch.values() if hasattr(v, "untyped_storage")], _MemRefType.OTH)
        started, self._watching = time.perf_counter(), into is self.train
        try:
            with warnings.catch_warnings(), tracker:
                # torch's ModTracker warns when autograd runs a hook of a module it no longer holds (peft's
                # wrappers); the peak it tracks does not depend on those hooks
                warnings.filterwarnings("ignore", message="Module is None", category=UserWarning)
                self.tracker = tracker
                yield
        finally:
            self._watching, self.tracker = False, None
            if into is self.train:
                self.watched_steps += 1
                self.watched_seconds += time.perf_counter() - started
            into.offer(tracker)

    def metrics(self) -> dict[str, float]:
        """`mem/tensor_peak_bytes`, `mem/at_peak/<category>_bytes`, `mem/eval_tensor_peak_bytes` and what
        watching cost; empty when nothing was watched."""
        out: dict[str, float] = {}
        if self.train.total >= 0:
            out["mem/tensor_peak_bytes"] = self.train.total
            out |= {f"mem/at_peak/{name}_bytes": value for name, value in self.train.categories.items()}
            out |= {"mem/watched_steps": self.watched_steps, "mem/watched_steps_s": self.watched_seconds}
        if self.largest_batch[0]:  # what a plan must assume to compare like with like (text is padded per batch)
            out |= {"mem/largest_batch_rows": self.largest_batch[0], "mem/largest_batch_length": self.largest_batch[1]}
        if self.eval.total >= 0:
            out["mem/eval_tensor_peak_bytes"] = self.eval.total
        return out

    def tags(self) -> dict[str, str]:
        """Where the training peak happened: `mem/peak_module` and `mem/peak_phase`; the policy."""
        tags = {"mem/tensor_policy": self.policy}
        if self.train.total >= 0:
            tags |= {"mem/peak_module": self.train.where[0], "mem/peak_phase": self.train.where[1]}
        return tags
