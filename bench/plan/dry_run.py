"""`bench run ... dry_run=true`: the plan `bench plan` prints for the same configuration, on the run's own
device and memory; nothing is loaded, trained or recorded."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from bench.config import RunConfig

if TYPE_CHECKING:
    import torch


def _budget(device: torch.device) -> Any:
    """The run's device's memory less `bench plan`'s default headroom: this GPU's, or this machine's RAM."""
    from bench.plan.cards import DEFAULT_HEADROOM, parse_headroom
    from bench.plan.cli import Budget

    if device.type == "cuda":
        import torch

        properties = torch.cuda.get_device_properties(device)
        memory, source = properties.total_memory, f"this GPU ({properties.name})"
    else:
        import psutil

        memory, source = psutil.virtual_memory().total, "this machine's RAM"
    return Budget(source, memory, parse_headroom(DEFAULT_HEADROOM, memory), DEFAULT_HEADROOM)


def dry_run(cfg: RunConfig, *, device: torch.device) -> dict[str, float]:
    """Print the plan of `cfg` on `device` and return its figures (a sweep cell's value is the accuracy: NaN)."""
    from bench.plan.cli import plan_rows, quiet
    from bench.plan.overhead import store_terms, this_gpu
    from bench.plan.render import render
    from bench.tracking.store import resolve_uri

    started = time.perf_counter()
    limit = _budget(device)
    uri = resolve_uri(cfg.tracker.uri)
    gpu, title = this_gpu(device) if device.type == "cuda" else (None, "")
    with quiet():
        rows = plan_rows([(cfg, {})], device=device, limit=limit,
                         terms=store_terms(uri, device=device.type, gpu=gpu, gpu_title=title))
    print(render(rows, device=device.type, limit=limit, tokens=None, price=None, uri=uri,
                 seconds=time.perf_counter() - started))
    print("dry run: nothing was loaded, trained or recorded")
    plan = rows[0]["plan"]
    figures = plan.metrics() if plan is not None else {}
    return {**figures, "eval/accuracy": math.nan}
