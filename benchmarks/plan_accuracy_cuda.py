"""`bench plan` against the tensor peaks measured on a real GPU: reads the MLflow store that
`scripts/cuda_check.sh` brings back (`$OUT/store.tar.gz`), plans each run again on this machine for CUDA
(`PlannedDevice("cuda")`: bf16, fused attention, no GPU needed) at the largest batch the run met, and writes the
table to reports/perf/plan_accuracy_cuda.md.

Runs that log `plan/met_peak_bytes` (bench since the plan was compared like for like) already hold this
comparison; this script serves stores from before, and checks that a plan made here is the one made there.
The models' shapes are the ones scripts/cuda_check.sh trains (random weights at real shapes).

    python benchmarks/plan_accuracy_cuda.py /tmp/cuda/mlflow.db [more stores...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MIB = 2 ** 20
SMOLLM2 = ["model=tiny-llama", "model.architecture.hidden_size=576", "model.architecture.num_hidden_layers=30",
           "model.architecture.num_attention_heads=9", "model.architecture.num_key_value_heads=3",
           "model.architecture.intermediate_size=1536", "model.architecture.max_position_embeddings=2048"]
SHAPES = {  # experiment -> (shape it trained, as in scripts/cuda_check.sh)
    "cuda-minilm": ["model=tiny-bert", "model.architecture.hidden_size=384", "model.architecture.num_hidden_layers=6",
                    "model.architecture.num_attention_heads=12", "model.architecture.intermediate_size=1536",
                    "model.architecture.max_position_embeddings=512"],
    "cuda-smollm2": SMOLLM2, "cuda-levers": SMOLLM2,
}


def _runs(store: str) -> list[Any]:
    import mlflow

    mlflow.set_tracking_uri(store)
    names = [e.name for e in mlflow.search_experiments() if e.name in SHAPES]
    runs = mlflow.search_runs(experiment_names=names, output_format="list") if names else []
    return [run for run in runs if run.data.tags.get("sweep_role") != "parent" and run.info.status == "FINISHED"]


def _plan(experiment: str, params: dict[str, str], rows: int, length: int) -> Any:
    from omegaconf import OmegaConf

    from bench.cli import compose
    from bench.config import RunConfig
    from bench.models.precision import PlannedDevice
    from bench.plan.engine import plan_memory

    levers = [f"trainer.{name}={params[f'trainer.{name}']}" for name in ("optimizer", "gradient_checkpointing")]
    overrides = [*SHAPES[experiment], f"method={params['method.name']}", *levers, f"data.max_length={length}",
                 f"trainer.batch_size={rows}", "output_dir=."]
    cfg = RunConfig.from_dict(OmegaConf.to_container(compose(overrides), resolve=True))  # type: ignore[arg-type]
    return plan_memory(cfg, device=PlannedDevice("cuda"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stores", nargs="+", help="mlflow.db files from scripts/cuda_check.sh")
    args = parser.parse_args()
    lines = []
    for store in args.stores:
        for run in _runs(f"sqlite:///{Path(store).resolve()}"):
            m, p = run.data.metrics, run.data.params
            experiment = next(e for e in SHAPES if p.get("tracker.experiment") == e)
            rows, length = int(m["mem/largest_batch_rows"]), int(m["mem/largest_batch_length"])
            plan = _plan(experiment, p, rows, length)
            measured = m["mem/tensor_peak_bytes"]
            error = 100 * (plan.peak_bytes - measured) / measured
            lines.append(f"| {experiment.removeprefix('cuda-')} | {p['method.name']} | {p['trainer.optimizer']} | "
                         f"{p['trainer.gradient_checkpointing'].lower()} | {rows} x {length} | "
                         f"{m['plan/peak_bytes'] / MIB:,.1f} | {plan.peak_bytes / MIB:,.1f} | {measured / MIB:,.1f} | "
                         f"{error:+.2f} % | {m['mem/peak_allocated_bytes'] / MIB:,.1f} | "
                         f"{m['mem/peak_reserved_bytes'] / MIB:,.1f} | {m['mem/peak_nvml_process_bytes'] / MIB:,.1f} |")
            print(lines[-1], flush=True)
    head = ["# bench plan against bench run on an NVIDIA H200 (CUDA 13, torch 2.11)", "",
            f"`{' '.join(sys.argv)}` at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, over the store of "
            "`scripts/cuda_check.sh`. MiB. *plan (max_length)*: the plan the run made on the GPU before training, at "
            "`data.max_length`; *plan (batch met)*: made here for CUDA at the largest batch the run met (rows x "
            "padded length); *measured*: the run's training tensor peak; *error*: plan (batch met) against measured. "
            "Allocated, reserved and NVML (the process) are the run's own peaks, for scale.", "",
            "| model shape | technique | optimizer | checkpointing | batch met | plan (max_length) | plan (batch met) "
            "| measured | error | allocated | reserved | NVML process |", "|---" * 12 + "|"]
    out = ROOT / "reports" / "perf" / "plan_accuracy_cuda.md"
    out.write_text("\n".join(head + lines) + "\n")
    print(f"table: {out}")


if __name__ == "__main__":
    main()
