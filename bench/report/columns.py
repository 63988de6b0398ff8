"""The columns of the report's tables: header, the frame column shown, how it reads and the hint its header
carries. Each accuracy column names its split: `val` is eval/* (the validation split, which every choice in the report
is made on), `test` is test/* (the held-out split, only ever reported)."""

from __future__ import annotations

from collections.abc import Callable

from bench.core.metrics import TENSOR_PEAK_BYTES, TRAIN_TOKENS_PER_S
from bench.report import memory
from bench.report.formats import count, decimal, mib, percent, plain, points, ratio, seconds, size, when
from bench.report.logged import hint, unit
from bench.report.render import Column, ci, delta

VAL = "the validation split (eval/accuracy), which every choice in the report is made on"
TEST = "the held-out test split (test/accuracy), never chosen on"
QUANTILE = ("mean over seeds of each run's distribution-free 95 % interval of the quantile (order statistics of "
            "the timed requests); for one seed, exactly that interval")
PAIRING = ("95 % interval of the difference over seeds: paired t on per-seed differences where the seeds match one "
           "to one (a shared seed is a shared batch order), Welch otherwise; the cell says which")

TIMING = ("timing/shared of its runs: alone (n runs trained while no other cell of their sweep did: the only figures "
          "a ratio or a recommendation compares), shared (they overlapped), unknown (no tag: recorded before bench "
          "marked it)")


# What each memory figure is, for the column hints (the registry's meaning): one name per figure, none standing in
# for another.
TENSOR_PEAK = f"{hint(TENSOR_PEAK_BYTES)}; blank where not logged"
MEMORY_COLUMNS = [
    Column("allocator peak", "allocator_peak_bytes", size, True, hint("mem/allocator_peak_bytes")),
    Column("eval tensor peak", "eval_tensor_peak_bytes", size, True, hint("mem/eval_tensor_peak_bytes")),
    Column("net RSS", "peak_rss_net_bytes", size, True, hint("mem/peak_rss_net_bytes")),
    Column("peak allocated", "peak_allocated_bytes", size, True, hint("mem/peak_allocated_bytes")),
    Column("peak reserved", "peak_reserved_bytes", size, True, hint("mem/peak_reserved_bytes")),
    Column("NVML process", "peak_nvml_process_bytes", size, True, hint("mem/peak_nvml_process_bytes"))]
BITS_COLUMNS = [
    Column("bits/weight (quantized)", "weight_bits_per_param", decimal, True, hint("mem/weight_bits_per_param")),
    Column("bits/param (model)", "model_bits_per_param", decimal, True, hint("mem/model_bits_per_param"))]


def _scope(*, several_datasets: bool, several_devices: bool) -> list[Column]:
    """The data set and device columns, shown only when the report spans several."""
    columns = [Column("data set", "dataset")] if several_datasets else []
    return columns + ([Column("device", "device", hint="hw/gpu on CUDA, else the device type (hw/device)")]
                      if several_devices else [])


def headline_columns(*, several_datasets: bool, several_devices: bool = False, test: bool = False) -> list[Column]:
    """The headline's columns (those no configuration has a value for are left out when shown); `test`: some
    configuration logged test/accuracy, so it is reported beside validation."""
    return _scope(several_datasets=several_datasets, several_devices=several_devices) + [
        Column("model", "model"), Column("technique", "technique"), Column("r", "r", plain, True),
        Column("targets", "target_modules"),
        Column("config", "config", hint="params that differ besides rank and targets"),
        Column("n", "n", count, True, "finished runs (seeds) averaged", keep=True),
        *accuracy_columns(test=test),
        Column("tensor peak", "tensor_peak_bytes", size, True, TENSOR_PEAK, keep=True), *MEMORY_COLUMNS,
        Column("tokens/s", "tokens_per_s", count, True, TRAIN_TOKENS_PER_S),
        Column("train time", "train_time_s", seconds, True, "train/time_s"),
        Column("timing", "timing_label", hint=TIMING), Column("trainable", "trainable_params", count, True,
                                                                "params/trainable"),
        Column("trainable %", "trainable_pct", decimal, True, "params/trainable_pct"),
        Column("adapter size", "adapter_bytes", size, True, hint("artifact/adapter_bytes")),
        *BITS_COLUMNS, Column("energy", "energy_j", lambda v: f"{v:,.0f} {unit('gpu/energy_j')}", True,
                              "gpu/energy_j"),
        Column("Δ val accuracy", "delta_accuracy", points, True, "against full fine-tuning of the same model on the "
               f"same device (its configuration best on validation), on {VAL}", keep=True),
        *([Column("Δ test accuracy", "delta_test_accuracy", points, True, "against the same full fine-tuning, on "
                  f"{TEST}", keep=True)] if test else []),
        Column("memory ×", "memory_ratio", ratio, True, "tensor peak / full FT's on the same device", keep=True),
        Column("speed ×", "speed_ratio", ratio, True, "tokens/s / full FT's, both timed alone (timing/shared=false); "
               "blank otherwise", keep=True),
        Column("size ×", "size_ratio", ratio, True, "adapter size / full FT's weights", keep=True)]


