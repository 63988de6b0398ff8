"""The model and the data of one rank: DDP or FSDP2 around the model, each rank's shard of the training batches.

torch.distributed is the engine, as in torchtune, LLaMA-Factory and axolotl: `DistributedDataParallel` (every
rank holds the whole model; a bucket's gradients are averaged by all-reduce while backward goes on) and FSDP2's
`fully_shard` (each transformer layer, then the root: parameters, gradients and optimizer state live in shards
of 1/N; a layer's parameters are all-gathered for its forward and backward, its gradients reduce-scattered).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class CommTimer:
    """DDP's all-reduce time on this rank: each gradient bucket from the launch of its all-reduce to its
    completion, summed. Backward goes on meanwhile, so this is the communication's own duration, not the time
    it added to the step. On CUDA the bucket is timed by events on the stream (the host sees only the launch);
    they are read once, at the end."""

    seconds: float = 0.0
    buckets: int = 0
    _events: list[tuple[Any, Any]] = field(default_factory=list)

    def total_seconds(self) -> float:
        """Host-timed seconds plus the CUDA events' (synchronising once)."""
        if self._events:
            import torch

            torch.cuda.synchronize()
            self.seconds += sum(start.elapsed_time(end) for start, end in self._events) / 1000
            self._events.clear()
        return self.seconds


def _timed_allreduce(timer, bucket):  # noqa: ANN001, ANN202 - DDP checks a hook's annotations against its own types
    """DDP's own all-reduce hook (average over ranks), with the bucket's duration recorded."""
    import torch
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    on_cuda = bucket.buffer().is_cuda
    if on_cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    started = time.perf_counter()
    future = default_hooks.allreduce_hook(None, bucket)

    def finished(done: Any) -> Any:
        timer.buckets += 1
        if on_cuda:
            end.record()
            timer._events.append((start, end))
        else:
            timer.seconds += time.perf_counter() - started
        return done.value()

    return future.then(finished)


def transformer_layers(model: torch.nn.Module) -> list[Any]:
    """The model's repeated blocks, by the classes transformers never splits across devices
    (`_no_split_modules`: BertLayer, LlamaDecoderLayer, ...): FSDP's units."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or [])
    return [module for module in model.modules() if type(module).__name__ in names]


def wrap_model(model: torch.nn.Module, *, strategy: str, device: torch.device) -> tuple[Any, CommTimer | None]:
    """The model as `strategy` trains it, and DDP's all-reduce timer (None under FSDP: its all-gathers and
    reduce-scatters run inside fully_shard's own hooks and streams, overlapped with compute, and torch offers
    no hook to time them, so they are not told apart from the step's time)."""
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        # gradient_as_bucket_view: the gradients are views into the buckets, so DDP holds no second copy of them
        ddp = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                      gradient_as_bucket_view=True)
        timer = CommTimer()
        ddp.register_comm_hook(timer, _timed_allreduce)
        return ddp, timer
    from torch.distributed.fsdp import fully_shard

    for layer in transformer_layers(model):
        fully_shard(layer)
    fully_shard(model)  # the root: embeddings, head and whatever no layer holds
    return model, None


def unwrapped(model: torch.nn.Module) -> Any:
    """The module inside a DDP wrapper (what the levers and the shipping see); the model itself otherwise."""
    return getattr(model, "module", model)


class EpochLoader:
    """A DataLoader over this rank's shard (`DistributedSampler`: each rank a disjoint 1/N of the rows, padded
    by repetition so every rank takes the same number of steps), reshuffled each epoch by the run's seed."""

    def __init__(self, loader: Any, sampler: Any) -> None:
        self.loader, self.sampler, self.epoch = loader, sampler, 0

    def __iter__(self) -> Any:
        self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def shard_loader(loader: Any, *, seed: int) -> EpochLoader:
    """The training batches of this rank, of the same `batch_size` (per rank) as `loader`'s."""
    from torch.utils.data import DataLoader, DistributedSampler

    sampler = DistributedSampler(loader.dataset, shuffle=True, seed=seed)
    return EpochLoader(DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                                  collate_fn=loader.collate_fn), sampler)
