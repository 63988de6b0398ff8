"""LoRA (Hu et al. 2021, arXiv 2106.09685): a rank-r update B·A beside each targeted linear of a frozen 16-bit base,
through peft. Every hook's default (`bench.techniques.base.Technique`) is LoRA's own behaviour."""

from __future__ import annotations

from bench.techniques.base import Technique

TECHNIQUE = Technique(name="lora", label="LoRA", summary="a rank-r update B·A on a frozen 16-bit base",
                      compared_with="full", baseline=True, order=1)
