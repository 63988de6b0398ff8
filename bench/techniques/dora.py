"""DoRA (Liu et al. 2024, arXiv 2402.09353): each adapted weight split into a trained magnitude per output and a
direction that LoRA updates (peft's `use_dora`). Beyond LoRA it trains the magnitudes and, in each step, keeps the
dense B·A of every adapted layer and two output-wide tensors per token."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.techniques.base import Technique

if TYPE_CHECKING:
    from bench.config import MethodConfig
    from bench.plan.analytic import Census


class DoRA(Technique):
    def lora_options(self, method: MethodConfig) -> dict[str, Any]:
        return {"use_dora": True}

    def adapter_params(self, method: MethodConfig, *, d_in: int, d_out: int) -> int:
        """LoRA's B·A and a magnitude per output."""
        return method.r * (d_in + d_out) + d_out

    def extra_activations(self, method: MethodConfig, census: Census, *, tokens: int, element: int) -> int:
        """The dense B·A of each adapted layer and two output-wide tensors per token (base and adapter results),
        counted from autograd's saved tensors on a tiny BERT."""
        return element * (census.targeted_weights + 2 * tokens * census.targeted_outputs)


TECHNIQUE = DoRA(name="dora", label="DoRA", summary="LoRA on the direction, a trained magnitude per output",
                 parent="lora", order=3)
