"""The report's memory figures and the device each run measured them on. Pure pandas, like `analyse`.

The headline figure is the training tensor peak (`mem/tensor_peak_bytes`): the most live tensor bytes at any
moment of training, on the training device, split by category at that moment (`mem/at_peak/*`). The process's
own view (net RSS on CPU; allocated, reserved and NVML on CUDA) keeps its own names and never stands in for it:
a run without a tensor peak shows a blank. An old run's `mem/peak_bytes` (RSS on CPU, reserved on CUDA, so two
different things under one name) is not read at all.
"""

from __future__ import annotations

import pandas as pd

from bench.core.metrics import TENSOR_PEAK_BYTES, logged_as, placeholder
from bench.report.logged import column, columns

# What the tensors at the peak were (`mem/at_peak/<name>_bytes`, torch's MemTracker categories) and what each
# holds, in the order the breakdown stacks them: what stays for the whole run first, scratch last.
CATEGORIES = placeholder("part").values
AT_PEAK = {f"at_peak_{name}_bytes": column(logged_as("mem/at_peak/{part}_bytes", part=name)) for name in CATEGORIES}

# Friendly column → the column `mlflow.search_runs` returns; `analyse.METRICS` takes these in.
METRICS = {
    **columns({"tensor_peak_bytes": TENSOR_PEAK_BYTES, "eval_tensor_peak_bytes": "mem/eval_tensor_peak_bytes",
               "peak_rss_net_bytes": "mem/peak_rss_net_bytes", "peak_allocated_bytes": "mem/peak_allocated_bytes",
               "peak_reserved_bytes": "mem/peak_reserved_bytes",
               "peak_nvml_process_bytes": "mem/peak_nvml_process_bytes",
               "weight_bits_per_param": "mem/weight_bits_per_param",
               "model_bits_per_param": "mem/model_bits_per_param",
               # the plan made before the weights loaded (`bench plan`'s engine): compared with the tensor peak,
               # never shown in its place (`bench.report.prediction`)
               "plan_peak_bytes": "plan/peak_bytes",
               "plan_met_peak_bytes": "plan/met_peak_bytes",  # the plan at the largest batch the run met
               # the allocator's own peak, an instrument apart from the tensor accounting, and the plan's figure
               "allocator_peak_bytes": "mem/allocator_peak_bytes",
               "plan_allocator_peak_bytes": "plan/allocator_peak_bytes",
               "plan_met_allocator_peak_bytes": "plan/met_allocator_peak_bytes",
               # the plan's process total and reserved bytes: what a budget is judged by for runs on another device
               "plan_process_bytes": "plan/process_bytes", "plan_reserved_bytes": "plan/reserved_bytes"}),
    **AT_PEAK,
}
PEAK_TAGS = {"peak_module": "tags.mem/peak_module", "peak_phase": "tags.mem/peak_phase"}
UNKNOWN_DEVICE = "?"


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs else pd.Series(None, index=runs.index, dtype=object)


def device(runs: pd.DataFrame) -> pd.Series:
    """The device a run measured on, from its tags: the GPU's name (`hw/gpu`) on CUDA, so two GPU models stay
    apart while `cuda:0` and `cuda:1` of one machine do not; `cpu` on CPU; `?` without an `hw/device` tag."""
    kind = _column(runs, "tags.hw/device").fillna("").astype(str).str.strip()
    gpu = _column(runs, "tags.hw/gpu").fillna("").astype(str).str.strip()
    cuda = kind.str.startswith("cuda")
    # bench trains on cpu or cuda only; any other backend keeps its own type rather than pass for the CPU
    named = kind.str.split(":").str[0].where(~cuda, gpu.where(gpu != "", kind))
    return named.where(kind != "", UNKNOWN_DEVICE)


def peak_site(runs: pd.DataFrame) -> pd.DataFrame:
    """Where the training tensor peak fell, per configuration (`group`): module, phase and the run they come
    from. One run speaks for the configuration (the lowest seed that has them), so module and phase always belong
    together, which a per-column "first value" would not guarantee."""
    counted = runs[(runs["status"] == "FINISHED") & ~runs["superseded"]]
    known = counted[counted["peak_module"].notna() | counted["peak_phase"].notna()]
    first = known.sort_values(["seed", "run_id"], na_position="last").drop_duplicates("group")
    return first.set_index("group")[["peak_module", "peak_phase", "run_name"]].rename(
        columns={"run_name": "peak_run"})


def breakdown(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The headline's configurations that logged a split of the tensor peak, in the headline's order: mean bytes per
    category over seeds (`at_peak_*_bytes`), the mean tensor peak, and where the peak fell (`peak_site`)."""
    parts = list(AT_PEAK)
    rows = table[table[parts].notna().any(axis=1)]
    columns = ["group", "label", "dataset", "model", "device", "technique", "n", "tensor_peak_bytes", *parts]
    return rows[columns].join(peak_site(runs), on="group").reset_index(drop=True)
