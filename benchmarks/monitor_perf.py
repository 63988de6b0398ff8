"""What measuring costs: bench with the monitor on vs off, bench's loop vs a minimal hand-written PyTorch loop,
and bench vs the Hugging Face Trainer, on the same model, the same batches and the same number of steps.

After one untimed run that warms the process up, each round runs the four variants once, each on a freshly
built model, in the orders of a Williams Latin square: over every 4 rounds each variant runs once in each
position and follows each other variant once, so neither a shared machine's drifting load nor a position
in the round favours a variant. A variant's figure is its median step time after warm-up, every step
timed the same way: wall clock from one optimizer step's end to the next (synchronised on CUDA). Per
round three speed ratios are formed, >1 meaning bench is faster; the result is the median over rounds:

    monitor on/off   = step(off) / step(on)          target >= 0.99  (the monitor costs at most 1 %)
    bench vs hand    = step(hand loop) / step(bench)  target >= 0.97
    bench vs Trainer = step(Trainer) / step(bench)    target >= 1.0

    python benchmarks/monitor_perf.py                       # LoRA on MiniLM, 8 rounds of 20 timed steps
    python benchmarks/monitor_perf.py --threads 1 --method full model=tiny-bert

A sampler tick is also timed alone, a bound on the monitor's cost that no machine noise can blur.

Results go to reports/perf/monitor.json and monitor.md, with the conditions they were measured under.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from perf_variants import fixed_costs, run_bench, run_hand, run_trainer  # beside this script

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("bench_monitor_on", "bench_monitor_off", "hand_loop", "hf_trainer")
WILLIAMS = ((0, 1, 3, 2), (1, 2, 0, 3), (2, 3, 1, 0), (3, 0, 2, 1))  # balanced for position and predecessor
TARGETS = {"monitor_on_off": 0.99, "bench_vs_hand": 0.97, "bench_vs_trainer": 1.0}


@dataclasses.dataclass
class Context:
    """Everything the variants share: the config, the batches, the device."""

    cfg: Any
    device: Any
    labels: list[str]
    location: str
    model_type: str
    batches: list[dict[str, Any]]
    eval_batches: list[dict[str, Any]]
    warmup: int
    store: str


def setup(args: argparse.Namespace, folder: Path) -> Context:
    """Compose the real `bench run` config, load data once and freeze the batches every variant will see."""
    from omegaconf import OmegaConf

    from bench.cli import compose
    from bench.config import RunConfig
    from bench.models.load import load_tokenizer, materialize_tiny, model_limits, resolve_location
    from bench.models.precision import pick_device
    from bench.tasks.data import load_splits, make_loaders

    steps = args.warmup + args.steps
    overrides = [f"method={args.method}", f"trainer.max_steps={steps}", "trainer.epochs=1",
                 f"monitor.warmup_steps={args.warmup}", f"output_dir={folder}", *args.overrides]
    raw = OmegaConf.to_container(compose(overrides), resolve=True)
    cfg = RunConfig.from_dict(raw)  # type: ignore[arg-type]
    device = pick_device(cfg.trainer.device)
    splits = load_splits(cfg.data)
    location = resolve_location(cfg.model)
    tokenizer = load_tokenizer(cfg.model, location)
    if location.is_tiny:
        location = materialize_tiny(cfg.model, tokenizer=tokenizer, labels=splits.labels, seed=cfg.seed)
    train_loader, eval_loader = make_loaders(splits, tokenizer=tokenizer, max_length=cfg.data.max_length,
                                             batch_size=cfg.trainer.batch_size, eval_batch_size=cfg.trainer.batch_size,
                                             seed=cfg.seed)
    batches = list(itertools.islice(itertools.cycle(train_loader), steps))
    return Context(cfg, device, splits.labels, location, model_limits(location, cfg.model)[0], batches,
                   list(itertools.islice(eval_loader, 1)), args.warmup, f"sqlite:///{folder / 'perf.db'}")


def sampler_cost(ctx: Context, folder: Path, ticks: int = 2000) -> dict[str, float]:
    """CPU time of one sampler tick, measured alone (no training to hide in): a noise-free bound on what the
    monitor thread takes from the run, as a share of one core at the configured interval."""
    from bench.measure.monitor.backends import pick_backend
    from bench.measure.monitor.sampler import Sampler

    backend, _ = pick_backend(ctx.device)
    backend.open()
    sampler = Sampler(backend, interval_s=ctx.cfg.monitor.interval_s, timeline=folder / "cost.csv")
    start = time.thread_time()
    for _ in range(ticks):
        sampler.sample()
    tick_s = (time.thread_time() - start) / ticks
    sampler.stop()
    backend.close()
    return {"tick_cpu_us": round(tick_s * 1e6, 1), "thread_share_of_one_core_pct":
            round(100 * tick_s / ctx.cfg.monitor.interval_s, 4)}


def conditions(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    """Everything a reader needs to judge the numbers: machine, load, versions, workload."""
    import torch

    from bench.tracking.provenance import git_sha, hardware, package_versions

    shown = ("torch", "transformers", "peft", "torch-optimi", "python")
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "git_sha": git_sha(), "command": " ".join(sys.argv),
            **hardware(ctx.device), **{k: v for k, v in package_versions().items() if k.split("/")[1] in shown},
            "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
            "model": ctx.cfg.model.name, "method": ctx.cfg.method.name, "batch_size": ctx.cfg.trainer.batch_size,
            "max_length": ctx.cfg.data.max_length, "warmup_steps": args.warmup, "timed_steps": args.steps,
            "rounds": args.rounds, "monitor_interval_s": ctx.cfg.monitor.interval_s}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure(ctx: Context, args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """All rounds; each runs the four variants in a Williams order and records their median step times."""
    runners = {"bench_monitor_on": lambda: run_bench(ctx, monitor_on=True),
               "bench_monitor_off": lambda: run_bench(ctx, monitor_on=False),
               "hand_loop": lambda: run_hand(ctx), "hf_trainer": lambda: run_trainer(ctx, folder)}
    run_bench(ctx, monitor_on=False)  # untimed: the process's first run pays for lazy imports and kernel caches
    rounds = []
    for number in range(args.rounds):
        order = tuple(VARIANTS[i] for i in WILLIAMS[number % 4])
        load = _load()
        medians = {name: runners[name]() for name in order}
        ratios = {"monitor_on_off": medians["bench_monitor_off"] / medians["bench_monitor_on"],
                  "bench_vs_hand": medians["hand_loop"] / medians["bench_monitor_on"],
                  "bench_vs_trainer": medians["hf_trainer"] / medians["bench_monitor_on"]}
        rounds.append({"round": number + 1, "order": list(order), "median_step_s": medians, "ratios": ratios,
                       "loadavg_before": load, "loadavg_after": _load()})
        print(f"round {number + 1}: " + "  ".join(f"{k} {v:.3f}" for k, v in ratios.items())
              + "  (steps: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in medians.items()) + ")", flush=True)
    return rounds


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of each ratio over the rounds, against its target."""
    values = {name: [r["ratios"][name] for r in rounds] for name in TARGETS}
    return {name: {"median": round(statistics.median(v), 4), "min": round(min(v), 4), "max": round(max(v), 4),
                   "target": TARGETS[name], "meets_target": statistics.median(v) >= TARGETS[name]}
            for name, v in values.items()}


