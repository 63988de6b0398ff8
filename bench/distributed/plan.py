"""`bench plan` for one rank of a distributed run: the single-process plan, turned into what each of N ranks holds.

- ddp: every rank holds what a single process holds at `trainer.batch_size` (its own batch): the whole model, its
  gradients and optimizer state; and DDP's gradient buckets, a second copy of every gradient's size. The gradients
  are views into the buckets (`gradient_as_bucket_view`), but clearing the gradients leaves the buckets allocated,
  and DDP rebuilds them in the second step's forward (measured on a MiniLM-shaped model: +86.6 MiB at the peak,
  its gradients' size, in that forward).
- fsdp: parameters, gradients and optimizer state are sharded, 1/N each. Activations are not: each rank runs its
  own batch through the whole model. FSDP2 keeps each unit's shard and, while the unit computes, its whole
  parameters too, all-gathered into a flat buffer and copied out of it: the largest unit (the root's embeddings
  and head, or a layer) is counted twice in full at the peak, once as parameters and once as a temporary. Measured
  on tiny-bert with 2 CPU ranks, that is where the peak falls (the embeddings' forward).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

SHARDED = ("params", "grads", "optimizer")


def unit_bytes(model: torch.nn.Module) -> int:
    """Bytes of FSDP's largest unit in `model` (meta tensors are fine): each transformer layer is one, and the
    root holds every parameter no layer holds."""
    from bench.distributed.wrap import transformer_layers

    layers = transformer_layers(model)
    in_layers = {id(p) for layer in layers for p in layer.parameters()}
    sizes = [sum(p.numel() * p.element_size() for p in layer.parameters()) for layer in layers]
    root = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in in_layers)
    return max([root, *sizes])


def _sharded(categories: dict[str, int], *, nproc: int, unit: int) -> dict[str, int]:
    held = {name: -(-value // nproc) if name in SHARDED else value for name, value in categories.items()}
    held["params"] = held.get("params", 0) + unit  # the unit computing now, gathered whole
    held["temporaries"] = held.get("temporaries", 0) + unit  # the all-gather's flat output buffer
    return held


def per_rank(plan: Any, *, strategy: str, nproc: int, unit: int) -> Any:
    """`plan` (a bench.plan.engine.MemoryPlan of one process) as each rank of `nproc` holds it under `strategy`."""
    if strategy == "ddp":
        buckets = max(found.get("grads", 0) for found in [plan.categories, *plan.phases.values()])
        categories = {**plan.categories, "grads": plan.categories.get("grads", 0) + buckets}
        phases = {name: {**found, "grads": found.get("grads", 0) + buckets} for name, found in plan.phases.items()}
        note = (f"ddp at {nproc} ranks: each rank holds the whole model, its gradients and optimizer state at "
                f"trainer.batch_size (per rank), plus DDP's gradient buckets ({buckets / 2**20:.1f} MiB)")
        return replace(plan, categories=categories, phases=phases, peak_bytes=sum(categories.values()),
                       notes=(*plan.notes, note))
    categories = _sharded(plan.categories, nproc=nproc, unit=unit)
    phases = {name: _sharded(found, nproc=nproc, unit=unit) for name, found in plan.phases.items()}
    # sharding shrinks the optimizer's step most: another phase (the backward's activations) may peak now
    phase, module = plan.peak_phase, plan.peak_module
    highest = max(phases, key=lambda name: sum(phases[name].values()), default=None)
    if highest is not None and sum(phases[highest].values()) > sum(categories.values()):
        phase, module, categories = highest, plan.phase_modules.get(highest, ""), phases[highest]
    note = (f"fsdp at {nproc} ranks, per rank: parameters, gradients and optimizer state 1/{nproc} each, "
            f"activations whole, plus the largest unit ({unit / 2**20:.1f} MiB) gathered twice (its parameters and "
            "the all-gather buffer)")
    # the analytic formula knows a single process only: no second opinion on a sharded plan
    return replace(plan, categories=categories, phases=phases, peak_bytes=sum(categories.values()),
                   peak_phase=phase, peak_module=module, analytic_peak_bytes=None, notes=(*plan.notes, note))
