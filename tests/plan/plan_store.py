"""A synthetic MLflow store of measured throughput and memory for `bench plan`, written with mlflow directly (no
training): runs that must calibrate tiny-llama's LoRA on an RTX 4090 at 32 tokens, and decoys that differ from
it in one way each. The figures here are the ground truth the calibration tests recompute by hand: throughput
for `--tokens`, and the memory a run held beyond its tensors (`bench.plan.overhead`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

RTX4090, A100 = "NVIDIA GeForce RTX 4090", "NVIDIA A100-SXM4-80GB"
MIB = 2 ** 20
LEVERS = {"trainer.gradient_checkpointing": "False", "trainer.optimizer": "adamw", "trainer.grad_accum_steps": "1"}


@dataclass
class Measured:
    """One run as `bench run` records it: tags, params, `train/tokens_per_s`, status."""

    name: str
    tokens_per_s: float
    model: str = "tiny-llama"
    technique: str = "lora"
    gpu: str | None = RTX4090  # None: a CPU run
    max_length: int = 32
    levers: dict[str, str] = field(default_factory=lambda: dict(LEVERS))
    status: str = "FINISHED"
    # MiB: tensor peak, allocator peak, then reserved and NVML process (CUDA) or peak RSS (CPU); () for none
    memory: tuple[float, ...] = ()

    def memory_metrics(self) -> dict[str, float]:
        """The memory figures as `bench run` logs them."""
        if not self.memory:
            return {}
        names = ["tensor_peak", "allocator_peak"] + (["peak_reserved", "peak_nvml_process"] if self.gpu else
                                                     ["peak_rss"])
        return {f"mem/{name}_bytes": value * MIB for name, value in zip(names, self.memory, strict=True)}

    def calibrates(self, *, technique: str, checkpointing: bool, gpu: str | None) -> bool:
        """Whether this run should calibrate tiny-llama's `technique` at 32 tokens on `gpu` (None: the CPU)."""
        logged = self.levers.get("trainer.gradient_checkpointing", "False")  # an old run: the default
        return (self.status == "FINISHED" and self.model == "tiny-llama" and self.technique == technique
                and self.max_length == 32 and self.gpu == gpu and logged == str(checkpointing))


RUNS = [
    Measured("lora-4090-a", 1000.0, memory=(10, 76, 110, 610)),
    Measured("lora-4090-old", 1600.0, levers={}, memory=(10, 80, 140, 640)),  # from before the levers: defaults
    Measured("lora-4090-ckpt", 700.0, levers={**LEVERS, "trainer.gradient_checkpointing": "True"},
             memory=(6, 71, 90, 590)),
    Measured("lora-a100", 5000.0, gpu=A100, memory=(10, 90, 150, 900)),
    Measured("lora-cpu", 90.0, gpu=None, memory=(10, 10.5, 700)),
    Measured("lora-4090-len64", 800.0, max_length=64, memory=(15, 85, 200, 700)),
    Measured("lora-4090-failed", 9000.0, status="FAILED", memory=(10, 500, 900, 2000)),
    Measured("qlora-4090", 600.0, technique="qlora", memory=(9, 75, 100, 601)),
    Measured("bert-4090", 7000.0, model="tiny-bert", memory=(4, 70, 74, 800)),
    Measured("full-a100", 4000.0, technique="full", gpu=A100),  # full on the 4090 stays uncalibrated
]


def build_store(folder: Path, runs: list[Measured] = RUNS) -> str:
    """The store, in two experiments (calibration looks across them); returns its URI."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiments = [client.create_experiment(name, artifact_location=(folder / name).as_uri())
                   for name in ("bench", "other")]
    for index, run in enumerate(runs):
        device = "cpu" if run.gpu is None else "cuda:0"
        tags = {"model": run.model, "technique": run.technique, "hw/device": device,
                **({"hw/gpu": run.gpu} if run.gpu else {})}
        params = {"data.max_length": str(run.max_length), "method.name": run.technique, **run.levers}
        run_id = client.create_run(experiments[index % 2], run_name=run.name).info.run_id
        figures = {"train/tokens_per_s": run.tokens_per_s, **run.memory_metrics()}
        client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in figures.items()],
                         params=[Param(k, v) for k, v in params.items()], tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(run_id, run.status)
    return uri
