"""LoftQ initialisation (Li et al. 2023, arXiv 2310.08659) for a bitsandbytes 4-bit base.

QLoRA starts from W ≈ Q(W) with a zero adapter, so the quantization error is all in the starting point.
LoftQ alternates, T times: Q_t = quantize(W - s·B_{t-1}A_{t-1}), then B_t A_t = the rank-r SVD of (W - Q_t)/s.
The 4-bit base then holds Q_T and the adapter starts at B_T A_T, so base + adapter is closer to W.

Why not peft's `loftq_init` / `replace_lora_weights_loftq`: both move the weights to "cuda" (or "xpu")
unconditionally, and neither divides by the LoRA scaling s = alpha/r, so with alpha != r the adapter starts
at s times the residual instead of the residual. This module uses bitsandbytes' own quantizer (the very
function `Params4bit` calls, with the layer's block size, data type and double quantization) on any device.
"""

from __future__ import annotations

import math
from typing import Any

import torch

PEFT_PREFIX = "base_model.model."


def lora_4bit_layers(peft_model: torch.nn.Module) -> dict[str, Any]:
    """The LoRA-wrapped bitsandbytes 4-bit linears, by their name in the base model."""
    from bitsandbytes.nn import Linear4bit
    from peft.tuners.lora import LoraLayer

    found = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and isinstance(module.get_base_layer(), Linear4bit):
            found[name.removeprefix(PEFT_PREFIX)] = module
    return found


@torch.no_grad()
def loftq_initialise(peft_model: torch.nn.Module, float_weights: dict[str, torch.Tensor], *, iterations: int,
                     adapter: str = "default") -> dict[str, float]:
    """Re-quantize each adapted layer's base and set its adapter by LoftQ; `float_weights[name]` is the
    layer's 16/32-bit weight. Returns the mean relative weight error before (plain NF4) and after."""
    before, after = [], []
    for name, layer in lora_4bit_layers(peft_model).items():
        weight = float_weights[name].to(torch.float32)
        errors = _initialise_layer(layer, weight, iterations=iterations, adapter=adapter)
        before.append(errors[0])
        after.append(errors[1])
    if not before:
        raise ValueError("LoftQ found no LoRA layer on a bitsandbytes 4-bit base")
    return {"loftq/weight_error_nf4": sum(before) / len(before), "loftq/weight_error_loftq": sum(after) / len(after)}


def _initialise_layer(layer: torch.nn.Module, weight: torch.Tensor, *, iterations: int, adapter: str) -> tuple[float,
                      float]:
    base = layer.get_base_layer()
    device = base.weight.device
    weight = weight.to(device)
    scaling = layer.scaling[adapter]
    rank = layer.r[adapter]
    low_rank = torch.zeros_like(weight)
    first_error = None
    for _ in range(iterations):
        packed, state = _quantize(weight - low_rank, like=base.weight)
        quantized = _dequantize(packed, state)
        first_error = _relative(weight - quantized, weight) if first_error is None else first_error
        lora_b, lora_a = _rank_r(weight - quantized, rank)
        low_rank = lora_b @ lora_a
    _set_base(base, packed, state)
    # forward adds scaling·B·A: divide the scaling between the two factors so neither starts oversized
    factor = 1.0 / math.sqrt(scaling)
    layer.lora_A[adapter].weight.data = (lora_a * factor).to(layer.lora_A[adapter].weight.dtype)
    layer.lora_B[adapter].weight.data = (lora_b * factor).to(layer.lora_B[adapter].weight.dtype)
    return first_error, _relative(weight - quantized - low_rank, weight)


def _rank_r(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B (out x r) and A (r x in) with B·A the best rank-r approximation; the singular values split evenly."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def _quantize(weight: torch.Tensor, *, like: Any) -> tuple[torch.Tensor, Any]:
    from bitsandbytes.functional import quantize_4bit

    return quantize_4bit(weight.contiguous(), blocksize=like.blocksize, compress_statistics=like.compress_statistics,
                         quant_type=like.quant_type, quant_storage=like.quant_storage)


def _dequantize(packed: torch.Tensor, state: Any) -> torch.Tensor:
    from bitsandbytes.functional import dequantize_4bit

    return dequantize_4bit(packed, state).to(torch.float32)


def _set_base(base: torch.nn.Module, packed: torch.Tensor, state: Any) -> None:
    from bitsandbytes.nn import Params4bit

    old = base.weight
    state.dtype = old.quant_state.dtype  # the dtype dequantized weights come out in (the compute dtype)
    base.weight = Params4bit(packed, requires_grad=False, quant_state=state, blocksize=old.blocksize,
                             compress_statistics=old.compress_statistics, quant_type=old.quant_type,
                             quant_storage=old.quant_storage, module=base, bnb_quantized=True)


def _relative(difference: torch.Tensor, reference: torch.Tensor) -> float:
    return float(torch.linalg.norm(difference) / torch.linalg.norm(reference))
