"""The fit boundary, checked by what runs out: for each technique, the plan's largest batch for a memory budget must
finish under that budget, and a batch 25 % larger must run out of memory (`failure=oom`).

The plan keeps `bench plan`'s headroom free (10 % unless told), as a user asking "will it fit" gets it. On CUDA the
budget is a cap on torch's caching allocator (`torch.cuda.set_per_process_memory_fraction`, set in each
run's own process before anything is allocated), so the plan's figure checked against it is what the allocator
reserves (`plan/reserved_bytes`: the allocator peak plus the cache term calibrated from the runs already in the
store). The CUDA context is outside the cap, as it is outside that figure. On CPU torch has no cap to set; with
`--device cpu` the cap is faked by the allocator's own measured peak (`mem/allocator_peak_bytes`, an instrument apart
from the plan): a run whose peak passed the budget counts as out of memory. That checks the same plan, the same
batches and the same bookkeeping, not torch's OOM path, which only the GPU run does.

    python benchmarks/fit_boundary.py --store sqlite:///$WORK/mlflow.db --budget-mib 768 --device cuda \\
        model=tiny-bert model.architecture.hidden_size=384 ...      # scripts/cuda_check.sh's `boundary` step

Exit status 0 when every technique's two runs end as the plan says, 1 otherwise.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.plan.cards import DEFAULT_HEADROOM, parse_headroom

MIB = 2 ** 20
LARGER = 1.25  # the batch that must not fit: this much larger than the plan's largest
STEPS = 2  # optimizer steps per run: the first creates the optimizer's state, the second runs with it
# A run's own process: the cap first (before the CUDA context holds anything of torch's), then `bench run`.
BOOT = ("import sys, torch\nfraction = float(sys.argv.pop(1))\nif fraction:\n"
        "    torch.cuda.set_per_process_memory_fraction(fraction, 0)\n"
        "from bench.cli import main\nsys.exit(main())\n")


@dataclass
class Outcome:
    """How one capped run ended: `fits` (it finished under the budget) or not, and why in words."""

    batch: int
    fits: bool
    why: str
    run_id: str = ""


def cap_fraction(budget_bytes: int, total_bytes: int) -> float:
    """The share of the device's memory `set_per_process_memory_fraction` takes for a budget."""
    if not 0 < budget_bytes <= total_bytes:
        raise ValueError(f"a budget of {budget_bytes / MIB:,.0f} MiB does not fit a device of "
                         f"{total_bytes / MIB:,.0f} MiB")
    return budget_bytes / total_bytes


def capped_figure(plan: Any, overhead: Any) -> int:
    """What the cap limits, as the plan predicts it: reserved on CUDA, the allocator's peak on CPU."""
    from bench.plan.overhead import with_fit

    fit = with_fit(plan, overhead).fit
    return fit.reserved_bytes if fit.reserved_bytes is not None else fit.allocator_bytes


def plan_largest(cfg: Any, *, device: str, store: str, budget_bytes: int) -> tuple[int, Any]:
    """The plan's largest batch whose capped figure fits the budget, and the terms it used."""
    import functools

    import torch

    from bench.plan.engine import largest_batch
    from bench.plan.overhead import overhead_for, this_gpu

    gpu, title = this_gpu(torch.device("cuda", 0)) if device == "cuda" else (None, "")
    overhead = overhead_for(store, cfg, device=device, gpu=gpu, gpu_title=title)
    largest, _ = largest_batch(cfg, device=torch.device(device), budget_bytes=budget_bytes,
                               figure=functools.partial(capped_figure, overhead=overhead))
    return largest, overhead


def run_capped(overrides: list[str], *, batch: int, fraction: float, store: str,
               folder: Path) -> subprocess.CompletedProcess:
    """`bench run` at `batch` rows in a process of its own, its allocator capped at `fraction` (0: no cap). Two
    optimizer steps, and little to evaluate: the boundary is training's."""
    command = [sys.executable, "-c", BOOT, str(fraction), "run", *overrides, f"trainer.batch_size={batch}",
               f"trainer.max_steps={STEPS}", "trainer.epochs=1", f"data.max_train_samples={batch * STEPS}",
               "data.max_eval_samples=32", "data.max_test_samples=32", "tracker.log_model=false",
               "deploy.measure=false", "tracker.experiment=fit-boundary", f"tracker.uri={store}",
               f"hydra.run.dir={folder / f'batch{batch}'}"]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)