def accuracy_columns(*, test: bool) -> list[Column]:
    """Mean validation accuracy and its interval, then test's when logged."""
    columns = [Column("val accuracy %", "accuracy_mean", percent, True, f"mean over seeds, on {VAL}", keep=True),
               ci("val 95 % CI", "accuracy", "Student t over seeds: ± half-width [low, high]", keep=True)]
    return columns + ([Column("test accuracy %", "test_accuracy_mean", percent, True, f"mean over seeds, on {TEST}",
                              keep=True),
                       ci("test 95 % CI", "test_accuracy", "Student t over seeds: ± half-width [low, high]",
                          keep=True)] if test else [])


def variant_columns(*, several_datasets: bool, several_devices: bool = False, test: bool = False) -> list[Column]:
    """Columns of the variants-against-parent table; `test`: report test accuracy beside validation."""
    return _scope(several_datasets=several_datasets, several_devices=several_devices) + [
        Column("variant", "label"),
        Column("parent", "parent_label", hint="the parent's configuration best on validation"),
        Column("n", "n", count, True, "variant runs (seeds)", keep=True),
        Column("val accuracy %", "accuracy_mean", percent, True, f"variant's mean, on {VAL}", keep=True),
        Column("parent val accuracy %", "parent_accuracy_mean", percent, True, f"parent's mean, on {VAL}", keep=True),
        Column("Δ val accuracy", "delta_parent", points, True, "variant − parent, on validation", keep=True),
        delta("Δ val 95 % CI", "delta_parent", PAIRING, keep=True),
        *([Column("test accuracy %", "test_accuracy_mean", percent, True, f"variant's mean, on {TEST}", keep=True),
           Column("parent test accuracy %", "parent_test_accuracy_mean", percent, True, f"parent's mean, on {TEST}",
                  keep=True),
           Column("Δ test accuracy", "delta_parent_test", points, True, "variant − parent, on test", keep=True),
           delta("Δ test 95 % CI", "delta_parent_test", PAIRING, keep=True)] if test else []),
        Column("memory ×", "parent_memory_ratio", ratio, True, "tensor peak / parent's"),
        Column("speed ×", "parent_speed_ratio", ratio, True, "tokens/s / parent's, both timed alone "
               "(timing/shared=false); blank otherwise"),
        Column("size ×", "parent_size_ratio", ratio, True, "adapter size / parent's"),
        Column("bits/weight (quantized)", "weight_bits_per_param", decimal, True,
               "mem/weight_bits_per_param of the variant: its base's quantized (or, at 16 bits, linear) layers"),
        Column("parent bits/weight", "parent_weight_bits_per_param", decimal, True, "the same, of the parent")]


