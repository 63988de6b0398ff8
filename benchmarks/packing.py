"""Packing (`data.packing=true`) against padding per batch: the same epoch of the same examples, on this machine.

Runs `bench run experiment=smollm2-quick hydra.mode=RUN method=<m>` twice through the real CLI, padded and packed,
each into a store of its own in a temporary folder, and reads back what the runs logged: optimizer steps, real
tokens trained (`train/tokens`: prompt and answer tokens, never padding, for both), the training clock
(`train/time_s`) and `train/tokens_per_s` (after warm-up), the validation loss and the process peak. Both epochs
train on every example once, so the tokens must be equal; the time is what packing saves. The load average
before and after each run is recorded: on a shared machine the absolute numbers move.

    python benchmarks/packing.py                    # LoRA, SmolLM2-135M, 256 tweets, max_length 96, batch 8
    python benchmarks/packing.py --method full --overrides data.max_length=128

Results go to reports/perf/packing.json and packing.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("train/steps", "train/tokens", "train/time_s", "train/tokens_per_s", "eval/loss", "mem/peak_rss_bytes")


def run(method: str, packing: bool, overrides: list[str], folder: Path) -> dict[str, Any]:
    """One run through the CLI; its logged figures and the load average around it."""
    import mlflow

    store = f"sqlite:///{folder / f'{packing}.db'}"
    before = os.getloadavg()[0]
    command = [sys.executable, "-c", "import sys; from bench.cli import main; sys.exit(main())", "run",
               "experiment=smollm2-quick", "hydra.mode=RUN", f"method={method}", f"data.packing={str(packing).lower()}",
               "tracker.log_model=false", "deploy.measure=false", f"tracker.uri={store}",
               f"hydra.run.dir={folder / str(packing)}", *overrides]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"run failed ({done.returncode}): {done.stderr[-2000:]}")
    mlflow.set_tracking_uri(store)
    found = mlflow.search_runs(experiment_names=["bench"]).iloc[0]
    return {"packing": packing, **{name: float(found.get(f"metrics.{name}", float("nan"))) for name in FIGURES},
            "load_before": before, "load_after": os.getloadavg()[0]}


def render(rows: list[dict[str, Any]], method: str, overrides: list[str]) -> str:
    """The markdown table of both runs."""
    lines = [f"# Packing vs padding: `bench run experiment=smollm2-quick hydra.mode=RUN method={method}"
             f"{''.join(' ' + o for o in overrides)}`", "",
             "| batches | steps | real tokens | train time (s) | tokens/s | eval/loss | peak RSS (GB) "
             "| load before → after |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {'packed' if row['packing'] else 'padded'} | {row['train/steps']:.0f} | "
                     f"{row['train/tokens']:,.0f} | {row['train/time_s']:.1f} | {row['train/tokens_per_s']:,.0f} | "
                     f"{row['eval/loss']:.4f} | {row['mem/peak_rss_bytes'] / 1e9:.2f} | "
                     f"{row['load_before']:.2f} → {row['load_after']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Both runs, then the report files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lora")
    parser.add_argument("--overrides", nargs="*", default=[], help="more `bench run` overrides, for both runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = [run(args.method, packing, args.overrides, Path(folder)) for packing in (False, True)]
    out = ROOT / "reports" / "perf"
    (out / "packing.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "packing.md").write_text(render(rows, args.method, args.overrides))
    print(render(rows, args.method, args.overrides))


if __name__ == "__main__":
    main()
