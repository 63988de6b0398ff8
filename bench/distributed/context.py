"""Which process of a distributed run this is, and the few collectives the rest of bench needs.

A process is a rank of a distributed run when a launcher started it as one: torchrun (bench's own, or an outer
one) sets `RANK`, `WORLD_SIZE` and `LOCAL_RANK`; `srun -n N` sets `SLURM_PROCID` and `SLURM_NTASKS`, which are
translated to torch's names here (one node: the ranks meet on this host). Everything else is a single process,
and every function here is then a no-op, so the single-process path never imports torch.distributed.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class RankInfo:
    """Where this process stands in its run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or os.environ.get("TORCHELASTIC_RUN_ID") is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that talks to MLflow and prints the run's result."""
        return self.rank == 0


def rank_info() -> RankInfo:
    """This process's rank, world size and local rank, from the launcher's environment."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return RankInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"])))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return RankInfo(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", "0")))
    return RankInfo()


def under_launcher() -> bool:
    """Whether a launcher (torchrun, srun) started this process as a rank: bench must not launch again."""
    return rank_info().distributed


def initialized() -> bool:
    """Whether this process joined a process group (lazily: no torch import in a single process)."""
    import sys

    if "torch.distributed" not in sys.modules:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank_device(device: torch.device) -> Any:
    """The device of this rank: on CUDA the GPU of its local rank (ranks share GPUs round-robin when there are
    more ranks than GPUs); the device unchanged elsewhere."""
    info = rank_info()
    if device.type != "cuda" or not info.distributed:
        return device
    import torch

    chosen = torch.device("cuda", info.local_rank % torch.cuda.device_count())
    torch.cuda.set_device(chosen)
    return chosen


def backend_for(device: torch.device) -> str:
    """nccl where every rank has a GPU of its own; gloo otherwise: on CPU, and when ranks share a GPU (NCCL
    refuses two ranks on one device; gloo moves CUDA tensors through the host, slower but the same results)."""
    if device.type != "cuda":
        return "gloo"
    import torch

    local = int(os.environ.get("LOCAL_WORLD_SIZE", rank_info().world_size))
    return "nccl" if local <= torch.cuda.device_count() else "gloo"


def join(device: torch.device) -> str:
    """Join the run's process group (once); returns the backend. srun's variables become torch's first."""
    import torch.distributed as dist

    info = rank_info()
    if "RANK" not in os.environ:  # srun -n N: torch reads its own names
        job = os.environ.get("SLURM_JOB_ID", "0")
        os.environ.update({"RANK": str(info.rank), "WORLD_SIZE": str(info.world_size),
                           "LOCAL_RANK": str(info.local_rank)})
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")  # one node: the SLURM config asks for nodes: 1
        os.environ.setdefault("MASTER_PORT", str(20000 + zlib.crc32(job.encode()) % 20000))
    backend = backend_for(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, device_id=device if backend == "nccl" else None)
    return backend


def leave() -> None:
    """Leave the process group, if this process joined one."""
    if initialized():
        import torch.distributed as dist

        dist.destroy_process_group()


def mean_over_ranks(values: Any) -> Any:
    """The mean of a tensor over the ranks (itself in a single process): the logged loss of a distributed run is
    every rank's loss averaged, so every rank sees the same value (and stops together on a NaN)."""
    if not initialized():
        return values
    import torch.distributed as dist

    reduced = values.clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / dist.get_world_size()


def gather(value: Any) -> list[Any]:
    """Every rank's `value` (picklable), in rank order; `[value]` in a single process."""
    if not initialized():
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values
