"""The memory plan of one configuration: its training tensor peak by category, traced on fake tensors, beside
the analytic estimate where there is one; and the largest batch that fits a memory budget.

    plan = plan_memory(cfg, device=PlannedDevice("cuda"))
    plan.peak_bytes, plan.categories, plan.notes
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bench.config import RunConfig

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

    from bench.models.build import BuiltModel

CATEGORIES = ("params", "buffers", "grads", "optimizer", "activations", "temporaries", "other")
EXTRAPOLATE_ABOVE = 4  # layers: deeper models are traced at 2 and 3 layers and extrapolated
BATCH_SEARCH_LIMIT = 4096  # the largest batch searched for; a row that reaches it fits at least that


@dataclass(frozen=True)
class MemoryPlan:
    """What a configuration's training holds at its tensor peak, predicted before any weight exists."""

    technique: str
    device: str  # the device type planned for: cuda or cpu
    batch_size: int
    seq_len: int
    categories: dict[str, int]  # bytes by category at the peak (bench.measure.monitor.tensors' names), summing to it
    peak_bytes: int
    peak_module: str
    peak_phase: str
    analytic_peak_bytes: int | None = None  # bench.plan.analytic's formula, where it covers the task
    notes: tuple[str, ...] = ()  # what was taken from shapes rather than traced
    seconds: float = 0.0  # how long the trace took
    levers: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, dict[str, int]] = field(default_factory=dict)  # each phase's own peak, by category
    paged_bytes: int = 0  # a paged optimizer's state: in CUDA unified memory, left out of the peak (`_unpage`)
    phase_modules: dict[str, str] = field(default_factory=dict)  # where each phase's peak happened
    fit: Any = None  # bench.plan.overhead.Fit: the allocator, reserved and process figures, once calibrated
    op_scratch: dict[str, int] = field(default_factory=dict)  # per phase: ops' own scratch above its tensor peak

    @property
    def traced_allocator_bytes(self) -> int:
        """The tensor peak, or a phase's tensor peak plus what its ops allocate beyond their outputs
        (bench.plan.scratch, CPU plans), whichever is larger."""
        return max([self.peak_bytes, *(sum(self.phases.get(phase, {}).values()) + extra
                                       for phase, extra in self.op_scratch.items())])

    def metrics(self) -> dict[str, float]:
        """`plan/peak_bytes`, `plan/<category>_bytes` and the fit's figures, as a run logs its prediction."""
        return {"plan/peak_bytes": float(self.peak_bytes),
                **{f"plan/{name}_bytes": float(value) for name, value in self.categories.items()},
                **({"plan/paged_bytes": float(self.paged_bytes)} if self.paged_bytes else {}),
                **(self.fit.metrics() if self.fit is not None else {})}


def head_labels(cfg: RunConfig) -> list[str] | None:
    """A classifier's label set (its head's size): `data.labels`, else two; None for a causal LM."""
    if cfg.task == "causal_lm":
        return None
    return [str(label) for label in (cfg.data.labels or ["0", "1"])]


def _skeleton(cfg: RunConfig, config: PretrainedConfig, device: torch.device) -> Any:
    """The technique's model on meta tensors, as a run would build it on `device`."""
    from bench.models.build import assemble
    from bench.plan.skeleton import SkeletonWeights

    weights = SkeletonWeights(config=config, causal=cfg.task == "causal_lm",
                              trust_remote_code=cfg.model.trust_remote_code)
    return assemble(method=cfg.method, weights=weights, model_type=config.model_type, device=device, task=cfg.task)


def _batch_extras(model: torch.nn.Module, config: PretrainedConfig, batch_size: int, seq_len: int) -> dict[str, Any]:
    """What a tokenizer adds beside the ids and the mask, where the model takes it: BERT's token type ids."""
    import inspect

    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    takes = "token_type_ids" in inspect.signature(base.forward).parameters
    if takes and getattr(config, "type_vocab_size", 0):
        return {"token_type_ids": torch.zeros(batch_size, seq_len, dtype=torch.long)}
    return {}


def plan_memory(cfg: RunConfig, *, device: torch.device, config: PretrainedConfig | None = None,
                batch_size: int | None = None) -> MemoryPlan:
    """The training tensor peak of `cfg` (at `batch_size`, default `trainer.batch_size`, and `data.max_length`)
    as a run on `device` would hold it; `config`: the model's transformers config when the caller has it.

    A deep model is traced at 2 and 3 of its layers and extrapolated: its layers are identical, so every
    category grows by the same bytes per layer (checked on Llama-3.1-8B: 18.598 GiB extrapolated against
    18.60 traced in full for LoRA, 75.766 against 75.77 for full fine-tuning), and a 70B plan takes seconds."""
    from bench.models.load import model_config, resolve_location

    started = time.perf_counter()
    config = config if config is not None else model_config(cfg.model, resolve_location(cfg.model), head_labels(cfg))
    batch_size = batch_size or cfg.trainer.batch_size
    depth = getattr(config, "num_hidden_layers", None)
    if not isinstance(depth, int) or depth <= EXTRAPOLATE_ABOVE:
        plan = trace_plan(cfg, device=device, config=config, batch_size=batch_size)
    else:
        plan = _extrapolated(cfg, device=device, config=config, batch_size=batch_size, depth=depth)
    if plan.paged_bytes:
        plan = replace(plan, notes=(*plan.notes, f"{cfg.trainer.optimizer}: its state ({plan.paged_bytes / 2**30:.2f} "
                                    "GiB) lives in CUDA unified memory, paged to host RAM when the GPU runs short: "
                                    "left out of the peak"))
    if cfg.trainer.strategy != "single":
        plan = _per_rank(cfg, plan, config=config, device=device)
    return replace(plan, seconds=time.perf_counter() - started)


