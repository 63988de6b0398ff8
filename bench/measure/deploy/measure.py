"""Deployment cost of a trained model, after training and outside its figures (`deploy.measure`).

Every form it ships in (bench.measure.deploy.forms) is saved, loaded back `deploy.load_repeats` times from disk, and
measured as a user would serve it:
- `deploy/<form>/bytes` on disk (for `unmerged` the adapter alone: the base is `deploy/base/bytes`) and `load_s`;
- fidelity on the test split: `accuracy` (and a causal LM's `perplexity`) over the whole split, and
  `max_abs_logit_diff` over its first `deploy.fidelity_rows` rows (padding left out): `unmerged` against the
  trained model in memory (what shipping lost), every merged form against `unmerged` (what merging lost), with
  `accuracy_delta` against `unmerged` (a fraction, as accuracy is) and `deploy/max_abs_logit` the scale;
- serving speed (bench.measure.deploy.speed): a classifier's latency at batch 1 and rows/s at `deploy.throughput_batch`,
  a causal LM's time to first token and greedy tokens/s for `deploy.new_tokens`; `base` (the base alone) only this,
  and for a causal LM (whose base keeps its pretrained head) also its scores on the test split.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import DeployConfig, RunConfig
from bench.measure.deploy import forms
from bench.measure.deploy.forms import Source
from bench.tasks.base import Task, TaskData

if TYPE_CHECKING:
    import torch

    from bench.models.build import BuiltModel
    from bench.models.load import ModelLocation

IN_MEMORY_NOTE = ("QA-LoRA's forms were measured in memory: bench has no from_pretrained path for its HQQ base, so "
                  "they have no load time and their bytes are the state dict's tensors")


@dataclass
class _Bench:
    """What every form is measured with: the task, its test split and the inputs the forms are compared on."""

    task: Task
    data: TaskData
    options: DeployConfig
    device: torch.device
    autocast_dtype: torch.dtype
    causal: bool
    trained: Any = None  # the model as it trained, and what the run scored it at on the test split (`test/*`):
    tested: dict[str, float] = field(default_factory=dict)  # a form with its very weights is not scored again
    reused: list[str] = field(default_factory=list)  # the forms whose scores are the run's own

    def __post_init__(self) -> None:
        """The inputs every form is compared and timed on, made once (speed.py drops their labels)."""
        self.batch = self.task.test_batch(self.data, self.options.fidelity_rows)
        self.single = self.task.test_batch(self.data, 1)
        self.throughput = None if self.causal else self.task.test_batch(self.data, self.options.throughput_batch)

    def logits(self, model: torch.nn.Module) -> Any:
        """Logits of the fidelity rows on the CPU in fp32; padded positions of a causal LM zeroed."""
        import torch

        inputs = {k: v.to(self.device) for k, v in self.batch.items() if k != "labels"}
        model.eval()
        with torch.inference_mode(), _autocast(self.device, self.autocast_dtype):
            logits = model(**inputs).logits.float().cpu()
        if self.causal:
            logits = logits * self.batch["attention_mask"].unsqueeze(-1)
        return logits

    def scores(self, model: torch.nn.Module, *, form: str = "", same_logits: bool = False) -> dict[str, float]:
        """The form's accuracy (and perplexity) on the test split. A form that holds the trained model's very weights
        and gave its very logits computes what the run's test scores computed, with the same code on the same rows:
        those are taken, exactly, instead of scoring the split again (`deploy/notes` says which)."""
        known = {name: self.tested[f"test/{name}"] for name in ("accuracy", "perplexity")
                 if f"test/{name}" in self.tested}
        if known and same_logits and _same_weights(model, self.trained, autocast=self.autocast_dtype):
            self.reused.append(form)
            return known
        found = self.task.evaluate(model, self.data.test_data, device=self.device, autocast_dtype=self.autocast_dtype)
        return {name: found[f"eval/{name}"] for name in ("accuracy", "perplexity") if f"eval/{name}" in found}

    def serve(self, model: torch.nn.Module, prefix: str) -> dict[str, float]:
        from bench.measure.deploy import speed

        timing = {"min_repeats": self.options.min_repeats, "max_seconds": self.options.max_seconds}
        common = {"device": self.device, "autocast_dtype": self.autocast_dtype, "prefix": prefix, **timing}
        if self.causal:
            return speed.serving_generator(model, prompt=_prompt(self.single), new_tokens=self.options.new_tokens,
                                           **common)
        return speed.serving_classifier(model, single=self.single, batch=self.throughput, **common)


def measure_deployment(cfg: RunConfig, task: Task, data: TaskData, trained: Any, *, source: Source,
                       output_dir: Path, tested: dict[str, float] | None = None) -> tuple[dict[str, float],
                                                                                        dict[str, str]]:
    """`deploy/*` metrics and tags of every form of the trained model; the saved forms are removed after unless
    `deploy.keep`. `tested`: the run's own test scores (`test/accuracy`, ...) of `trained`."""
    bench = _Bench(task, data, cfg.deploy, source.device, source.compute_dtype, source.causal, trained=trained,
                   tested=dict(tested or {}))
    metrics = {"deploy/latency_batch": 1.0, "deploy/throughput_batch": float(cfg.deploy.throughput_batch),
               **({"deploy/new_tokens": float(cfg.deploy.new_tokens)} if source.causal else {})}
    technique, folder, tags = cfg.method.technique, output_dir / "deploy", {}
    reference = bench.logits(trained)
    metrics["deploy/max_abs_logit"] = float(reference.abs().max())  # the scale the logit differences are read on
    try:
        if not technique.uses_adapter:
            measured = _full(bench, source, output_dir / "model", reference)
        elif technique.base == "int4-affine":
            measured = _in_memory(bench, trained, output_dir / "adapter", reference)
            tags = {"deploy/notes": IN_MEMORY_NOTE}
        else:
            measured = _from_disk(bench, source, output_dir / "adapter", folder, reference)
    finally:
        if not cfg.deploy.keep:
            shutil.rmtree(folder, ignore_errors=True)
    shown = sorted({key.split("/")[1] for key in measured}, key=_FORM_ORDER.index)
    if bench.reused:
        note = (f"{', '.join(bench.reused)}: the trained model's own weights and logits, so its test scores are the "
                "run's test/* (not computed twice)")
        tags["deploy/notes"] = f"{tags['deploy/notes']}; {note}" if "deploy/notes" in tags else note
    return {**metrics, **measured}, {**tags, "deploy/forms": ",".join(shown)}