def outcome(store: str, *, technique: str, batch: int, device: str, budget_bytes: int) -> Outcome:
    """How the last run of `technique` at `batch` ended: on CUDA its status and `failure` tag; on CPU (the faked
    cap) its allocator peak against the budget."""
    import mlflow

    mlflow.set_tracking_uri(store)
    wanted = f"params.trainer.batch_size = '{batch}' and params.method.name = '{technique}'"
    runs = mlflow.search_runs(experiment_names=["fit-boundary"], filter_string=wanted,
                              order_by=["attributes.start_time DESC"], max_results=1)
    if runs.empty:
        return Outcome(batch, False, "no run recorded")
    run = runs.iloc[0]
    failure = run.get("tags.failure")
    if run["status"] != "FINISHED":
        return Outcome(batch, False, f"{run['status']} failure={failure}", run["run_id"])
    peak = run.get("metrics.mem/allocator_peak_bytes", math.nan)
    if device == "cpu" and not peak <= budget_bytes:
        return Outcome(batch, False, f"failure=oom (faked: allocator peak {peak / MIB:,.1f} MiB > cap)",
                       run["run_id"])
    length = run.get("metrics.mem/largest_batch_length", math.nan)  # the plan's rows are all data.max_length long
    return Outcome(batch, True, f"finished, allocator peak {peak / MIB:,.1f} MiB, rows of {length:.0f} tokens",
                   run["run_id"])


def check(technique: str, overrides: list[str], *, device: str, store: str, budget_bytes: int, headroom_bytes: int,
          folder: Path) -> tuple[bool, str]:
    """One technique: the plan's largest batch (with `bench plan`'s headroom kept free) must fit the budget, a batch
    25 % larger must run out of memory."""
    from bench.plan.cli import quiet

    cfg = _config([*overrides, f"method={technique}"])
    with quiet():
        largest, overhead = plan_largest(cfg, device=device, store=store, budget_bytes=budget_bytes - headroom_bytes)
    if largest == 0:
        return False, f"{technique}: the plan fits not even one sequence in {budget_bytes / MIB:,.0f} MiB"
    fraction = cap_fraction(budget_bytes, _device_memory()) if device == "cuda" else 0.0
    found = []
    for batch in (largest, math.ceil(largest * LARGER)):
        run_capped([*overrides, f"method={technique}"], batch=batch, fraction=fraction, store=store, folder=folder)
        found.append(outcome(store, technique=technique, batch=batch, device=device, budget_bytes=budget_bytes))
    fits, larger = found
    ok = fits.fits and not larger.fits and ("oom" in larger.why)
    line = (f"{technique}: plan's largest batch {fits.batch} -> {fits.why}; {larger.batch} -> {larger.why} "
            f"[{'ok' if ok else 'WRONG'}] (terms: {overhead.describe()})")
    return ok, line


def _device_memory() -> int:
    import torch

    return int(torch.cuda.get_device_properties(0).total_memory)


def _config(overrides: list[str]) -> Any:
    from omegaconf import OmegaConf

    from bench.cli import compose
    from bench.config import RunConfig

    return RunConfig.from_dict(OmegaConf.to_container(compose([*overrides, "output_dir=."]), resolve=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="MLflow store: the runs are recorded there, and its earlier "
                        "runs calibrate the plan's terms")
    parser.add_argument("--budget-mib", type=float, required=True)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--headroom", default=DEFAULT_HEADROOM, help="kept free by the plan, as `bench plan` keeps "
                        f"it (default {DEFAULT_HEADROOM.replace('%', '%%')})")
    parser.add_argument("--methods", default="full,lora,qlora")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the runs (the model's shape, the data)")
    args = parser.parse_args(argv)
    budget = int(args.budget_mib * MIB)
    headroom = parse_headroom(args.headroom, budget)
    overrides = [*args.overrides, f"trainer.device={args.device}"]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-boundary-") as folder:
        for technique in args.methods.split(","):
            ok, line = check(technique, overrides, device=args.device, store=args.store, budget_bytes=budget,
                             headroom_bytes=headroom, folder=Path(folder))
            print(line, flush=True)
            results.append(ok)
    print(f"fit boundary at {args.budget_mib:g} MiB on {args.device} (headroom {args.headroom}): {sum(results)} of "
          f"{len(results)} as planned")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