def run_columns(*, several_datasets: bool, several_devices: bool = False) -> list[Column]:
    """Columns of the all-runs table."""
    columns = [Column("run", "run_name"), Column("status", "status")]
    return columns + _scope(several_datasets=several_datasets, several_devices=several_devices) + [
        Column("model", "model"), Column("technique", "technique"), Column("r", "r", plain, True),
        Column("targets", "target_modules"), Column("config", "config"),
        Column("stage", "stage", hint="fair/stage: tune (the search for a rate) or final (the tuned runs)"),
        Column("lr", "lr", plain, True, "trainer.lr"), Column("seed", "seed", plain, True),
        Column("scoring", "scoring", hint="eval/scoring, a causal LM's: likelihood (accuracy: the likeliest label's "
               "answer) or generation (exact match of the greedy answer, read by tag eval/answer_rule)"),
        Column("val accuracy %", "accuracy", percent, True, f"eval/accuracy: {VAL}"),
        Column("test accuracy %", "test_accuracy", percent, True, f"test/accuracy: {TEST}"),
        Column("val exact match %", "exact_match", percent, True, hint("eval/exact_match")),
        Column("test exact match %", "test_exact_match", percent, True, hint("test/exact_match")),
        Column("tensor peak", "tensor_peak_bytes", size, True),
        Column("net RSS", "peak_rss_net_bytes", size, True),
        Column("tokens/s", "tokens_per_s", count, True), Column("train time", "train_time_s", seconds, True),
        Column("adapter size", "adapter_bytes", size, True), Column("started", "start_time", when),
        Column("note", "note"), Column("run id", "run_id")]


def breakdown_columns() -> list[Column]:
    """Columns of the memory-at-the-peak table: MiB per category (means over seeds), then where the peak fell. The
    configuration's label names its data set and device when the report spans several."""
    parts = [Column(f"{name} MiB", f"at_peak_{name}_bytes", mib, True, f"mem/at_peak/{name}_bytes: {hint}")
             for name, hint in memory.CATEGORIES.items()]
    return [
        Column("configuration", "label"), Column("n", "n", count, True, "runs (seeds) averaged"),
        Column("tensor peak MiB", "tensor_peak_bytes", mib, True, "mean mem/tensor_peak_bytes; the categories sum "
               "to it", keep=True),
        Column("phase", "peak_phase", hint="mem/peak_phase of the run named: forward, backward or optimizer"), *parts,
        Column("module", "peak_module", hint="mem/peak_module of the run named: the module running at the peak"),
        Column("run", "peak_run", hint="the run module and phase come from (its lowest seed)")]


FAILURE_COLUMNS = [Column("run", "run_name"), Column("status", "status"), Column("failure", "failure"),
                   Column("error", "error"), Column("model", "model"), Column("technique", "technique"),
                   Column("r", "r", plain, True), Column("targets", "target_modules"), Column("config", "config"),
                   Column("seed", "seed", plain, True), Column("started", "start_time", when),
                   Column("note", "note"), Column("run id", "run_id")]


def tuned_columns(*, several_datasets: bool, several_devices: bool = False, several_models: bool = False,
                  several_fair: bool = False) -> list[Column]:
    """Columns of the tuned headline: the technique, its rate and test accuracy, the paired differences against
    LoRA and full fine-tuning on test, then validation (what the rate was chosen on) and cost."""
    fair = [Column("comparison", "fair_id", hint="fair/id")] if several_fair else []
    model = [Column("model", "model")] if several_models else []
    return fair + _scope(several_datasets=several_datasets, several_devices=several_devices) + model + [
        Column("technique", "technique"), Column("r", "r", plain, True), Column("targets", "target_modules"),
        Column("config", "config", hint="params that differ besides rank and targets"),
        Column("lr", "lr_used", hint="fair/lr_chosen: the learning rate best on validation in the tuning stage, "
               "which every final run of the technique trained at", keep=True),
        Column("n", "n", count, True, "final runs (seeds) averaged", keep=True),
        Column("test accuracy %", "test_accuracy_mean", percent, True, f"mean over seeds, on {TEST}", keep=True),
        ci("test 95 % CI", "test_accuracy", "Student t over seeds: ± half-width [low, high]", keep=True),
        Column("Δ test vs LoRA", "vs_lora", points, True, "technique − LoRA of the same comparison, on test: the "
               "mean of per-seed differences", keep=True),
        delta("Δ vs LoRA 95 % CI", "vs_lora", PAIRING, keep=True),
        Column("Δ test vs full FT", "vs_full", points, True, "technique − full fine-tuning of the same comparison, "
               "on test: the mean of per-seed differences", keep=True),
        delta("Δ vs full FT 95 % CI", "vs_full", PAIRING, keep=True),
        Column("val accuracy %", "accuracy_mean", percent, True, f"mean over seeds, on {VAL}", keep=True),
        Column("chosen on", "chosen_on", hint="fair/chosen_on: the split the rate was chosen on"),
        Column("tensor peak", "tensor_peak_bytes", size, True, TENSOR_PEAK),
        Column("tokens/s", "tokens_per_s", count, True, TRAIN_TOKENS_PER_S),
        Column("trainable", "trainable_params", count, True, "params/trainable")]


