"""Turn a base model into the model to train: full fine-tuning, LoRA, QLoRA or a LoRA variant.

Techniques differ only here, in how the model is built; the training loop is the same for all. Each adapter
technique is LoRA on one of three bases (16-bit, bitsandbytes NF4, HQQ affine INT4) plus peft options or an
initialisation; the variants that need more than a peft option live in `bench.techniques`.
"""

from __future__ import annotations

import sys
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
from bench.techniques.targets import check_rank_fits, check_targets_match, resolve_targets

if TYPE_CHECKING:
    import torch
    from transformers import BitsAndBytesConfig

# The library each quantized base needs.
BASE_PACKAGES = {"nf4": "bitsandbytes", "int4-affine": "hqq"}


@dataclass
class BuiltModel:
    """The trainable model and the choices made while building it (all of them get logged)."""

    model: torch.nn.Module
    weights_dtype: torch.dtype  # dtype of the (unquantized) weights as held
    compute_dtype: torch.dtype  # dtype matmuls run in (autocast)
    head_modules: list[str]  # modules outside the pretrained body, trained in full
    target_modules: str | list[str] | None  # what LoRA was applied to (None for full fine-tuning)
    also_trained: list[str] = field(default_factory=list)  # body modules trained in full (LongLoRA's LoRA+)
    init_metrics: dict[str, float] = field(default_factory=dict)  # what an initialisation measured (LoftQ)
    lr_by_module: dict[str, float] = field(default_factory=dict)  # modules that train at their own rate


def check_method_supported(method: MethodConfig, device: torch.device, task: str = "classification") -> None:
    """Cheap checks before any data or weights load: the library each base needs, and the task it serves."""
    if method.technique.causal_lm_only:
        from bench.techniques.longlora import check_longlora_task

        check_longlora_task(task)
    package = BASE_PACKAGES.get(method.technique.base)
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


# Below this many tokens per S²-Attn group, most groups miss the sequence's first tokens, which pretrained
# attention leans on: SmolLM2's loss on 96 tokens of English is 3.0 with full attention and 6.4 with groups
# of 24, against 2.5 and 3.2 on 2,048 tokens (groups of 512). The paper trains groups of 2,048.
SHORT_GROUP_TOKENS = 256


def check_method_fits(method: MethodConfig, *, spec: ModelConfig, location: ModelLocation, task: str,
                      max_length: int) -> None:
    """Checks that need the architecture but no weights or data, on a skeleton built on the meta device:
    LongLoRA needs a Llama-style decoder; QA-LoRA's groups must tile every quantized layer's inputs; no adapter's
    rank may exceed what its layers can hold."""
    if method.name == "longlora" and max_length * method.attn_group_ratio < SHORT_GROUP_TOKENS:
        print(f"warning: method=longlora with data.max_length={max_length} and method.attn_group_ratio="
              f"{method.attn_group_ratio:g} trains with groups of at most {max_length * method.attn_group_ratio:.0f} "
              f"tokens; S²-Attn is meant for long sequences (the paper: groups of 2,048 tokens), and groups under "
              f"{SHORT_GROUP_TOKENS} start from a much higher loss than full attention", file=sys.stderr)
    if not method.uses_adapter:
        return
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    try:
        config = model_config(spec, location, None if task == "causal_lm" else ["0", "1"])
    except (OSError, ValueError, KeyError):
        if method.name in ("longlora", "qalora"):
            raise
        return  # the run reads the config again after the data, and fails there, on record, saying why
    if method.name == "longlora":
        from bench.techniques.longlora import check_longlora_supported

        check_longlora_supported(config.model_type, task)
    causal = task == "causal_lm"
    with init_empty_weights():
        skeleton = (AutoModelForCausalLM if causal else AutoModelForSequenceClassification).from_config(config)
    skip = ["lm_head"] if causal else skeleton_heads(skeleton)
    targets = resolve_targets(method.target_modules, config.model_type)
    if method.name == "qalora":
        from bench.techniques.qalora import adapted_linear_names, check_group_size

        targets = adapted_linear_names(skeleton, targets=targets, skip=skip)
        check_group_size(skeleton, targets=targets, group_size=method.group_size, skip=skip)
    # QA-LoRA's A sees in_features / group_size pooled values, which may be fewer than r (MiniLM at g=64: 6 for
    # r=8): a waste the paper's own settings accept, not an error; the layer's own size bounds r as for LoRA.
    check_rank_fits(skeleton, targets=targets, r=method.r, skip=skip)


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
        from bench.techniques.qalora import quantize_linears_hqq

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
    causal = task == "causal_lm"
    heads = weights.heads
    if method.name == "full":
        model = weights.load(dtype=weights_dtype)
        model.requires_grad_(True)
        return BuiltModel(model, weights_dtype, weights_dtype, heads, None)
    if method.name == "longlora":
        from bench.techniques.longlora import check_longlora_supported

        check_longlora_supported(model_type, task)
    targets = resolve_targets(method.target_modules, model_type)
    skip = ["lm_head"] if causal else heads
    base_kind = method.technique.base
    float_weights = weights.float_weights() if method.name == "loftq" else None
    if base_kind == "nf4":
        base = _load_4bit(method=method, load=weights.load, compute_dtype=compute_dtype, skip=skip)
    else:
        base = weights.load(dtype=compute_dtype)
    check_targets_match(base, targets)
    if base_kind == "int4-affine":
        from bench.techniques.qalora import adapted_linear_names, check_group_size

        # named before quantizing: peft's `all-linear` would not recognise the HQQ layers afterwards
        targets = adapted_linear_names(base, targets=targets, skip=skip)
        check_group_size(base, targets=targets, group_size=method.group_size, skip=skip)
        weights.quantize_int4(base, group_size=method.group_size, skip=skip, compute_dtype=compute_dtype)
    built = BuiltModel(None, compute_dtype, compute_dtype, heads, targets)
    tying = {}
    if method.name == "longlora":
        from bench.techniques.longlora import embeddings_tied, enable_s2_attention, longlora_trainable_modules

        enable_s2_attention(base, group_ratio=method.attn_group_ratio)
        built.also_trained = longlora_trainable_modules(base)
        # the paper trains them at its LoRA rate (2e-5); LoRA's usual 2e-3 would wreck a pretrained embedding
        built.lr_by_module = dict.fromkeys(built.also_trained, method.embed_norm_lr)
        # a tied head (SmolLM2's) shares the trained embedding copy instead of silently untying from it
        tying = {"ensure_weight_tying": embeddings_tied(base)}
    built.model = _add_lora(base, method=method, targets=targets, full_modules=heads + built.also_trained,
                            causal=causal, initialise=weights.initialises, **tying)
    if float_weights is not None:
        from bench.techniques.loftq import loftq_initialise

        built.init_metrics = loftq_initialise(built.model, float_weights, iterations=method.loftq_iter)
    return built


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


