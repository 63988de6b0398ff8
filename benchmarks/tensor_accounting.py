"""What the tensor accounting costs, and why it watches a few steps rather than all of them.

For each technique, on the real model and data of the default run: a built model trains steps alternately
watched (under torch's MemTracker, as `monitor.tensors=every` would) and unwatched, so a drifting machine load
hits both alike; the ratio of their median step times is the cost of watching one step. Then the `largest`
policy is played over the default run's real batch order (both epochs) to count the steps it would watch,
which gives the share of a run's training time that watching costs.

    python benchmarks/tensor_accounting.py                     # full, lora, qlora on MiniLM, 12 steps each
    python benchmarks/tensor_accounting.py --methods lora --pairs 20 model=tiny-bert

Results go to reports/perf/tensor_accounting.json and .md, with the conditions they were measured under.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _config(method: str, overrides: list[str]) -> Any:
    from omegaconf import OmegaConf

    from bench.cli import compose
    from bench.config import RunConfig

    raw = OmegaConf.to_container(compose([f"method={method}", "output_dir=/tmp/bench-tensor-perf", *overrides]),
                                 resolve=True)
    return RunConfig.from_dict(raw)  # type: ignore[arg-type]


def _setup(cfg: Any) -> tuple[Any, Any, Any]:
    """The model as `bench run` builds it, its optimizer, and the run's training batches."""
    import torch

    from bench.models.build import build_model
    from bench.models.load import load_tokenizer, model_config, resolve_location
    from bench.models.precision import pick_device
    from bench.tasks.data import load_splits, make_loaders
    from bench.training.loop import build_optimizer

    device = pick_device(cfg.trainer.device)
    splits = load_splits(cfg.data)
    location = resolve_location(cfg.model)
    tokenizer = load_tokenizer(cfg.model, location)
    loader, _ = make_loaders(splits, tokenizer=tokenizer, max_length=cfg.data.max_length,
                             batch_size=cfg.trainer.batch_size, eval_batch_size=cfg.trainer.batch_size, seed=cfg.seed)
    built = build_model(method=cfg.method, spec=cfg.model, location=location, labels=splits.labels, device=device,
                        model_type=model_config(cfg.model, location, splits.labels).model_type)
    built.model.train()
    autocast = torch.autocast(device.type, dtype=built.compute_dtype, enabled=built.compute_dtype != torch.float32)
    return built, build_optimizer(built.model, cfg.trainer), (device, loader, autocast)


def _step(model: Any, optimizer: Any, batch: dict[str, Any], autocast: Any) -> None:
    with autocast:
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def watch_cost(cfg: Any, pairs: int) -> dict[str, Any]:
    """Median step time watched and unwatched, alternating, on the same largest batch of the run."""
    from bench.measure.monitor.tensors import TensorAccounting
    from bench.models.footprint import held_outside_parameters

    built, optimizer, (device, loader, autocast) = _setup(cfg)
    batch = max(loader, key=lambda b: b["input_ids"].numel())  # one shape throughout: only watching differs
    batch = {k: v.to(device) for k, v in batch.items()}
    accounting = TensorAccounting(device, "every", held_outside_parameters)
    accounting.start(built.model, optimizer)
    for _ in range(3):  # warm-up: lazy initialisation, optimizer state, kernel caches
        _step(built.model, optimizer, batch, autocast)
    times: dict[str, list[float]] = {"plain": [], "watched": []}
    for number in range(2 * pairs):
        watched = number % 2 == 1
        started = time.perf_counter()
        if watched:
            with accounting.step(3 + number, batch):
                _step(built.model, optimizer, batch, autocast)
        else:
            _step(built.model, optimizer, batch, autocast)
        times["watched" if watched else "plain"].append(time.perf_counter() - started)
    plain, watched = statistics.median(times["plain"]), statistics.median(times["watched"])
    return {"plain_step_s": round(plain, 4), "watched_step_s": round(watched, 4), "ratio": round(watched / plain, 2),
            "tensor_peak_bytes": accounting.metrics()["mem/tensor_peak_bytes"]}


def watched_by_policy(cfg: Any) -> tuple[int, int]:
    """(steps the `largest` policy watches, steps) over the default run's real batch order and epochs."""
    _, _, (_, loader, _) = _setup(cfg)
    largest, watched, steps = -1, 0, 0
    for _ in range(cfg.trainer.epochs):
        for batch in loader:
            steps += 1
            size = batch["input_ids"].numel()
            if steps <= 2 or size > largest:
                watched += 1
                largest = max(largest, size)
    return watched, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="full,lora,qlora")
    parser.add_argument("--pairs", type=int, default=6, help="watched/unwatched step pairs per technique")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for method in args.methods.split(","):
        cfg = _config(method, args.overrides)
        cost = watch_cost(cfg, args.pairs)
        watched, steps = watched_by_policy(cfg)
        share = watched * (cost["watched_step_s"] - cost["plain_step_s"]) / (steps * cost["plain_step_s"])
        rows.append({"method": method, **cost, "watched_steps": watched, "steps": steps,
                     "run_time_added_pct": round(100 * share, 2)})
        print(rows[-1], flush=True)
    _write(rows, args, cfg)


def _write(rows: list[dict[str, Any]], args: argparse.Namespace, cfg: Any) -> None:
    out = ROOT / "reports" / "perf"
    out.mkdir(parents=True, exist_ok=True)
    conditions = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv),
                  "model": cfg.model.name, "batch": f"{cfg.trainer.batch_size} x {cfg.data.max_length}",
                  "torch_threads": args.threads, "loadavg": [round(x, 2) for x in os.getloadavg()]}
    (out / "tensor_accounting.json").write_text(json.dumps({"conditions": conditions, "rows": rows}, indent=2) + "\n")
    lines = ["# Tensor accounting: what watching a step costs", "", f"`{conditions['command']}` at "
             f"{conditions['date']}; {conditions['model']}, batch {conditions['batch']} (the run's largest), "
             f"{args.threads} torch thread(s), load average {conditions['loadavg']}.", "",
             "| technique | unwatched step | watched step | ratio | steps watched by `largest` | of | run time added |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['plain_step_s'] * 1000:.0f} ms | {r['watched_step_s'] * 1000:.0f} ms | "
              f"{r['ratio']:.2f}x | {r['watched_steps']} | {r['steps']} | {r['run_time_added_pct']:.1f} % |"
              for r in rows]
    (out / "tensor_accounting.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
