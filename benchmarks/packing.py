"""Packing (`data.packing=true`) against padding per batch: the same epoch of the same examples, on this machine.

By default, what an epoch's batches hold, without training (seconds): the train split of `experiment=smollm2-quick`
(256 sentiment tweets as SFT pairs, SmolLM2's tokenizer, batch 8) batched as `bench run` batches it, padded and
packed, at each `--lengths` (data.max_length): batches (optimizer steps), real tokens (prompt and answer), token
positions computed (rows x width, padding included) and the share of them that is real.

With `--train`, it runs `bench run experiment=smollm2-quick hydra.mode=RUN method=<m>` twice through the real CLI,
padded and packed, each into a store of its own in a temporary folder, and reads back what the runs logged:
optimizer steps, real tokens trained (`train/tokens`: prompt and answer tokens, never padding, for both), the
training clock (`train/time_s`) and `train/tokens_per_s` (after warm-up), the validation loss and the process
peak. Both epochs train on every example once, so the tokens must be equal; the time is what packing saves. The
load average before and after each run is recorded: on a shared machine the absolute numbers move.

    python benchmarks/packing.py                          # the batches at max_length 96 and 256
    python benchmarks/packing.py --train                  # and two LoRA epochs, padded and packed (minutes)
    python benchmarks/packing.py --train --method full --overrides data.max_length=128

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


def density(lengths: list[int]) -> list[dict[str, Any]]:
    """The padded and the packed batches of smollm2-quick's train split at each length."""
    from omegaconf import OmegaConf, open_dict

    from bench.cli import compose
    from bench.config import RunConfig
    from bench.models.load import load_tokenizer, resolve_location
    from bench.tasks.base import batch_counts
    from bench.tasks.causal.encode import pick_format, train_loader
    from bench.tasks.causal.pack import packed_loader
    from bench.tasks.causal.sft import load_sft_splits

    rows = []
    for length in lengths:
        cfg = compose(["experiment=smollm2-quick", "hydra.mode=RUN", f"data.max_length={length}"])
        with open_dict(cfg):
            del cfg["output_dir"]
        run_cfg = RunConfig.from_dict(OmegaConf.to_container(cfg, resolve=True))
        tokenizer = load_tokenizer(run_cfg.model, resolve_location(run_cfg.model))
        fmt, pairs = pick_format(tokenizer, run_cfg.data.prompt_format), load_sft_splits(run_cfg.data).train
        for name, make in (("padded", train_loader), ("packed", packed_loader)):
            loader = make(pairs, tokenizer=tokenizer, fmt=fmt, max_length=length,
                          batch_size=run_cfg.trainer.batch_size, seed=run_cfg.seed)
            counted = [(batch_counts(batch), batch["input_ids"].numel()) for batch in loader]
            real, positions = sum(c[0][2] for c in counted), sum(c[1] for c in counted)
            rows.append({"max_length": length, "batches": name, "steps": len(counted),
                         "examples": sum(c[0][1] for c in counted), "real_tokens": real, "positions": positions,
                         "real_share": real / positions})
    return rows


def render_density(rows: list[dict[str, Any]]) -> str:
    """The markdown table of the batches."""
    lines = ["# Packing vs padding: the batches of one epoch of `experiment=smollm2-quick` (256 tweets, batch 8)", "",
             "| max_length | batches | steps | examples | real tokens | positions computed | real share |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['max_length']} | {r['batches']} | {r['steps']} | {r['examples']} | {r['real_tokens']:,} | "
              f"{r['positions']:,} | {r['real_share']:.1%} |" for r in rows]
    return "\n".join(lines) + "\n"


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
    """The batches, and with --train both runs; then the report files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[96, 256])
    parser.add_argument("--train", action="store_true", help="also train an epoch padded and one packed")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--overrides", nargs="*", default=[], help="more `bench run` overrides, for both runs")
    args = parser.parse_args()
    out = ROOT / "reports" / "perf"
    batches = density(args.lengths)
    (out / "packing.json").write_text(json.dumps({"batches": batches}, indent=2) + "\n")
    text = render_density(batches)
    if args.train:
        with tempfile.TemporaryDirectory() as folder:
            trained = [run(args.method, packing, args.overrides, Path(folder)) for packing in (False, True)]
        (out / "packing.json").write_text(json.dumps({"batches": batches, "runs": trained}, indent=2) + "\n")
        text += "\n" + render(trained, args.method, args.overrides)
    (out / "packing.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
