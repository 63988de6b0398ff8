"""OLoRA (Büyükakyüz 2024, arXiv 2406.01775): the adapter starts at an orthonormal basis of the weight (its QR
decomposition) and the base keeps the rest (peft's `init_lora_weights="olora"`). Since the base changed, the adapter
ships converted into a plain LoRA delta against the original weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.techniques.base import Technique

if TYPE_CHECKING:
    from bench.config import MethodConfig


class OLoRA(Technique):
    def lora_options(self, method: MethodConfig) -> dict[str, Any]:
        return {"init_lora_weights": "olora"}


TECHNIQUE = OLoRA(name="olora", label="OLoRA", summary="LoRA started at an orthonormal (QR) basis", parent="lora",
                  converted_on_save=True, initialises_from_values=True, order=6)
