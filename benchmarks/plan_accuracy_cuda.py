"""`bench plan` against what runs measured on a real GPU: reads the MLflow store that `scripts/cuda_check.sh` brings
back (`$OUT/store.tar.gz`) and writes each run's comparison to reports/perf/plan_accuracy_cuda.md.

Each run is compared with its own plan (made in the run, on the GPU, at the largest batch it met): the tensor
peak (the plan's own accounting, a consistency check), the allocator's peak (the check: CUDA's peak allocated, an
instrument that shares no code with the plan), reserved and NVML's process figure, the last three with the terms
beyond the tensors calibrated from the runs stored before it (`plan/calibration`). A store from before bench
logged those (no `plan/met_allocator_peak_bytes`) has its runs planned again here for CUDA (`PlannedDevice("cuda")`:
bf16, fused attention, no GPU needed), at the tensor level only, and labelled so. The models' shapes are the ones
scripts/cuda_check.sh trains (random weights at real shapes).

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


def _pct(predicted: float, measured: float) -> str:
    return f"{100 * (predicted - measured) / measured:+.2f} %" if predicted and measured else "-"


def _row(experiment: str, params: dict[str, str], metrics: dict[str, float]) -> str:
    """One run against its own plan; a run that logged no allocator plan is planned again here (tensors only)."""
    m, nan = metrics, float("nan")
    rows, length = int(m["mem/largest_batch_rows"]), int(m["mem/largest_batch_length"])
    own = "plan/met_allocator_peak_bytes" in m
    tensor_plan = m.get("plan/met_peak_bytes") if own else _plan(experiment, params, rows, length).peak_bytes
    allocated = m.get("mem/allocator_peak_bytes", m["mem/peak_allocated_bytes"])  # on CUDA one figure
    figures = [(tensor_plan, m["mem/tensor_peak_bytes"]), (m.get("plan/met_allocator_peak_bytes"), allocated),
               (m.get("plan/met_reserved_bytes"), m["mem/peak_reserved_bytes"]),
               (m.get("plan/met_process_bytes"), m["mem/peak_nvml_process_bytes"])]
    cells = [f"{(planned or nan) / MIB:,.1f} / {measured / MIB:,.1f} ({_pct(planned, measured)})"
             for planned, measured in figures]
    return (f"| {experiment.removeprefix('cuda-')} | {params['method.name']} | {params['trainer.optimizer']} | "
            f"{params['trainer.gradient_checkpointing'].lower()} | {rows} x {length} | {' | '.join(cells)} | "
            f"{'own' if own else 're-planned here, tensors only'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stores", nargs="+", help="mlflow.db files from scripts/cuda_check.sh")
    args = parser.parse_args()
    lines = []
    for store in args.stores:
        for run in _runs(f"sqlite:///{Path(store).resolve()}"):
            experiment = next(e for e in SHAPES if run.data.params.get("tracker.experiment") == e)
            lines.append(_row(experiment, run.data.params, run.data.metrics))
            print(lines[-1], flush=True)
    head = ["# bench plan against bench run on a GPU", "",
            f"`{' '.join(sys.argv)}` at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, over the store of "
            "`scripts/cuda_check.sh`. Each cell: planned / measured MiB (error). *tensor*: the plan's tensor peak "
            "against the run's tensor accounting (the same accounting: a consistency check); *allocator*: the plan's "
            "allocator peak against CUDA's peak allocated (the independent check); *reserved* and *process*: the "
            "plan's against peak reserved and NVML's process figure. *plan*: the run's own plan at the largest batch "
            "it met, or one made here where the run logged none.", "",
            "| model shape | technique | optimizer | checkpointing | batch met | tensor | allocator | reserved | "
            "process | plan |", "|---" * 10 + "|"]
    out = ROOT / "reports" / "perf" / "plan_accuracy_cuda.md"
    out.write_text("\n".join(head + lines) + "\n")
    print(f"table: {out}")


if __name__ == "__main__":
    main()
