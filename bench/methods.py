"""Turn a base model into the model to train: full fine-tuning, LoRA or QLoRA.

Techniques differ only here, in how the model is built; the training loop is the same for all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from bench.config import ConfigError, MethodConfig, ModelConfig
from bench.models import head_module_names, load_causal_lm, load_classifier
from bench.precision import pick_dtype
from bench.targets import check_targets_match, resolve_targets


@dataclass
class BuiltModel:
    """The trainable model and the choices made while building it (all of them get logged)."""

    model: Any
    weights_dtype: Any  # dtype of the (unquantized) weights as held
    compute_dtype: Any  # dtype matmuls run in (autocast)
    head_modules: list[str]  # modules outside the pretrained body, trained in full
    target_modules: str | list[str] | None  # what LoRA was applied to (None for full fine-tuning)


def check_method_supported(method: MethodConfig, device: Any) -> None:
    """Cheap checks before any weights load: QLoRA needs bitsandbytes and a device it supports."""
    if method.name != "qlora":
        return
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("method=qlora needs bitsandbytes; install it with `pip install bitsandbytes` "
                          "or choose method=lora or method=full") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"method=qlora is not supported on device {device.type!r}; bitsandbytes runs on cpu or cuda")


def build_model(*, method: MethodConfig, spec: ModelConfig, location: str, model_type: str,
                labels: list[str], device: Any, task: str = "classification") -> BuiltModel:
    """Load the base model the way `method` needs it and make the right parameters trainable."""
    weights_dtype = pick_dtype(method.dtype, device)
    causal = task == "causal_lm"
    # A causal LM keeps its pretrained LM head: nothing is new, so no module trains in full beside LoRA.
    heads = [] if causal else head_module_names(location, spec, labels)
    load = partial(load_causal_lm if causal else partial(load_classifier, labels=labels),
                   location=location, spec=spec, device=device)
    if method.name == "full":
        model = load(dtype=weights_dtype)
        model.requires_grad_(True)
        return BuiltModel(model, weights_dtype, weights_dtype, heads, None)
    targets = resolve_targets(method.target_modules, model_type)
    if method.name == "lora":
        base = load(dtype=weights_dtype)
        compute_dtype = weights_dtype
    else:
        compute_dtype = pick_dtype(method.compute_dtype, device)
        base = _load_4bit(method=method, load=load, compute_dtype=compute_dtype,
                          skip=["lm_head"] if causal else heads)
        weights_dtype = compute_dtype
    check_targets_match(base, targets)
    model = _add_lora(base, method=method, targets=targets, heads=heads, causal=causal)
    return BuiltModel(model, weights_dtype, compute_dtype, heads, targets)


def _load_4bit(*, method: MethodConfig, load: Callable[..., Any], compute_dtype: Any, skip: list[str]) -> Any:
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=method.quant_type, bnb_4bit_use_double_quant=method.double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        # The head stays in float: a new classifier must train in full; an LM head is often the embedding
        # matrix itself (tied weights), which 4-bit would untie.
        llm_int8_skip_modules=skip,
    )
    model = load(dtype=compute_dtype, quantization=quantization)
    disable_cpu_4bit_repacking(model)
    # No `prepare_model_for_kbit_training`: it upcasts every frozen non-quantized weight (embeddings
    # included, half of MiniLM) to fp32 and turns on gradient checkpointing. We keep those weights in the
    # compute dtype, as LoRA does, so the QLoRA-vs-LoRA difference is the 4-bit linears alone; the trained
    # head is upcast in `_add_lora` for both.
    return model


def _add_lora(base: Any, *, method: MethodConfig, targets: str | list[str], heads: list[str], causal: bool) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    task_type = TaskType.CAUSAL_LM if causal else TaskType.SEQ_CLS
    config = LoraConfig(task_type=task_type, r=method.r, lora_alpha=method.alpha, lora_dropout=method.dropout,
                        target_modules=targets, bias=method.bias,
                        modules_to_save=list(heads))  # peft extends the list it is given
    model = get_peft_model(base, config)
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != _fp32():
            parameter.data = parameter.data.float()  # the head copy was loaded in 16-bit; train it in fp32
    return model


def _fp32() -> Any:
    import torch

    return torch.float32


def disable_cpu_4bit_repacking(model: Any) -> int:
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