def write_reports(out: Path, result: dict[str, Any]) -> None:
    """monitor.json (everything) and monitor.md (the table a README can quote)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "monitor.json").write_text(json.dumps(result, indent=2) + "\n")
    c, s = result["conditions"], result["summary"]
    lines = ["# Monitor overhead benchmark", "",
             f"`{c['command']}` at {c['date']}, git {c['git_sha']}.", "",
             f"{c['method']} on {c['model']}, batch {c['batch_size']} x {c['max_length']} tokens, "
             f"{c['timed_steps']} timed steps after {c['warmup_steps']} warm-up, {c['rounds']} rounds; "
             f"{c['hw/device']} ({c['hw/cpu']}, {c['hw/cpu_cores']} cores, {c['torch_threads']} torch threads), "
             f"torch {c['version/torch']}, transformers {c['version/transformers']}.", "",
             "| ratio (speed, >1 = bench faster) | median | min | max | target | met |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {v['median']:.3f} | {v['min']:.3f} | {v['max']:.3f} | >= {v['target']} | "
              f"{'yes' if v['meets_target'] else 'no'} |" for name, v in s.items()]
    cost = result["sampler_cost"]
    lines += ["", "Each round's ratios spread over min-max: on a shared machine that spread, not the median's "
              "distance from 1, is what this measurement can resolve."]
    lines += ["", f"Sampler tick measured alone: {cost['tick_cpu_us']} us of CPU, i.e. "
              f"{cost['thread_share_of_one_core_pct']} % of one core at {c['monitor_interval_s']} s intervals. "
              "Median step on a near-zero model (the loops' own machinery): "
              + ", ".join(f"{k} {v} us" for k, v in result["fixed_cost_per_step"].items()) + "."]
    lines += ["", "| round | order | on ms | off ms | hand ms | Trainer ms | load avg before / after |",
              "|---|---|---|---|---|---|---|"]
    for r in result["rounds"]:
        m = {k: f"{v * 1000:.1f}" for k, v in r["median_step_s"].items()}
        lines.append(f"| {r['round']} | {' > '.join(r['order'])} | {m['bench_monitor_on']} | {m['bench_monitor_off']} "
                     f"| {m['hand_loop']} | {m['hf_trainer']} | {r['loadavg_before']} / {r['loadavg_after']} |")
    (out / "monitor.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="rounds of all four variants (a multiple of 4 balances)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--method", default="lora", choices=("full", "lora", "qlora"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "perf")
    parser.add_argument("overrides", nargs="*", help="extra `bench run` overrides, e.g. model=tiny-bert")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = setup(args, Path(tmp))
        rounds = measure(ctx, args, Path(tmp))
        result = {"conditions": conditions(ctx, args), "summary": summarise(rounds),
                  "sampler_cost": sampler_cost(ctx, Path(tmp)), "fixed_cost_per_step": fixed_costs(ctx.device),
                  "rounds": rounds}
    write_reports(args.out, result)
    for name, value in result["summary"].items():
        print(f"{name}: {value['median']:.3f} (target >= {value['target']}, "
              f"{'met' if value['meets_target'] else 'NOT met'}; rounds {value['min']:.3f}-{value['max']:.3f})")
    cost = result["sampler_cost"]
    print(f"sampler tick: {cost['tick_cpu_us']} us of CPU = {cost['thread_share_of_one_core_pct']} % of one core")
    print("loop machinery per step (near-zero model): " + ", ".join(
        f"{name} {value} us" for name, value in result["fixed_cost_per_step"].items()))
    print(f"written: {args.out / 'monitor.json'}, {args.out / 'monitor.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
