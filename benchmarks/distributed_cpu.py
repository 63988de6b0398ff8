"""One run on two CPU processes (gloo) against one process at the same global batch, through the real CLI.

A MiniLM-shaped random-init model (6 layers, hidden 384, 22.7 M parameters), full fine-tuning in fp32 without
dropout, 32 training rows: one global batch of 32 is the whole epoch, so the single process (batch 32), DDP and
FSDP (2 ranks x 16) see the same rows at every step, and their losses may differ only by the order of float sums.
Every configuration runs on one torch thread per process (torchrun's default for its ranks). Prints the losses,
tokens/s per rank and in total, each rank's tensor peak and the parameters, gradients and optimizer state it
holds, DDP's all-reduce time, and the plan's error against the measured peak. The store and Hydra's folders go to
a temporary folder (or `--work`).

    python benchmarks/distributed_cpu.py                   # ~3 minutes on 2 cores
    python benchmarks/distributed_cpu.py --steps 3
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 2**20
MINILM = ["model=tiny-bert", "model.architecture.hidden_size=384", "model.architecture.num_hidden_layers=6",
          "model.architecture.num_attention_heads=12", "model.architecture.intermediate_size=1536",
          "model.architecture.max_position_embeddings=512", "+model.architecture.hidden_dropout_prob=0.0",
          "+model.architecture.attention_probs_dropout_prob=0.0"]
CONFIGS = {"single": ["trainer.batch_size=32"],
           "ddp": ["trainer.strategy=ddp", "trainer.nproc=2", "trainer.batch_size=16"],
           "fsdp": ["trainer.strategy=fsdp", "trainer.nproc=2", "trainer.batch_size=16"]}


def run(name: str, *, work: Path, steps: int) -> float:
    """One configuration through `bench run`; its wall time."""
    store = f"sqlite:///{work / 'mlflow.db'}"
    command = [sys.executable, "-m", "bench.cli", "run", *MINILM, "method=full", "method.dtype=fp32",
               "data.max_train_samples=32", "data.max_eval_samples=32", "data.max_test_samples=32",
               "data.max_length=64", f"trainer.epochs={steps}", "trainer.threads=1", "monitor.warmup_steps=1",
               "deploy.measure=false", "tracker.log_model=false", f"tracker.uri={store}",
               f"tracker.experiment=distributed-{name}", f"hydra.run.dir={work / name}", *CONFIGS[name]]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=work, capture_output=True)
    return time.perf_counter() - started


def show(work: Path, walls: dict[str, float]) -> None:
    import mlflow

    from bench.distributed.figures import per_rank

    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    losses = {}
    for name in CONFIGS:
        runs = client.search_runs([client.get_experiment_by_name(f"distributed-{name}").experiment_id])
        assert len(runs) == 1, f"{name}: {len(runs)} MLflow runs"
        run, m = runs[0], runs[0].data.metrics
        history = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda point: point.step)
        losses[name] = [point.value for point in history]
        print(f"{name}: {run.info.status}, {walls[name]:.0f} s wall, {m['train/time_s']:.2f} s training, "
              f"{m['train/tokens_per_s']:.0f} tokens/s, tensor peak {m['mem/tensor_peak_bytes'] / MIB:.1f} MiB, "
              f"plan error {m.get('mem/prediction_error_pct', float('nan')):+.1f} %")
        if "dist/world_size" not in m:
            print(f"    params/grads/optimizer {m['mem/weights_bytes'] / MIB:.1f} / {m['mem/grads_bytes'] / MIB:.1f} "
                  f"/ {m['mem/optimizer_bytes'] / MIB:.1f} MiB")
        for rank, own in enumerate(per_rank(m)):
            print(f"    rank {rank}: {own['tokens_per_s']:.0f} tokens/s, tensor peak "
                  f"{own['tensor_peak_bytes'] / MIB:.1f} MiB, params/grads/optimizer {own['params_bytes'] / MIB:.1f}"
                  f" / {own['grads_bytes'] / MIB:.1f} / {own['optimizer_bytes'] / MIB:.1f} MiB"
                  + (f", all-reduce {own['allreduce_s']:.2f} s in {own['allreduce_buckets']:.0f} buckets"
                     if "allreduce_s" in own else ""))
    print("losses:", {name: [round(value, 7) for value in values] for name, values in losses.items()})
    for name in ("ddp", "fsdp"):
        worst = max(abs(a - b) / abs(a) for a, b in zip(losses["single"], losses[name], strict=True))
        print(f"{name} against one process: largest relative loss difference {worst:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="epochs of one step each")
    parser.add_argument("--work", type=Path, default=None, help="folder for the store (default: a temporary one)")
    options = parser.parse_args()
    work = options.work or Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    work.mkdir(parents=True, exist_ok=True)
    walls = {name: run(name, work=work, steps=options.steps) for name in CONFIGS}
    show(work, walls)


if __name__ == "__main__":
    main()