def nf4_quantization(method: MethodConfig, *, compute_dtype: torch.dtype, skip: list[str]) -> Any:
    """bitsandbytes' 4-bit config of a technique: the base a run trains on, and a merged model quantized again."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=method.quant_type, bnb_4bit_use_double_quant=method.double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        # The head stays in float: a new classifier must train in full; an LM head is often the embedding
        # matrix itself (tied weights), which 4-bit would untie.
        llm_int8_skip_modules=skip,
    )


def _load_4bit(*, method: MethodConfig, load: Callable[..., Any], compute_dtype: torch.dtype, skip: list[str]) -> Any:
    quantization = nf4_quantization(method, compute_dtype=compute_dtype, skip=skip)
    model = load(dtype=compute_dtype, quantization=quantization)
    disable_cpu_4bit_repacking(model)
    # No `prepare_model_for_kbit_training`: it upcasts every frozen non-quantized weight (embeddings
    # included, half of MiniLM) to fp32 and turns on gradient checkpointing. We keep those weights in the
    # compute dtype, as LoRA does, so the QLoRA-vs-LoRA difference is the 4-bit linears alone; the trained
    # head is upcast in `_add_lora` for both.
    return model


def _add_lora(base: torch.nn.Module, *, method: MethodConfig, targets: str | list[str], full_modules: list[str],
              causal: bool, initialise: bool = True, **options: Any) -> Any:
    """peft's LoRA (and the variant's options) on `base`; `initialise=False` keeps peft's plain initialisation
    where a variant's would decompose the weights (a plan's skeleton has no values to decompose)."""
    from peft import LoraConfig, TaskType, get_peft_model

    task_type = TaskType.CAUSAL_LM if causal else TaskType.SEQ_CLS
    variant = peft_options(method)
    if not initialise:
        variant.pop("init_lora_weights", None)
    config = LoraConfig(task_type=task_type, r=method.r, lora_alpha=method.alpha, lora_dropout=method.dropout,
                        target_modules=targets, bias=method.bias, **variant, **options,
                        modules_to_save=list(full_modules))  # peft extends the list it is given
    if method.name == "qalora":
        from bench.techniques.qalora import register_qalora

        register_qalora(config, group_size=method.group_size)
    model = get_peft_model(base, config)
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != _fp32():
            parameter.data = parameter.data.float()  # the head copy was loaded in 16-bit; train it in fp32
    return model


def peft_options(method: MethodConfig) -> dict[str, Any]:
    """The LoraConfig options that make a variant out of plain LoRA."""
    pissa = "pissa" if method.svd_iters == 0 else f"pissa_niter_{method.svd_iters}"
    return {"dora": {"use_dora": True}, "rslora": {"use_rslora": True}, "pissa": {"init_lora_weights": pissa},
            "olora": {"init_lora_weights": "olora"}}.get(method.name, {})


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