def milliseconds(v: float) -> str:  # serving latency: hundredths of a millisecond matter on a small model
    return f"{v:,.2f}"


def rate(v: float) -> str:  # rows or tokens per second
    return f"{v:,.1f}"


def _serving(title: str, field: str, form: Callable[[float], str], *, batch: float | None = None,
             quantile: bool = False) -> list[Column]:
    """A serving figure (`p50 ms @1` when every row shares the batch) and its interval, as text."""
    logged = (f"mean over seeds of each run's 95 % interval (deploy/<form>/{field}_low, _high); for one seed, "
              "that interval")
    return [Column(f"{title} @{batch:g}" if batch is not None else title, field, form, True, _form_hint(field)),
            Column(f"{title} 95 % interval", f"{field}_interval", hint=QUANTILE if quantile else logged)]


def deploy_columns(*, several_datasets: bool, several_devices: bool = False, latency_batch: float | None = None,
                   throughput_batch: float | None = None) -> list[Column]:
    """Columns of the deployment-cost table, one row per configuration and form (`bench.report.deploy`). A batch
    every row shares goes into the serving headers (`p50 ms @1`); one that varies (None) gets a column instead.
    Classifier and causal-LM figures are both declared; a table shows those some row has."""
    batches = [Column(title, field, plain, True, hint(f"deploy/{field}")) for title, field, batch in (
        ("latency batch", "latency_batch", latency_batch), ("throughput batch", "throughput_batch", throughput_batch))
        if batch is None]
    return _scope(several_datasets=several_datasets, several_devices=several_devices) + [
        Column("model", "model"), Column("technique", "technique"), Column("r", "r", plain, True),
        Column("targets", "target_modules"),
        Column("config", "config", hint="params that differ besides rank and targets"),
        Column("form", "form", hint="base: the base model alone; unmerged: base + adapter as peft serves it; merged16: "
               "the adapter merged into 16-bit weights; merged4: the merge quantized again to 4 bits; full: full "
               "fine-tuning's checkpoint"),
        Column("n", "n", count, True, "finished runs (seeds) that measured this form", keep=True),
        Column("size", "bytes", size, True, _form_hint("bytes")),
        Column("load", "load_s", lambda v: f"{v:,.2f} {unit('deploy/{form}/load_s')}", True, _form_hint("load_s")),
        Column("test accuracy %", "accuracy", percent, True, f"deploy/<form>/accuracy: this form on {TEST}"),
        Column("Δ accuracy vs unmerged", "accuracy_delta", points, True, _form_hint("accuracy_delta")),
        Column("max |logit diff|", "max_abs_logit_diff", lambda v: f"{v:.3g}", True,
               _form_hint("max_abs_logit_diff")),
        Column("perplexity", "perplexity", decimal, True, _form_hint("perplexity")),
        *batches,
        *_serving("p50 ms", "latency_p50_ms", milliseconds, batch=latency_batch, quantile=True),
        *_serving("p90 ms", "latency_p90_ms", milliseconds, batch=latency_batch, quantile=True),
        *_serving("rows/s", "rows_per_s", rate, batch=throughput_batch),
        *_serving("TTFT ms", "ttft_ms", milliseconds),
        *_serving("gen tokens/s", "gen_tokens_per_s", rate),
        Column("decode tokens/s", "decode_tokens_per_s", rate, True, _form_hint("decode_tokens_per_s"))]


def _form_hint(figure: str) -> str:
    """The hint of a form's figure, `deploy/<form>/<figure>: <meaning>`, from the registry."""
    return hint(f"deploy/{{form}}/{figure}")