_FORM_ORDER = ["base", "unmerged", "merged16", "merged4", "full"]


def _full(bench: _Bench, source: Source, shipped: Path, reference: Any) -> dict[str, float]:
    model, seconds = forms.timed_loads(lambda: source.load_folder(shipped, dtype=source.weights_dtype),
                                       repeats=bench.options.load_repeats, device=source.device)
    measured, _ = _measure(bench, "full", model, size=forms.weight_bytes(shipped), load_s=seconds, against=reference)
    return measured


def _from_disk(bench: _Bench, source: Source, adapter: Path, folder: Path, reference: Any) -> dict[str, float]:
    repeats, device = bench.options.load_repeats, source.device
    forms.save_base(source, folder / "base")
    model, seconds = forms.timed_loads(lambda: source.load_folder(folder / "base"), repeats=repeats, device=device)
    measured, _ = _measure(bench, "base", model, size=forms.weight_bytes(folder / "base"), load_s=seconds)
    model, seconds = forms.timed_loads(lambda: forms.load_unmerged(source, folder / "base", adapter), repeats=repeats,
                                       device=device)
    found, unmerged = _measure(bench, "unmerged", model, size=forms.weight_bytes(adapter), load_s=seconds,
                               against=reference)
    measured.update(found)
    forms.save_merged16(source, folder / "base", adapter, folder / "merged16")
    steps = [("merged16", folder / "merged16")]
    if source.method.technique.base == "nf4":
        forms.save_merged4(source, folder / "merged16", folder / "merged4")
        steps.append(("merged4", folder / "merged4"))
    for form, saved in steps:
        model, seconds = forms.timed_loads(lambda saved=saved: source.load_folder(saved), repeats=repeats,
                                           device=device)
        found, _ = _measure(bench, form, model, size=forms.weight_bytes(saved), load_s=seconds, against=unmerged,
                            baseline=measured)
        measured.update(found)
    return measured


def _in_memory(bench: _Bench, trained: Any, adapter: Path, reference: Any) -> dict[str, float]:
    """QA-LoRA: the base alone (peft's adapters switched off), the trained model, then its merge into the INT4
    zero points (peft's merge_and_unload, which takes the trained model apart: measured last)."""
    from bench.techniques.impl.qalora import merge_qalora

    base_bytes = _tensor_bytes(trained, skip=("lora_", "modules_to_save"))
    with trained.disable_adapter():
        measured, _ = _measure(bench, "base", trained, size=base_bytes, keep=True)
    found, _ = _measure(bench, "unmerged", trained, size=forms.weight_bytes(adapter), keep=True)
    measured.update(found)
    merged = merge_qalora(trained)
    found, _ = _measure(bench, "merged4", merged, size=_tensor_bytes(merged), against=reference, baseline=measured,
                        keep=True)
    return {**measured, **found}