def _per_rank(cfg: RunConfig, plan: MemoryPlan, *, config: PretrainedConfig, device: torch.device) -> MemoryPlan:
    """What each rank of a distributed run holds (bench.distributed.plan); FSDP's units are sized on a two-layer
    skeleton (a layer's size does not depend on the depth, nor does the root's)."""
    from bench.distributed.plan import per_rank, unit_bytes

    unit = 0
    if cfg.trainer.strategy == "fsdp":
        depth = getattr(config, "num_hidden_layers", None)
        shallow = _with_depth(config, 2) if isinstance(depth, int) and depth > 2 else config
        unit = unit_bytes(_skeleton(cfg, shallow, device).model)
    return per_rank(plan, strategy=cfg.trainer.strategy, nproc=cfg.trainer.nproc, unit=unit)


def _with_depth(config: PretrainedConfig, depth: int) -> Any:
    """A copy of `config` with `depth` layers (and per-layer lists, such as attention types, cut to match)."""
    import copy

    shallow = copy.deepcopy(config)
    layers = shallow.num_hidden_layers
    for key, value in vars(shallow).items():
        if isinstance(value, list) and len(value) == layers:
            setattr(shallow, key, value[:depth])
    shallow.num_hidden_layers = depth
    return shallow


def _extrapolated(cfg: RunConfig, *, device: torch.device, config: PretrainedConfig, batch_size: int,
                  depth: int) -> MemoryPlan:
    """Trace 2 and 3 layers; each category at the peak is a + (depth - 3) x (b - a). Where the two traces peak
    in different phases (the shape of the peak changes with depth) the model is traced in full."""
    two, three = (trace_plan(cfg, device=device, config=_with_depth(config, n), batch_size=batch_size)
                  for n in (2, 3))
    # Each phase is extrapolated on its own and the largest wins: which phase peaks can change with depth
    # (the optimizer's step at 2 layers, the forward pass at 6, say).
    phases = {phase: {name: three.phases[phase][name] + (depth - 3) * (three.phases[phase][name]
                                                                     - two.phases[phase][name])
                      for name in CATEGORIES}
              for phase in three.phases.keys() & two.phases.keys()}
    phase = max(phases, key=lambda name: sum(phases[name].values()))
    categories = phases[phase]
    note = f"traced at 2 and 3 of its {depth} layers, every category of each phase extrapolated linearly in depth"
    analytic = _analytic(cfg, config, device, batch_size)
    module = three.peak_module if phase == three.peak_phase else three.phase_modules.get(phase, "")
    paged = three.paged_bytes + (depth - 3) * (three.paged_bytes - two.paged_bytes)
    return replace(three, categories=categories, peak_bytes=sum(categories.values()), analytic_peak_bytes=analytic,
                   notes=(*three.notes, note), phases=phases, peak_phase=phase, peak_module=module, paged_bytes=paged)


