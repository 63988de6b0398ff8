"""Turn a base model into the model to train: full fine-tuning, LoRA, QLoRA, a LoRA variant or any peft method.

Techniques differ only here, in how the model is built; the training loop is the same for all. The steps are the
same for every technique, and each asks the technique (`bench.techniques`, one module per technique) what it does
at that step: the base's quantization, what it changes on the base, its peft config, its initialisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from bench.config import ConfigError, MethodConfig, ModelConfig
from bench.models.load import (
    ModelLocation,
    head_module_names,
    load_causal_lm,
    load_classifier,
    model_config,
    skeleton_heads,
)
from bench.models.precision import run_dtypes
from bench.techniques.base import BASE_PACKAGES
from bench.techniques.targets import check_targets_match, resolve_targets

if TYPE_CHECKING:
    import torch
    from transformers import BitsAndBytesConfig

__all__ = ["BASE_PACKAGES", "BuiltModel", "PretrainedWeights", "assemble", "build_model", "check_method_fits",
           "check_method_supported"]


@dataclass
class BuiltModel:
    """The trainable model and the choices made while building it (all of them get logged)."""

    model: torch.nn.Module
    weights_dtype: torch.dtype  # dtype of the (unquantized) weights as held
    compute_dtype: torch.dtype  # dtype matmuls run in (autocast)
    head_modules: list[str]  # modules outside the pretrained body, trained in full
    target_modules: str | list[str] | None  # what the adapter was applied to (None for full fine-tuning)
    also_trained: list[str] = field(default_factory=list)  # body modules trained in full (LongLoRA's LoRA+)
    init_metrics: dict[str, float] = field(default_factory=dict)  # what an initialisation measured (LoftQ)
    lr_by_module: dict[str, float] = field(default_factory=dict)  # modules that train at their own rate
    lr_scale_by_module: dict[str, float] = field(default_factory=dict)  # ... or at a multiple of trainer.lr (LoRA+)

    def rates(self, lr: float) -> dict[str, float]:
        """The rate of every module that does not train at `lr` (the trainer's), for the optimizer's groups."""
        return {**{module: lr * scale for module, scale in self.lr_scale_by_module.items()}, **self.lr_by_module}


def check_method_supported(method: MethodConfig, device: torch.device, task: str = "classification") -> None:
    """Cheap checks before any data or weights load: the task the technique serves, and the library its base
    needs."""
    method.technique.check_task(method, task)
    package = method.technique.package
    if package is None:
        return
    try:
        __import__(package)
    except ImportError:
        raise ConfigError(f"method={method.name} needs {package}; install it with `pip install {package}` "
                          "or choose method=lora or method=full") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"method={method.name} is not supported on device {device.type!r}; {package} runs on cpu "
                          "or cuda")


def check_method_fits(method: MethodConfig, *, spec: ModelConfig, location: ModelLocation, task: str,
                      max_length: int) -> None:
    """Checks that need the architecture but no weights or data, on a skeleton built on the meta device: the
    technique's own (LongLoRA: a Llama-style decoder; QA-LoRA: groups that tile every quantized layer's inputs),
    and an adapter the targeted layers can hold (no LoRA rank above what a layer can hold)."""
    technique = method.technique
    technique.advise(method, max_length=max_length)
    if not technique.uses_adapter:
        return
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    try:
        config = model_config(spec, location, None if task == "causal_lm" else ["0", "1"])
    except (OSError, ValueError, KeyError):
        if technique.needs_architecture:
            raise
        return  # the run reads the config again after the data, and fails there, on record, saying why
    technique.check_model_type(method, model_type=config.model_type, task=task)
    causal = task == "causal_lm"
    with init_empty_weights():
        skeleton = (AutoModelForCausalLM if causal else AutoModelForSequenceClassification).from_config(config)
    skip = ["lm_head"] if causal else skeleton_heads(skeleton)
    targets = technique.select_targets(method, skeleton, targets=resolve_targets(method.target_modules,
                                                                                 config.model_type), skip=skip)
    technique.check_adapter_fits(method, skeleton, targets=targets, skip=skip)


class PretrainedWeights:
    """The checkpoint's weights, loaded onto the run's device: what `assemble` builds a run's model from.
    (`bench.plan.skeleton.SkeletonWeights` stands in its place to plan a model that has only a config.)"""

    initialises = True  # PiSSA's, OLoRA's and LoftQ's data-dependent initialisations run

    def __init__(self, *, spec: ModelConfig, location: ModelLocation, labels: list[str], device: torch.device,
                 causal: bool) -> None:
        self.causal, self.device = causal, device
        # A causal LM keeps its pretrained LM head: nothing is new, so no module trains in full beside LoRA.
        self.heads = [] if causal else head_module_names(location, spec, labels)
        self._load = partial(load_causal_lm if causal else partial(load_classifier, labels=labels),
                             location=location, spec=spec)

    def load(self, *, dtype: torch.dtype, quantization: BitsAndBytesConfig | None = None,
             device: torch.device | None = None) -> Any:
        """The model in `dtype` (4-bit where `quantization` says) on `device` (default: the run's)."""
        return self._load(dtype=dtype, quantization=quantization, device=device or self.device)

    def quantize_int4(self, model: torch.nn.Module, *, group_size: int, skip: list[str],
                      compute_dtype: torch.dtype) -> None:
        """QA-LoRA's base: hqq's affine INT4 on every linear layer not in `skip`."""
        from bench.techniques.impl.qalora import quantize_linears_hqq

        quantize_linears_hqq(model, group_size=group_size, skip=skip, compute_dtype=compute_dtype)

    def float_weights(self) -> dict[str, Any]:
        """The 32-bit weights LoftQ fits its adapters against."""
        return _float_weights(self.load)


def build_model(*, method: MethodConfig, spec: ModelConfig, location: ModelLocation, model_type: str,
                labels: list[str], device: torch.device, task: str = "classification") -> BuiltModel:
    """Load the base model the way `method` needs it and make the right parameters trainable."""
    weights = PretrainedWeights(spec=spec, location=location, labels=labels, device=device,
                                causal=task == "causal_lm")
    return assemble(method=method, weights=weights, model_type=model_type, device=device, task=task)


def assemble(*, method: MethodConfig, weights: Any, model_type: str, device: torch.device,
             task: str = "classification") -> BuiltModel:
    """The technique's model from a source of weights (`PretrainedWeights`, or a plan's skeleton): the base in
    the technique's dtype and quantization, then its adapter, trainable where the technique trains."""
    weights_dtype, compute_dtype = run_dtypes(method, device)
    technique = method.technique
    heads = weights.heads
    if not technique.uses_adapter:
        model = weights.load(dtype=weights_dtype)
        model.requires_grad_(True)
        return BuiltModel(model, weights_dtype, weights_dtype, heads, None)
    technique.check_model_type(method, model_type=model_type, task=task)
    targets = resolve_targets(method.target_modules, model_type)
    causal = task == "causal_lm"
    skip = ["lm_head"] if causal else heads
    read = technique.before_loading(method, weights)
    base = _load_base(method, weights.load, compute_dtype=compute_dtype, skip=skip)
    check_targets_match(base, targets)
    targets = technique.select_targets(method, base, targets=targets, skip=skip)
    built = BuiltModel(None, compute_dtype, compute_dtype, heads, targets,
                       lr_scale_by_module=technique.lr_scales(method))
    extra = technique.prepare_base(method, base, weights=weights, built=built, skip=skip)
    config = technique.peft_config(method, task_type="CAUSAL_LM" if causal else "SEQ_CLS", targets=targets,
                                   modules_to_save=heads + built.also_trained, initialise=weights.initialises,
                                   **extra)
    built.model = _adapted(base, config)
    built.init_metrics = technique.initialise(method, built.model, read)
    return built


def _load_base(method: MethodConfig, load: Callable[..., Any], *, compute_dtype: torch.dtype,
               skip: list[str]) -> Any:
    """The frozen base in the compute dtype, its linear layers in 4 bits where the technique quantizes on load."""
    quantization = method.technique.quantization(method, compute_dtype=compute_dtype, skip=skip)
    if quantization is None:
        return load(dtype=compute_dtype)
    model = load(dtype=compute_dtype, quantization=quantization)
    disable_cpu_4bit_repacking(model)
    # No `prepare_model_for_kbit_training`: it upcasts every frozen non-quantized weight (embeddings
    # included, half of MiniLM) to fp32 and turns on gradient checkpointing. We keep those weights in the
    # compute dtype, as LoRA does, so the QLoRA-vs-LoRA difference is the 4-bit linears alone; the trained
    # head is upcast in `_adapted` for both.
    return model


def _float_weights(load: Callable[..., Any]) -> dict[str, Any]:
    """The 32-bit weight of every linear layer, for LoftQ to fit its adapters against, held on the CPU: a 32-bit
    copy of the model must never take GPU memory, since it would count in the run's peak (and may not fit).
    LoftQ moves one layer's weight at a time to the device. Only these stay while the 4-bit model loads (the
    rest of the 32-bit model, embeddings included, is released first)."""
    import torch

    model = load(dtype=torch.float32, device=torch.device("cpu"))
    weights = {name: module.weight.detach() for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear)}
    del model
    return weights


def _adapted(base: torch.nn.Module, config: Any) -> Any:
    """peft's model of `config` on `base`, its trained parameters in fp32."""
    from peft import get_peft_model

    model = get_peft_model(base, config)
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != _fp32():
            parameter.data = parameter.data.float()  # the head copy was loaded in 16-bit; train it in fp32
    return model


def _fp32() -> Any:
    import torch

    return torch.float32


def disable_cpu_4bit_repacking(model: torch.nn.Module) -> int:
    """bitsandbytes on AVX512-BF16 CPUs repacks 4-bit weights the first time a layer runs without grad,
    into a kernel that has no autograd: training after an evaluation then silently stops. Turn it off."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return 0
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)