def _measure(bench: _Bench, form: str, model: torch.nn.Module, *, size: int, load_s: float | None = None,
             against: Any = None, baseline: dict[str, float] | None = None,
             keep: bool = False) -> tuple[dict[str, float], Any]:
    """One form's figures; `against`: the logits it is compared with (None: speed only, as for `base`);
    `baseline`: the figures of `unmerged`, for the accuracy delta. Returns them and the form's logits."""
    prefix = f"deploy/{form}/"
    measured: dict[str, float] = {f"{prefix}bytes": float(size)}
    if load_s is not None:
        measured.update({f"{prefix}load_s": load_s, f"{prefix}load_n": float(bench.options.load_repeats)})
    logits = None
    if form == "base" and bench.causal:  # a causal LM's base keeps its pretrained head: what training added shows
        measured.update({f"{prefix}{name}": value for name, value in bench.scores(model).items()})
    elif against is not None or form == "unmerged":
        logits = bench.logits(model)
        if against is not None:
            measured[f"{prefix}max_abs_logit_diff"] = float((logits - against).abs().max())
        same = against is not None and measured[f"{prefix}max_abs_logit_diff"] == 0.0
        measured.update({f"{prefix}{name}": value for name, value in bench.scores(model, form=form,
                                                                                   same_logits=same).items()})
    unmerged = (baseline or {}).get("deploy/unmerged/accuracy")
    if unmerged is not None and f"{prefix}accuracy" in measured:
        measured[f"{prefix}accuracy_delta"] = measured[f"{prefix}accuracy"] - unmerged  # a fraction, as accuracy
    measured.update(bench.serve(model, prefix))
    _report(form, measured, prefix)
    if not keep:
        del model
        forms.release()
    return measured, logits


def _report(form: str, measured: dict[str, float], prefix: str) -> None:
    """One line per form while it runs: what it weighs, how fast it loads, serves and scores."""
    parts = [f"{measured[prefix + 'bytes'] / 2**20:.1f} MiB"]
    if f"{prefix}load_s" in measured:
        parts.append(f"loads in {measured[prefix + 'load_s']:.2f} s")
    if f"{prefix}accuracy" in measured:
        delta = measured.get(f"{prefix}accuracy_delta")
        parts.append(f"test accuracy {measured[prefix + 'accuracy']:.4f}"
                     + ("" if delta is None else f" ({100 * delta:+.2f} points vs unmerged)"))
    if f"{prefix}max_abs_logit_diff" in measured:
        parts.append(f"max |Δlogit| {measured[prefix + 'max_abs_logit_diff']:.3g}")
    for key, unit in (("latency_p50_ms", "ms p50"), ("rows_per_s", "rows/s"), ("ttft_ms", "ms to first token"),
                      ("gen_tokens_per_s", "tokens/s")):
        if prefix + key in measured:
            parts.append(f"{measured[prefix + key]:.4g} {unit}")
    print(f"deploy {form}: " + ", ".join(parts), flush=True)


def _same_weights(model: torch.nn.Module, trained: torch.nn.Module | None, *, autocast: torch.dtype) -> bool:
    """Whether `model` holds the trained model's tensors: the same names and values. A tensor kept in float32 by one
    and in the run's 16-bit autocast dtype by the other (peft reloads a trained head in the base's dtype) matches
    when the float32 one rounds to exactly the other: under autocast, the linear layers compute with that rounding."""
    import torch

    if trained is None:
        return False
    if model is trained:
        return True
    mine, theirs = model.state_dict(), trained.state_dict()
    if mine.keys() != theirs.keys():
        return False
    for name, tensor in mine.items():
        other = theirs[name].to(tensor.device)
        if tensor.shape != other.shape:
            return False
        if tensor.dtype != other.dtype:
            if {tensor.dtype, other.dtype} != {torch.float32, autocast}:
                return False
            tensor, other = tensor.to(autocast), other.to(autocast)
        if not torch.equal(tensor, other):
            return False
    return True


def _tensor_bytes(model: torch.nn.Module, skip: tuple[str, ...] = ()) -> int:
    return sum(t.numel() * t.element_size() for name, t in model.state_dict().items()
               if not any(part in name for part in skip))


def _prompt(row: dict[str, Any]) -> dict[str, Any]:
    """The prompt of a test row (the tokens before its answer), as a causal LM is asked to continue it."""
    import torch

    answer = (row["labels"][0] != -100).nonzero()
    length = int(answer[0]) if len(answer) else int(row["attention_mask"][0].sum())
    ids = row["input_ids"][:, :length]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _autocast(device: torch.device, dtype: torch.dtype) -> Any:
    import torch

    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def deploy_after_training(cfg: RunConfig, task: Task, data: TaskData, built: BuiltModel, *, location: ModelLocation,
                          device: torch.device, output_dir: Path,
                          tested: dict[str, float] | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """The run skeleton's deploy phase, after the model shipped. A failure here is recorded on the run (tag
    `deploy/error`) and leaves its training figures standing: they were measured and logged already."""
    source = Source(method=cfg.method, spec=cfg.model, location=location, labels=data.head_labels or [],
                    device=device, causal=cfg.task == "causal_lm", weights_dtype=built.weights_dtype,
                    compute_dtype=built.compute_dtype)
    try:
        return measure_deployment(cfg, task, data, built.model, source=source, output_dir=output_dir, tested=tested)
    except Exception as error:  # noqa: BLE001 - recorded on the run; the run's training figures stand
        message = f"{type(error).__name__}: {error}"
        print(f"warning: deploy measurement failed: {message}", flush=True)
        return {}, {"deploy/error": message[:500]}