def trace_plan(cfg: RunConfig, *, device: torch.device, config: PretrainedConfig, batch_size: int) -> MemoryPlan:
    """Trace two training steps of `cfg` on fake tensors, as a run on `device` would take them."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from bench.plan.trace import fake_model, host_batch, trace_steps

    started = time.perf_counter()
    built = _skeleton(cfg, config, device)
    notes = _notes(cfg, built, device)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    host = torch.device("cpu")  # where the fake tensors dispatch; a CUDA plan's differences are in `notes`
    fake_model(built.model, mode, host)
    if cfg.task == "causal_lm":  # as CausalTask.after_build: no KV cache (a packed batch's restarts are read only then)
        built.model.config.use_cache = False
    batch = host_batch(batch_size=batch_size, seq_len=cfg.data.max_length, causal=cfg.task == "causal_lm",
                       packed=cfg.task == "causal_lm" and cfg.data.packing)
    batch |= _batch_extras(built.model, config, batch_size, cfg.data.max_length)
    with warnings.catch_warnings():  # the libraries' notices about the host (bitsandbytes' paged optimizers
        warnings.simplefilter("ignore")  # fall back on CPU, say) are not about the plan
        traced = trace_steps(built, cfg.trainer, batch=batch, device=host, op_scratch=device.type == "cpu")
    peak, where = traced.accounting.train, traced.accounting.train.where
    categories = {name: int(peak.categories.get(name, 0)) for name in CATEGORIES}
    phases = {phase: {name: int(found.get(name, 0)) for name in CATEGORIES} for phase, found in peak.phases.items()}
    paged = _unpage(categories, phases) if _is_paged(cfg, device) else 0
    scratch = {phase: top - sum(phases[phase].values()) for phase, top in traced.scratch.items()
               if phase in phases and top > sum(phases[phase].values())}
    notes += [f"scratch inside these ops not traced (C kernels): {', '.join(sorted(traced.untraced))}"] \
        if traced.untraced else []
    return MemoryPlan(cfg.method.name, device.type, batch_size, cfg.data.max_length, categories,
                      sum(categories.values()), where[0], where[1], _analytic(cfg, config, device, batch_size),
                      tuple(notes), time.perf_counter() - started, phases=phases, paged_bytes=paged,
                      phase_modules=dict(peak.phase_modules), op_scratch=scratch)


def _is_paged(cfg: RunConfig, device: torch.device) -> bool:
    return str(getattr(cfg.trainer, "optimizer", "")).startswith("paged_") and device.type == "cuda"


def _unpage(categories: dict[str, int], phases: dict[str, dict[str, int]]) -> int:
    """Take a paged optimizer's state out of the device peak; returns its bytes. bitsandbytes allocates it in CUDA
    unified memory, which the driver moves to host RAM when the GPU runs short (the QLoRA paper's paged
    optimizers): torch's allocator, and so a run's tensor accounting, never sees it, and it cannot make a run
    run out of GPU memory. The trace ran on the host, where it is ordinary memory."""
    state = max([categories["optimizer"], *(found["optimizer"] for found in phases.values())])
    for found in [categories, *phases.values()]:
        found["optimizer"] = 0
    return state


def _notes(cfg: RunConfig, built: BuiltModel, device: torch.device) -> list[str]:
    """Set up what differs from a CPU trace, and say what was taken from shapes rather than traced."""
    notes = []
    if device.type == "cuda":
        from bench.plan.attention import use_fused_attention

        if use_fused_attention(built.model):
            notes.append("attention: a fused CUDA kernel's tensors, from their shapes (no b x h x s x s scores)")
    if cfg.method.technique.quantized:
        notes.append(f"{cfg.method.technique.base} weights: the quantizer's output shapes (the layers' own "
                     "forward and backward traced)")
    if cfg.method.technique.initialises_from_values:
        notes.append(f"{cfg.method.name}'s initialisation not traced: it changes values, not what a step holds")
    return notes


def _analytic(cfg: RunConfig, config: PretrainedConfig, device: torch.device, batch_size: int) -> int | None:
    """bench.plan.analytic's formula, where it covers the configuration (classification, a technique it can size),
    as a second opinion."""
    if cfg.task != "classification":
        return None
    from bench.plan.analytic import estimate_peak

    estimate = estimate_peak(config=config, method=cfg.method, device=device, batch_size=batch_size,
                             seq_len=cfg.data.max_length, trust_remote_code=cfg.model.trust_remote_code)
    return None if estimate is None else estimate.peak_bytes


def largest_batch(cfg: RunConfig, *, device: torch.device, budget_bytes: int, config: PretrainedConfig | None = None,
                  limit: int = BATCH_SEARCH_LIMIT, figure: Any = None) -> tuple[int, MemoryPlan | None]:
    """The largest batch (at `data.max_length`) whose plan fits `budget_bytes`, with its plan; (0, None) when a
    single sequence does not fit. `figure(plan)`: the bytes checked against the budget (default the tensor peak;
    `bench plan` checks the process). A step's memory grows linearly with the batch, so two traces give the slope;
    the guess is then checked and corrected by tracing."""
    size_of = figure or (lambda plan: plan.peak_bytes)
    one = plan_memory(cfg, device=device, config=config, batch_size=1)
    if size_of(one) > budget_bytes:
        return 0, None
    two = plan_memory(cfg, device=device, config=config, batch_size=2)
    slope = max(size_of(two) - size_of(one), 1)
    guess = min(limit, 1 + (budget_bytes - size_of(one)) // slope)
    traced = {1: one, 2: two}

    def fits_at(size: int) -> bool:
        if size not in traced:
            traced[size] = plan_memory(cfg, device=device, config=config, batch_size=size)
        return size_of(traced[size]) <= budget_bytes

    # The peak grows with the batch, so bisect between a size that fits and one that does not, starting from the
    # guess: a few traces even when the slope was off by a lot.
    fits, too_big = (guess, None) if fits_at(guess) else (1, guess)
    step = max(guess // 8, 1)
    while too_big is None and fits < limit:  # grow until a size does not fit
        probe = min(limit, fits + step)
        if not fits_at(probe):
            too_big = probe
        else:
            fits, step = probe, step * 2
    while too_big is not None and too_big - fits > 1:
        middle = (fits + too_big) // 2
        fits, too_big = (middle, too_big) if fits_at(middle) else (fits, middle)
    fits_at(fits)
    return fits, traced[fits]
