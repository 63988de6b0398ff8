"""LoftQ (Li et al. 2023, arXiv 2310.08659): QLoRA's NF4 base, with base and adapter initialised together so that
base + adapter approximates the 16-bit weights (`method.loftq_iter` rounds of quantizing and a rank-r SVD;
`bench.techniques.impl.loftq`). It reads the 32-bit weights before the 4-bit base loads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.techniques.base import LORA_KNOBS, QUANT_KNOBS
from bench.techniques.qlora import QLoRA

if TYPE_CHECKING:
    import torch

    from bench.config import MethodConfig


class LoftQ(QLoRA):
    def before_loading(self, method: MethodConfig, weights: Any) -> Any:
        """The 32-bit weight of every linear layer (None from a plan's skeleton, which has no values)."""
        return weights.float_weights()

    def initialise(self, method: MethodConfig, model: torch.nn.Module, read: Any) -> dict[str, float]:
        if read is None:
            return {}
        from bench.techniques.impl.loftq import loftq_initialise

        return loftq_initialise(model, read, iterations=method.loftq_iter)


TECHNIQUE = LoftQ(name="loftq", label="LoftQ", summary="QLoRA with base and adapter initialised together",
                  parent="qlora", base="nf4", knobs=LORA_KNOBS | QUANT_KNOBS | {"loftq_iter"},
                  initialises_from_values=True, order=7)
