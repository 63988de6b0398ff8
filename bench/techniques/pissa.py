"""PiSSA (Meng et al. 2024, arXiv 2404.02948): the adapter starts as the weight's top-r singular directions and the
base keeps the residual (peft's `init_lora_weights="pissa"`; `method.svd_iters` > 0: the fast randomized SVD large
models need). Since the base changed, the adapter ships converted into a plain LoRA delta."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.techniques.base import LORA_KNOBS, Technique

if TYPE_CHECKING:
    from bench.config import MethodConfig


class PiSSA(Technique):
    def lora_options(self, method: MethodConfig) -> dict[str, Any]:
        return {"init_lora_weights": "pissa" if method.svd_iters == 0 else f"pissa_niter_{method.svd_iters}"}


TECHNIQUE = PiSSA(name="pissa", label="PiSSA", summary="LoRA started at the top-r singular vectors", parent="lora",
                  knobs=LORA_KNOBS | {"svd_iters"}, converted_on_save=True, initialises_from_values=True, order=5)
