"""QA-LoRA (Xu et al. 2023, arXiv 2309.14717) on an affine group-wise INT4 base quantized with HQQ.

The base holds W = (W_q - zero) * scale, with one scale and one float zero point per group of `group_size`
consecutive inputs of an output row. The adapter sees the input average-pooled over the same groups (peft's
`QALoraLinearVariant`), so its dense delta is constant within each group and folds exactly into the zero
points, zero' = zero - delta / scale: the merged model is the same INT4 model, byte for byte in W_q.

Why we quantize ourselves: transformers' `HqqConfig` path fails in this stack ("QuantizationMethod.HQQ is not
available yet"), so each float `nn.Linear` is replaced by an `HQQLinear` after the model loads.
Why a subclass of peft's `HqqLoraLinear`: peft implements QA-LoRA for GPTQ layers only (no merge), and its
HQQ merge dequantizes and re-quantizes, which rewrites W_q and loses what QA-LoRA is for.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from hqq.core.quantize import BaseQuantizeConfig, HQQLinear
from peft.tuners.lora.hqq import HqqLoraLinear
from peft.tuners.lora.variants import QALoraLinearVariant
from peft.tuners.tuners_utils import check_adapters_to_merge

from bench.core.errors import ConfigError
from bench.techniques.targets import is_skipped, select_modules

HQQ_GROUP_MULTIPLE = 8  # hqq's BaseQuantizeConfig asserts group_size % 8 == 0


def _float_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


def adapted_linear_names(model: torch.nn.Module, *, targets: str | list[str], skip: list[str] | tuple[str,
                         ...] = ()) -> list[str]:
    """Full names of the float linears that `targets` selects, with peft's rules (a list matches a name or
    its dotted suffix, a string is a full-match regex) and `all-linear` = every linear not in `skip`.

    Call it before quantizing and give the list to LoraConfig: afterwards peft's `all-linear` finds none of
    the quantized layers, since it looks for `nn.Linear` and an `HQQLinear` is not one.
    """
    return select_modules(list(_float_linears(model)), targets, skip=skip)


def check_group_size(model: torch.nn.Module, *, targets: str | list[str], group_size: int,
                     skip: list[str] | tuple[str, ...] = ()) -> None:
    """Fail before quantizing unless every linear that will be quantized or adapted has a d_in that
    `group_size` divides (so a group never spans two rows, which the zero-point merge relies on), and
    `group_size` is a multiple of 8 (hqq's rule)."""
    linears = _float_linears(model)
    checked = {name: layer.in_features for name, layer in linears.items() if not is_skipped(name, skip)}
    for name in adapted_linear_names(model, targets=targets, skip=skip):
        if name not in checked:
            raise ConfigError(f"method.target_modules selects {name}, which stays in float (skipped: "
                              f"{', '.join(skip)}); method=qalora adapts quantized layers only")
        checked[name] = linears[name].in_features
    choices = ", ".join(str(size) for size in _valid_group_sizes(checked.values())) or "none"
    for name, d_in in checked.items():
        if d_in % group_size:
            raise ConfigError(f"method.group_size={group_size} does not divide d_in={d_in} of layer {name}; "
                              f"choose one of {choices} (powers of two >= 8 that divide every quantized d_in)")
    if group_size % HQQ_GROUP_MULTIPLE:
        raise ConfigError(f"method.group_size={group_size} is not a multiple of {HQQ_GROUP_MULTIPLE}, which hqq "
                          f"needs; choose one of {choices}")


def _valid_group_sizes(in_features: Any) -> list[int]:
    sizes = list(in_features)
    if not sizes:
        return []
    return [2**k for k in range(3, max(sizes).bit_length()) if all(d % 2**k == 0 for d in sizes)]


def quantize_linears_hqq(model: torch.nn.Module, *, group_size: int, skip: list[str] | tuple[str, ...],
                         compute_dtype: torch.dtype) -> int:
    """Replace every float `nn.Linear` not named in `skip` by a 4-bit affine `HQQLinear`: per group of
    `group_size` inputs of a row, one scale and one float zero point (kept unquantized, in `compute_dtype`,
    so the merge can move them). The float weights are freed. Returns how many layers were replaced."""
    # axis=1: W.reshape(-1, group_size), i.e. groups run along d_in; quant_zero/quant_scale off keeps the
    # meta-data as plain float tensors (their 8-bit quantization is deprecated in hqq anyway).
    config = BaseQuantizeConfig(nbits=4, group_size=group_size, axis=1, quant_zero=False, quant_scale=False)
    names = [name for name in _float_linears(model) if not is_skipped(name, skip)]
    for name in names:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        linear = getattr(parent, leaf)
        quantized = HQQLinear(linear, config, compute_dtype=compute_dtype, device=str(linear.weight.device),
                              del_orig=True)  # del_orig drops the float weight and bias from `linear`
        setattr(parent, leaf, quantized)
    return len(names)


class QALoraHqqLinear(HqqLoraLinear):
    """peft's LoRA layer on an `HQQLinear`, with QA-LoRA's pooled adapter (peft's variant) that merges into
    the zero points. Adapters configured without `use_qalora` keep peft's behaviour, merge included."""

    def __init__(self, base_layer: torch.nn.Module, adapter_name: str, config: Any, **kwargs: Any) -> None:
        super().__init__(base_layer, adapter_name, config=config, **kwargs)
        # The zero points as they were before each merge: unmerge puts them back exactly, whereas
        # adding the delta back in a 16-bit dtype would drift the base by a rounding step per cycle.
        self._zeros_before_merge: dict[str, torch.Tensor] = {}

    def resolve_lora_variant(self, *, config: Any, **kwargs: Any) -> Any:
        """peft's QA-LoRA variant (pooled A, [r, d_in / g]) when the config asks for it, else peft's choice."""
        if not config.use_qalora:
            return super().resolve_lora_variant(config=config, **kwargs)
        if config.use_dora or config.velora_config is not None:
            raise ValueError("QA-LoRA on HQQ layers does not combine with DoRA or VeLoRA")
        return QALoraLinearVariant()

    def is_qalora(self, adapter: str) -> bool:
        """Whether `adapter` was created as a QA-LoRA adapter (and so merges into the zero points)."""
        return isinstance(self.lora_variant.get(adapter), QALoraLinearVariant)

    def group_delta(self, adapter: str) -> torch.Tensor:
        """The adapter's weight change per (output row, input group), [d_out, d_in / group_size], in fp32."""
        group_size = self.qalora_group_size[adapter]
        # The forward takes the group mean and multiplies it by d_in/g (peft's variant), so each input of
        # a group carries (d_in/g)/g of B @ A.
        factor = self.scaling[adapter] * (self.in_features // group_size) / group_size
        return (self.lora_B[adapter].weight.float() @ self.lora_A[adapter].weight.float()) * factor

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """The dense [d_out, d_in] equivalent of the adapter (constant within each input group)."""
        if not self.is_qalora(adapter):
            return super().get_delta_weight(adapter)
        return self.group_delta(adapter).repeat_interleave(self.qalora_group_size[adapter], dim=1)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Fold QA-LoRA adapters into the base's zero points; W_q and the scales stay as they are."""
        adapter_names = [a for a in check_adapters_to_merge(self, adapter_names) if a in self.lora_A]
        kinds = {self.is_qalora(a) for a in [*adapter_names, *self.merged_adapters]}
        if kinds == {False}:
            super().merge(safe_merge=safe_merge, adapter_names=adapter_names)
            return
        if kinds == {True, False}:
            raise ValueError("cannot merge QA-LoRA and plain LoRA adapters into one HQQ layer: a plain merge "
                             "re-quantizes W_q, after which the QA-LoRA zero points no longer apply")
        for adapter in adapter_names:
            meta = self.get_base_layer().meta
            merged_zero = self._merged_zero(adapter, meta)
            if safe_merge and not torch.isfinite(merged_zero).all():
                raise ValueError(f"NaNs detected in the merged zero points. The adapter {adapter} seems to be broken")
            self._zeros_before_merge[adapter] = meta["zero"]
            meta["zero"] = merged_zero
            self.merged_adapters.append(adapter)

    def unmerge(self) -> None:
        """Put back the zero points each QA-LoRA merge replaced, last merged first."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        if not self.is_qalora(self.merged_adapters[-1]):
            super().unmerge()
            return
        while self.merged_adapters:
            adapter = self.merged_adapters.pop()
            self.get_base_layer().meta["zero"] = self._zeros_before_merge.pop(adapter)

    def _merged_zero(self, adapter: str, meta: dict[str, Any]) -> torch.Tensor:
        hqq_group = _foldable_group_size(meta, self.qalora_group_size[adapter])
        per_group = self.group_delta(adapter).repeat_interleave(self.qalora_group_size[adapter] // hqq_group, dim=1)
        # hqq's meta rows follow W.reshape(-1, group): row o * (d_in / group) + j is row o's j-th group,
        # which is exactly the row-major flattening of the [d_out, d_in / group] delta.
        zero, scale = meta["zero"], meta["scale"]
        delta = per_group.reshape(-1, 1).to(zero.device)
        return (zero.float() - delta / scale.float()).to(zero.dtype)


def _foldable_group_size(meta: dict[str, Any], qalora_group_size: int) -> int:
    """hqq's group size, after checking its groups lie inside the adapter's pooling groups along d_in."""
    if meta.get("axis") != 1 or meta.get("quant_zero") or meta.get("quant_scale") or "zero_scale" in meta:
        raise ValueError("QA-LoRA merges only into hqq layers with axis=1 and float (unquantized, not offloaded) "
                         "zero points and scales; quantize with `quantize_linears_hqq`")
    group_size = meta["group_size"]
    if qalora_group_size % group_size:
        raise ValueError(f"qalora_group_size={qalora_group_size} is not a multiple of the hqq group size {group_size}")
    return group_size


def register_qalora(lora_config: Any, *, group_size: int) -> None:
    """Make `lora_config` a QA-LoRA config whose adapters wrap `HQQLinear` layers with `QALoraHqqLinear`.

    The targets must name the layers (see `adapted_linear_names`): `all-linear` matches no `HQQLinear`.
    """
    if lora_config.target_modules == "all-linear":
        raise ValueError("QA-LoRA targets must be module names: peft's all-linear finds no HQQLinear; resolve "
                         "them before quantizing with adapted_linear_names(model, targets='all-linear', skip=...)")
    lora_config.use_qalora = True
    lora_config.qalora_group_size = group_size
    lora_config._register_custom_module({HQQLinear: QALoraHqqLinear})


def merge_qalora(peft_model: torch.nn.Module) -> Any:
    """The base model with every adapter merged (QA-LoRA ones into the zero points) and peft removed."""
    return peft_model.merge_and_unload(safe_merge=True)


@torch.no_grad()
def merge_error(peft_model: torch.nn.Module, batch: dict[str, Any], *, device: torch.device,
                autocast_dtype: torch.dtype) -> dict[str, float]:
    """Outputs of one evaluation batch before and after folding the adapters into the zero points, then
    unmerged again: `qalora/merge_max_abs_diff` and the same as a share of the largest output. Proves on
    the run's own model and data that the merged 4-bit model is the trained one."""
    inputs = {key: value.to(device) for key, value in batch.items() if key != "labels"}
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype != torch.float32)
    peft_model.eval()
    with autocast:
        before = peft_model(**inputs).logits.float()
        peft_model.merge_adapter()
        try:
            after = peft_model(**inputs).logits.float()
        finally:
            peft_model.unmerge_adapter()
    difference = float((after - before).abs().max())
    return {"qalora/merge_max_abs_diff": difference,
            "qalora/merge_rel_diff": difference / max(float(before.abs().max()), 1e-12)}
