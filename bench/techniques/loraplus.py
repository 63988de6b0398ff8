"""LoRA+ (Hayou et al. 2024, arXiv 2402.12354): LoRA whose B matrices train at `lr_ratio` times the rate of the A
matrices (and of everything else), which the paper finds learns features faster at the same cost. peft's
`create_loraplus_optimizer` also puts every 1-D parameter (biases, norms) in B's group; here only B is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.techniques.base import LORA_KNOBS, Option, Technique

if TYPE_CHECKING:
    from bench.config import MethodConfig


class LoRAPlus(Technique):
    def lr_scales(self, method: MethodConfig) -> dict[str, float]:
        return {"lora_B": method.options["lr_ratio"]}


TECHNIQUE = LoRAPlus(
    name="loraplus", label="LoRA+", summary="LoRA with B trained at lr_ratio x the rate of A", parent="lora",
    knobs=LORA_KNOBS, options=(Option("lr_ratio", 16, "B's learning rate over A's (peft's default: 16)", above=0),))
