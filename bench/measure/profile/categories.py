"""The categories a profiled step's time is split into, and how an op or a module is put in one.

A module is scoped by what it is in the model: a peft LoRA layer and its parts (lora_A/B, dropout, DoRA's
magnitude) are the adapter; a plain linear layer, or a LoRA layer's `base_layer`, is the base model's matmul;
the innermost module whose class is an attention block is attention. Scopes nest, and the innermost decides, so a
projection inside attention counts as a matmul, and what attention does besides (scores, softmax, the weighted
sum) as attention. An op that dequantizes 4-bit weights is dequantization wherever it runs, by its name (the
bitsandbytes ops) or by its scope (an HQQ layer's `dequantize`). Backward ops take the category of the forward op
that recorded them (the autograd sequence number pairs them), so each category holds forward and backward alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.core.ranges import RANGE_PREFIX

if TYPE_CHECKING:
    import torch

# Metric-name key -> what the report and the MLflow UI call it, in the order a stacked bar draws them.
CATEGORIES = {
    "base_matmul": "base model matmuls",
    "dequant": "4-bit dequantization",
    "adapter": "adapter (LoRA A/B, DoRA norm, S²-Attn shift)",
    "attention": "attention",
    "optimizer": "optimizer step",
    "data_host": "data and host work",
    "other": "the rest (embeddings, norms, activations, loss)",
}
# peft's names for a LoRA layer's own parts; a module under one of them is adapter work
ADAPTER_PARTS = frozenset({"lora_A", "lora_B", "lora_dropout", "lora_magnitude_vector", "lora_embedding_A",
                           "lora_embedding_B"})
# Ops that turn stored 4-bit (or blockwise-quantized) weights back into compute-dtype ones
DEQUANT_OP_PREFIXES = ("bitsandbytes::dequantize", "bitsandbytes::int8_vectorwise_dequant")


def category_of_range(name: str) -> str | None:
    """`bench::adapter` -> `adapter`; None for any other event."""
    if not name.startswith(RANGE_PREFIX):
        return None
    category = name[len(RANGE_PREFIX):]
    return category if category in CATEGORIES else None


def is_dequant_op(name: str) -> bool:
    """Whether an op's name says it dequantizes weights."""
    return name.startswith(DEQUANT_OP_PREFIXES)


def module_categories(model: torch.nn.Module) -> dict[str, str]:
    """Module name -> category, for the modules whose calls are scoped while profiling. Others inherit the scope
    they are called in: an embedding or a norm outside every other scope is in the whole model's, `other`."""
    from torch import nn

    attention = _innermost_attention(model)
    scoped = {"": "other"}  # the model's own code between scoped modules, so it is not taken for host work
    for name, module in model.named_modules():
        parts = name.split(".")
        if ADAPTER_PARTS.intersection(parts) or _is_lora_layer(module):
            scoped[name] = "adapter"
        elif parts[-1] == "base_layer" or isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            scoped[name] = "base_matmul"
        elif name in attention:
            scoped[name] = "attention"
    return scoped


def dequantizing_modules(model: torch.nn.Module) -> list[Any]:
    """Modules that dequantize through a `dequantize()` method of their own (HQQ's layers): the method is scoped
    while profiling, as bitsandbytes' ops are recognised by name."""
    return [module for module in model.modules()
            if callable(getattr(module, "dequantize", None)) and type(module).__name__.startswith("HQQ")]


def _is_lora_layer(module: torch.nn.Module) -> bool:
    """A peft LoRA layer (the wrapper around a base layer): its own ops (scaling, the sum) are adapter work."""
    return hasattr(module, "lora_A") and hasattr(module, "base_layer")


def _innermost_attention(model: torch.nn.Module) -> set[str]:
    """Names of the modules whose class is an attention block and that hold no other one (BERT's
    `BertSelfAttention`, not the `BertAttention` that also holds the output projection and its norm)."""
    found = {name for name, module in model.named_modules() if type(module).__name__.endswith("Attention")}
    return {name for name in found
            if not any(other != name and other.startswith(f"{name}." if name else "") for other in found)}
