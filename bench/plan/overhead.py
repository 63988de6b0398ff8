"""What a run holds beyond its live tensors, so that a plan predicts the figures that decide a fit: the allocator's
peak, what the CUDA caching allocator reserves, and the whole process.

The tensor peak is traced (`bench.plan.engine`); three terms on top of it are not, because the trace runs on fake
tensors that allocate nothing, and they are taken from runs in the MLflow store that measured them:

- allocator (CUDA): the allocator's own peak less the tensor peak (`mem/allocator_peak_bytes` -
  `mem/tensor_peak_bytes`): what ops allocate beyond their outputs, mostly cuBLAS' workspaces, a few tens of MiB.
  On CPU the trace itself runs the library kernels that allocate scratch (`bench.plan.scratch`), and torch's own
  CPU ops measured next to nothing beyond their outputs, so no term is taken from runs.
- cache (CUDA): peak reserved less peak allocated: the caching allocator's rounding and the blocks it keeps but
  cannot reuse (fragmentation).
- runtime: the process beyond that. CUDA: NVML's process figure less peak reserved (the CUDA context and the
  libraries' own device memory); CPU: peak RSS less the allocator's peak (the interpreter, the libraries, the data).

Each term is the largest any matching run measured (a fit verdict must err on the safe side), from the closest
runs there are: the same configuration (model, technique, length, levers) on the same device; else the same model
and technique; else any run on that device; on CUDA, else any GPU (named, since a context's size depends on the
card and driver). With no such run a term is uncalibrated and counted as zero, and the plan says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.plan.calibrate import Store, column, levers_of, load_store, same_levers

TENSOR, ALLOCATOR = "metrics.mem/tensor_peak_bytes", "metrics.mem/allocator_peak_bytes"
RESERVED, NVML, RSS = "metrics.mem/peak_reserved_bytes", "metrics.mem/peak_nvml_process_bytes", \
    "metrics.mem/peak_rss_bytes"


@dataclass(frozen=True)
class Overhead:
    """The terms beyond the tensor peak, in bytes, and the runs they come from."""

    allocator_bytes: int = 0
    cache_bytes: int = 0  # CUDA only
    runtime_bytes: int = 0
    source: str = ""  # which runs: how they match, on what device, from when; empty when uncalibrated
    runs: tuple[str, ...] = ()  # `name (run id)` of each
    reason: str = ""  # why uncalibrated

    @property
    def calibrated(self) -> bool:
        return bool(self.runs)

    @property
    def total_bytes(self) -> int:
        return self.allocator_bytes + self.cache_bytes + self.runtime_bytes

    def describe(self) -> str:
        """One line: the terms and where they come from, or why there are none."""
        if not self.calibrated:
            return f"uncalibrated ({self.reason}): allocator, cache and runtime terms not added"
        mib = 2 ** 20
        terms = [f"allocator +{self.allocator_bytes / mib:,.1f} MiB"] if self.allocator_bytes else []  # CPU: traced
        terms += [f"cache +{self.cache_bytes / mib:,.1f} MiB"] if self.cache_bytes else []
        terms += [f"runtime +{self.runtime_bytes / mib:,.1f} MiB"]
        return f"{', '.join(terms)} (largest of {self.source}: {', '.join(self.runs)})"


@dataclass(frozen=True)
class Fit:
    """A plan's figures that decide a fit, each the one before it plus a term of `Overhead`."""

    tensor_bytes: int
    allocator_bytes: int
    reserved_bytes: int | None  # CUDA only: the CPU has no caching allocator
    process_bytes: int
    overhead: Overhead

    def metrics(self, prefix: str = "plan/") -> dict[str, float]:
        """`plan/allocator_peak_bytes`, `plan/reserved_bytes` (CUDA) and `plan/process_bytes`."""
        out = {f"{prefix}allocator_peak_bytes": float(self.allocator_bytes),
               f"{prefix}process_bytes": float(self.process_bytes)}
        if self.reserved_bytes is not None:
            out[f"{prefix}reserved_bytes"] = float(self.reserved_bytes)
        return out


def predict(tensor_bytes: int, overhead: Overhead, *, device: str, traced_allocator_bytes: int = 0) -> Fit:
    """The figures a run of this tensor peak holds on `device` (cuda or cpu); `traced_allocator_bytes`: the
    allocator's peak as far as the trace sees it (ops' own scratch in, bench.plan.scratch), if larger."""
    allocator = max(tensor_bytes, traced_allocator_bytes) + overhead.allocator_bytes
    reserved = allocator + overhead.cache_bytes if device == "cuda" else None
    process = (reserved if reserved is not None else allocator) + overhead.runtime_bytes
    return Fit(tensor_bytes, allocator, reserved, process, overhead)


def with_fit(plan: Any, overhead: Overhead) -> Any:
    """`plan` (bench.plan.engine.MemoryPlan) with the figures its tensor peak and `overhead` give."""
    from dataclasses import replace

    return replace(plan, fit=predict(plan.peak_bytes, overhead, device=plan.device,
                                     traced_allocator_bytes=plan.traced_allocator_bytes))


