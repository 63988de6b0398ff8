"""rsLoRA (Kalajdzievski 2023, arXiv 2312.03732): LoRA scaled by alpha/√r instead of alpha/r, so high ranks keep
learning (peft's `use_rslora`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.techniques.base import Technique

if TYPE_CHECKING:
    from bench.config import MethodConfig


class RsLoRA(Technique):
    def lora_options(self, method: MethodConfig) -> dict[str, Any]:
        return {"use_rslora": True}


TECHNIQUE = RsLoRA(name="rslora", label="rsLoRA", summary="LoRA scaled by alpha/√r", parent="lora", order=4)
