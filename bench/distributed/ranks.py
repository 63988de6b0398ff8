"""One rank's share of a distributed run: the checks before it starts, its tracker, its model and batches, and
the figures every rank sends rank 0 when training is over.

Every rank builds the model and trains; rank 0 alone talks to MLflow (the others get `NullTracker`), so a
distributed run is exactly one MLflow run. After training the ranks gather their figures on rank 0, which logs
them per rank (`dist/rank{r}/...`) and as the run's totals; then the other ranks are done, and rank 0 evaluates
the test split, ships and measures deployment alone, on a plain model (under FSDP rebuilt from the gathered
full state dict).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import ConfigError, RunConfig, TrainerConfig
from bench.distributed.context import gather, join, rank_device, rank_info, under_launcher

if TYPE_CHECKING:
    import torch

    from bench.config import ModelConfig
    from bench.measure.monitor import Monitor
    from bench.models.build import BuiltModel

RUN_FILE_ENV = "BENCH_DIST_RUN_FILE"  # where rank 0 writes its MLflow run id for bench's launcher


def check_strategy(cfg: RunConfig, device: torch.device) -> None:
    """Combinations that cannot work, refused in one line before anything loads."""
    trainer, info = cfg.trainer, rank_info()
    if info.world_size > 1 and trainer.strategy == "single":
        raise ConfigError(f"a launcher started {info.world_size} processes but trainer.strategy=single would make "
                          "each its own run; set trainer.strategy=ddp or trainer.strategy=fsdp")
    if trainer.strategy == "single":
        return
    # FSDP2 unshards a Parameter subclass (bitsandbytes' Params4bit) into a plain Parameter, losing its quant_state:
    # with uint8 storage fully_shard fails, with quant_storage in the compute dtype it trains on garbage, silently
    # (axolotl-ai-cloud/axolotl#2992 patches bitsandbytes for it; huggingface/accelerate#3983)
    if trainer.strategy == "fsdp" and cfg.method.technique.quantized:
        raise ConfigError(f"method={cfg.method.name} with trainer.strategy=fsdp: FSDP2's fully_shard cannot shard "
                          f"{cfg.method.technique.base}'s packed 4-bit weights (they would lose their quantization "
                          "state); valid: quantized methods with trainer.strategy=ddp, or fsdp with full, lora and "
                          "the other unquantized methods")
    if trainer.strategy == "fsdp" and trainer.optimizer != "adamw":
        raise ConfigError(f"trainer.optimizer={trainer.optimizer} with trainer.strategy=fsdp: bitsandbytes' "
                          "optimizers step on plain tensors, not on FSDP's sharded DTensors; use "
                          "trainer.optimizer=adamw with fsdp, or trainer.strategy=ddp")
    if cfg.dry_run or device.type != "cuda":
        return
    import torch

    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size)) if under_launcher() else trainer.nproc
    if ranks > torch.cuda.device_count():  # ranks share GPUs: gloo (NCCL refuses two ranks on one device)
        if trainer.strategy == "fsdp":
            raise ConfigError(f"trainer.strategy=fsdp with {ranks} ranks on {torch.cuda.device_count()} GPU(s): ranks "
                              "that share a GPU talk through gloo, which all-reduces and broadcasts CUDA tensors but "
                              "cannot all-gather or reduce-scatter them; give each rank a GPU of its own "
                              "(trainer.nproc <= GPUs), or use trainer.strategy=ddp")
        if not under_launcher():  # said once, by the process that starts the ranks; the run's tag dist/backend
            print(f"note: {ranks} ranks on {torch.cuda.device_count()} GPU(s) share them through gloo (slower "
                  "than NCCL)", flush=True)


def needs_launch(trainer: TrainerConfig) -> bool:
    """Whether bench must start the run's processes itself (through torchrun): a distributed strategy, and no
    launcher (torchrun, srun) started this process as a rank."""
    return trainer.strategy != "single" and not under_launcher()


class NullTracker:
    """The tracker of ranks other than 0: the run's calls, answered by doing nothing."""

    run_id = experiment_id = uri = ""

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *_exc: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def open_tracker(spec: ModelConfig, **identity: Any) -> Any:
    """The run's MLflow tracker on rank 0 (or in a single process); a NullTracker on every other rank."""
    from bench.tracking.tracker import Tracker

    return Tracker(spec, **identity) if rank_info().is_main else NullTracker()


