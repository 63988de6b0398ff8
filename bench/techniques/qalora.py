"""QA-LoRA (Xu et al. 2023, arXiv 2309.14717): an affine group-wise INT4 base (HQQ: a scale and a float zero point
per group of `method.group_size` inputs); the adapter sees the input average-pooled over the same groups, so after
training it folds into the zero points and the merged model stays 4-bit (`bench.techniques.impl.qalora`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.techniques.base import LORA_KNOBS, Technique

if TYPE_CHECKING:
    import torch

    from bench.config import MethodConfig
    from bench.models.build import BuiltModel
    from bench.plan.analytic import Census


class QALoRA(Technique):
    """LoRA's rank check stands: A sees d_in / group_size pooled values, which may be fewer than r (MiniLM at g=64:
    6 for r=8), a waste the paper's own settings accept, not an error; the layer's own size bounds r as for LoRA."""

    def select_targets(self, method: MethodConfig, model: torch.nn.Module, *, targets: str | list[str],
                       skip: list[str]) -> list[str]:
        """The adapted layers by name, found before quantizing (peft's `all-linear` would not recognise the HQQ
        layers afterwards), and a group size that tiles every quantized layer's inputs."""
        from bench.techniques.impl.qalora import adapted_linear_names, check_group_size

        names = adapted_linear_names(model, targets=targets, skip=skip)
        check_group_size(model, targets=names, group_size=method.group_size, skip=skip)
        return names

    def prepare_base(self, method: MethodConfig, base: torch.nn.Module, *, weights: Any, built: BuiltModel,
                     skip: list[str]) -> dict[str, Any]:
        """hqq's affine INT4 on every linear layer not in `skip` (a plan's skeleton builds the same layers)."""
        weights.quantize_int4(base, group_size=method.group_size, skip=skip, compute_dtype=built.compute_dtype)
        return {}

    def peft_config(self, method: MethodConfig, **given: Any) -> Any:
        from bench.techniques.impl.qalora import register_qalora

        config = super().peft_config(method, **given)
        register_qalora(config, group_size=method.group_size)
        return config

    def after_training(self, method: MethodConfig, model: torch.nn.Module, batch: Callable[[], dict[str, Any]], *,
                       device: torch.device, autocast_dtype: torch.dtype) -> dict[str, float]:
        """The merge into the zero points, checked on one evaluation batch (`qalora/merge_*`)."""
        from bench.techniques.impl.qalora import merge_error

        return merge_error(model, batch(), device=device, autocast_dtype=autocast_dtype)

    def adapter_params(self, method: MethodConfig, *, d_in: int, d_out: int) -> int:
        """A sees d_in / g pooled inputs."""
        return method.r * (d_in // method.group_size + d_out)

    def quantized_bytes(self, method: MethodConfig, *, numel: int, size: int) -> int:
        """A 4-bit HQQ weight: two per byte, plus a scale and a zero point per group in the compute dtype."""
        return math.ceil(numel / 2) + 2 * size * math.ceil(numel / method.group_size)

    def extra_activations(self, method: MethodConfig, census: Census, *, tokens: int, element: int) -> int:
        """HQQ dequantizes every 4-bit weight in the forward pass, and autograd keeps it for the input gradient."""
        return element * sum(census.body_linear_weights)


TECHNIQUE = QALoRA(name="qalora", label="QA-LoRA", summary="LoRA on pooled groups of an INT4 base, mergeable into it",
                   parent="qlora", base="int4-affine", knobs=LORA_KNOBS | {"group_size", "compute_dtype"},
                   needs_architecture=True, order=8)