def process_bytes(plan: Any, overhead: Overhead) -> int:
    """The process a plan's run holds with `overhead`: what a fit is checked on."""
    return with_fit(plan, overhead).fit.process_bytes


def _on_device(runs: Any, device: str, gpu: Any) -> tuple[Any, Any]:
    """(runs on the planned device, runs on any GPU): `gpu(name)` tells whether a `hw/gpu` tag is the card."""
    kind = column(runs, "tags.hw/device").fillna("").astype(str)
    if device != "cuda":
        return kind == "cpu", kind == "cpu"
    any_gpu = kind.str.startswith("cuda")
    named = column(runs, "tags.hw/gpu").fillna("").astype(str)
    return any_gpu & (named.map(gpu) if gpu is not None else False), any_gpu


def _needed(device: str) -> list[str]:
    return [TENSOR, ALLOCATOR, *([RESERVED, NVML] if device == "cuda" else [RSS])]


def measured_overhead(store: Store, *, device: str, gpu: Any = None, gpu_title: str = "", model: str,
                      technique: str, seq_len: int, levers: dict[str, tuple[Any, Any]]) -> Overhead:
    """The terms from the closest matching runs in `store` (see the module docstring). `gpu`: a predicate on a run's
    `hw/gpu` tag naming the card planned for (None: no card named), `gpu_title` its name in the provenance."""
    if store.problem:
        return Overhead(reason=store.problem)
    runs = store.runs
    if any(column not in runs for column in _needed(device)):
        names = ", ".join(name.removeprefix("metrics.") for name in _needed(device))
        return Overhead(reason=f"no run in the store measured {names}")
    runs = runs[runs[_needed(device)].notna().all(axis=1)]
    here, anywhere = _on_device(runs, device, gpu)
    name = gpu_title or ("this GPU" if device == "cuda" else "cpu")
    same = (column(runs, "tags.model") == model) & (column(runs, "tags.technique") == technique)
    config = same & (column(runs, "params.data.max_length").astype(str) == str(seq_len)) & same_levers(runs, levers)
    levels = [(here & config, f"of this configuration on {name}"), (here & same, f"of {model} {technique} on {name}"),
              (here, f"on {name}")]
    if device == "cuda":
        levels.append((anywhere, "on another GPU (a context's size depends on the card)"))
    for mask, source in levels:
        found = runs[mask]
        if not found.empty:
            return _terms(found, device, source)
    return Overhead(reason=f"no finished run on {name} measured these figures")


def _terms(found: Any, device: str, source: str) -> Overhead:
    """The largest of each term over `found`. On CPU the trace sees the ops' scratch itself (bench.plan.scratch),
    so only the runtime is taken from the runs."""
    if device == "cuda":
        allocator = (found[ALLOCATOR] - found[TENSOR]).clip(lower=0).max()
        cache, runtime = (found[RESERVED] - found[ALLOCATOR]).clip(lower=0).max(), \
            (found[NVML] - found[RESERVED]).clip(lower=0).max()
    else:
        allocator, cache, runtime = 0, 0, (found[RSS] - found[ALLOCATOR]).clip(lower=0).max()
    names = column(found, "tags.mlflow.runName").fillna("").astype(str)
    starts = column(found, "start_time")
    dates = sorted({str(start)[:10] for start in starts.dropna()})
    when = f", {dates[0]}" + (f" to {dates[-1]}" if len(dates) > 1 else "") if dates else ""
    labels = tuple(f"{name or 'run'} ({run_id[:8]})" for name, run_id in zip(names, found["run_id"], strict=True))
    runs = f"{len(found)} run{'s' if len(found) > 1 else ''}"
    return Overhead(int(allocator), int(cache), int(runtime), f"{runs} {source}{when}", labels)


def overhead_for(store: Store | str, cfg: Any, *, device: str, gpu: Any = None, gpu_title: str = "") -> Overhead:
    """`measured_overhead` for a run's config, from `store` (or the store at that URI)."""
    store = load_store(store, metric=ALLOCATOR) if isinstance(store, str) else store
    return measured_overhead(store, device=device, gpu=gpu, gpu_title=gpu_title, model=cfg.model.name,
                             technique=cfg.method.name, seq_len=cfg.data.max_length, levers=levers_of(cfg))


def store_terms(uri: str | None, *, device: str, gpu: Any = None, gpu_title: str = "") -> Any:
    """A function config -> its `Overhead`, with the store at `uri` read once (None: no store, nothing calibrated)."""
    import pandas as pd

    store = load_store(uri, metric=ALLOCATOR) if uri else Store(pd.DataFrame(), "no store read")
    return lambda cfg: overhead_for(store, cfg, device=device, gpu=gpu, gpu_title=gpu_title)


def this_gpu(device: Any) -> tuple[Any, str]:
    """For a run on a real CUDA device: a predicate that matches runs on the same GPU model, and its name."""
    import torch

    name = torch.cuda.get_device_name(device)
    return (lambda tag: tag == name), name