def announce(run_id: str) -> None:
    """Rank 0 of a run bench launched tells the launcher its run id, so a failure on any rank can close it."""
    path = os.environ.get(RUN_FILE_ENV)
    if path and run_id and rank_info().is_main:
        Path(path).write_text(run_id)


@dataclass
class RankRun:
    """What a rank of a run does around the one training loop (a no-op in a single process)."""

    strategy: str = "single"
    device: torch.device | None = None
    backend: str = ""
    comm: Any = None  # bench.distributed.wrap.CommTimer under DDP
    model: torch.nn.Module | None = None  # as trained: the DDP wrapper, or the model FSDP sharded in place

    @property
    def distributed(self) -> bool:
        return self.strategy != "single"

    @property
    def ships_interrupted(self) -> bool:
        """Whether an interrupted run saves its adapter here: in a single process, and on rank 0 of DDP, whose
        model is whole; not on the other ranks (rank 0 saves it), nor under FSDP (its shards need every rank,
        and an interrupt stops them all)."""
        return not self.distributed or (self.strategy == "ddp" and rank_info().is_main)

    @classmethod
    def start(cls, trainer: TrainerConfig, device: torch.device) -> RankRun:
        """Join the process group where the strategy is distributed; the rank's own device."""
        if trainer.strategy == "single":
            return cls(device=device)
        device = rank_device(device)
        return cls(strategy=trainer.strategy, device=device, backend=join(device))

    def prepare(self, model: torch.nn.Module, train_loader: Any, *, seed: int) -> tuple[Any, Any]:
        """The model as the strategy trains it and this rank's shard of the training batches."""
        if not self.distributed:
            return model, train_loader
        from bench.distributed.wrap import shard_loader, wrap_model

        self.model, self.comm = wrap_model(model, strategy=self.strategy, device=self.device)
        return self.model, shard_loader(train_loader, seed=seed)

    def folder(self, name: str) -> str:
        """`name` for rank 0 (or a single process), `name-rank<r>` for the others: their files never collide."""
        rank = rank_info().rank if self.distributed else 0
        return name if rank == 0 else f"{name}-rank{rank}"

    def run_figures(self, figures: list[dict[str, float]], measured: dict[str, float], tags: dict[str, str], *,
                    plan: Any) -> tuple[dict[str, float], dict[str, str]]:
        """Rank 0's measured metrics and tags with every rank's figures in: per rank, summed throughput, the
        largest tensor peak (and the plan's error against it)."""
        from bench.distributed.figures import run_figures
        from bench.measure.monitor.results import prediction_errors

        metrics, dist_tags = run_figures(figures, strategy=self.strategy, backend=self.backend)
        measured = {**measured, **metrics}
        return {**measured, **prediction_errors(plan, measured)}, {**tags, **dist_tags}

    def finish(self, built: BuiltModel, *, result: Any, monitor: Monitor, rebuild: Callable[[], Any]) -> tuple[Any,
               list]:
        """After training, on every rank together: gather each rank's figures on rank 0, and under FSDP the full
        state dict. Returns (the plain model's build, every rank's figures) on rank 0, (None, []) elsewhere."""
        from bench.distributed.figures import rank_figures

        figures = gather(rank_figures(self.model, result=result, monitor=monitor, comm=self.comm))
        if self.strategy == "fsdp":
            from dataclasses import replace

            from bench.distributed.figures import full_state_dict

            state = full_state_dict(self.model)
            if not rank_info().is_main:
                return None, []
            plain = rebuild()
            plain.model.load_state_dict(state)
            return replace(built, model=plain.model), figures
        return (built, figures) if rank_info().is_main else (None, [])
