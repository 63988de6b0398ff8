"""QLoRA (Dettmers et al. 2023, arXiv 2305.14314): LoRA on a base whose linear layers bitsandbytes holds in 4-bit
NF4 with double quantization; the head (or a causal LM's LM head) stays in float. Its variants on the same base
(LoftQ) extend `QLoRA`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from bench.techniques.base import LORA_KNOBS, QUANT_KNOBS, Technique

if TYPE_CHECKING:
    import torch

    from bench.config import MethodConfig

NF4_BLOCK, NESTED_BLOCKS = 64, 256  # weights per absmax, and blocks per second-level constant (double quantization)


class QLoRA(Technique):
    """A technique on bitsandbytes' NF4 base (`base="nf4"`)."""

    def quantization(self, method: MethodConfig, *, compute_dtype: torch.dtype, skip: list[str]) -> Any:
        """bitsandbytes' 4-bit config: the base a run trains on, and a merged model quantized again."""
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=method.quant_type, bnb_4bit_use_double_quant=method.double_quant,
            bnb_4bit_compute_dtype=compute_dtype,
            # The head stays in float: a new classifier must train in full; an LM head is often the embedding
            # matrix itself (tied weights), which 4-bit would untie.
            llm_int8_skip_modules=skip,
        )

    def quantized_bytes(self, method: MethodConfig, *, numel: int, size: int) -> int:
        """A 4-bit weight as bitsandbytes stores it: two per byte, plus one absmax per 64-weight block (8-bit
        with a fp32 second level per 256 blocks under double quantization, else fp32)."""
        blocks = math.ceil(numel / NF4_BLOCK)
        constants = blocks + 4 * math.ceil(blocks / NESTED_BLOCKS) + 4 if method.double_quant else 4 * blocks
        return math.ceil(numel / 2) + constants


TECHNIQUE = QLoRA(name="qlora", label="QLoRA", summary="LoRA on a 4-bit NF4 base with double quantization",
                  compared_with="lora", base="nf4", knobs=LORA_KNOBS | QUANT_KNOBS, order=2)
