"""What each rank measured, and the run's figures made of them on rank 0.

Sizes come from the tensors each rank really holds: under FSDP a parameter is a DTensor, and its local shard
(`to_local()`) is what the rank holds, so FSDP's 1/N is measured, never computed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from bench.core.metrics import TENSOR_PEAK_BYTES, TRAIN_TOKENS_PER_S

if TYPE_CHECKING:
    import torch

    from bench.measure.monitor import Monitor

# the per-rank figures summed into the run's throughput; the rest are per rank, with the maximum as the run's
SUMMED = {"tokens_per_s": TRAIN_TOKENS_PER_S, "samples_per_s": "train/samples_per_s", "tokens": "train/tokens"}


def local(tensor: torch.Tensor) -> Any:
    """The part of `tensor` this rank holds: a DTensor's local shard, any other tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def held_bytes(tensors: Any) -> int:
    """Bytes of the local parts of `tensors`, each storage once (tied weights share one)."""
    seen: dict[tuple[int, int], int] = {}
    for tensor in tensors:
        part = local(tensor)
        storage = part.untyped_storage()
        seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
    return sum(seen.values())


def rank_figures(model: torch.nn.Module, *, result: Any, monitor: Monitor, comm: Any) -> dict[str, float]:
    """This rank's figures after training: its throughput, tensor peak, and the parameters, gradients and
    optimizer state it holds (the parameters now; the gradients and optimizer state as the first step left
    them, sized from the real tensors by `bench.models.footprint.training_state_bytes`)."""
    from bench.measure.monitor.summary import allocator_metrics

    tensors = monitor.tensors.metrics() if getattr(monitor, "tensors", None) is not None else {}
    allocator = allocator_metrics(monitor)
    figures = {"tokens_per_s": result.timing.get(TRAIN_TOKENS_PER_S, math.nan),
               "samples_per_s": result.timing.get("train/samples_per_s", math.nan),
               "tokens": float(result.tokens), "time_s": result.time_s,
               "params_bytes": float(held_bytes(model.parameters())),
               "grads_bytes": float(result.state_bytes.get("mem/grads_bytes", math.nan)),
               "optimizer_bytes": float(result.state_bytes.get("mem/optimizer_bytes", math.nan)),
               "tensor_peak_bytes": float(tensors.get(TENSOR_PEAK_BYTES, math.nan)),
               "allocator_peak_bytes": float(allocator.get("mem/allocator_peak_bytes", math.nan))}
    if comm is not None:
        figures |= {"allreduce_s": comm.total_seconds(), "allreduce_buckets": float(comm.buckets)}
    return figures


def run_figures(figures: list[dict[str, float]], *, strategy: str, backend: str) -> tuple[dict[str, float],
                                                                                         dict[str, str]]:
    """The run's metrics and tags from every rank's figures (rank order): each rank's as `dist/rank{r}/<name>`,
    throughput summed over the ranks, the tensor and allocator peaks the largest rank's (what the GPUs must each
    hold)."""
    metrics: dict[str, float] = {"dist/world_size": float(len(figures))}
    for rank, own in enumerate(figures):
        metrics |= {f"dist/rank{rank}/{name}": value for name, value in own.items()}
    for name, total in SUMMED.items():
        metrics[total] = sum(own[name] for own in figures)
    for name in ("tensor_peak_bytes", "allocator_peak_bytes", "params_bytes", "grads_bytes", "optimizer_bytes",
                 "allreduce_s"):
        values = [own[name] for own in figures if name in own and not math.isnan(own[name])]
        if values:
            metrics[f"dist/max_{name}"] = max(values)
    for name in ("tensor_peak_bytes", "allocator_peak_bytes"):  # what the GPUs must each hold
        if f"dist/max_{name}" in metrics:
            metrics[f"mem/{name}"] = metrics[f"dist/max_{name}"]
    tags = {"dist/strategy": strategy, "dist/backend": backend,
            "dist/comm": "DDP all-reduce per bucket, launch to completion (overlaps backward)" if strategy == "ddp"
            else "not told apart: FSDP's all-gathers and reduce-scatters run inside fully_shard's hooks"}
    return metrics, tags


def per_rank(metrics: dict[str, float]) -> list[dict[str, float]]:
    """Each rank's figures back from a run's metrics (`dist/rank{r}/<name>`, as `run_figures` logs them), in rank
    order; empty for a single-process run."""
    return [{key.rpartition("/")[2]: value for key, value in metrics.items() if key.startswith(f"dist/rank{rank}/")}
            for rank in range(int(metrics.get("dist/world_size", 0)))]


def full_state_dict(model: torch.nn.Module) -> dict[str, Any]:
    """The whole model's state, gathered from every rank's shards onto rank 0's host memory (every rank must
    call it; the others get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
