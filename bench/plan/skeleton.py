"""A model's shapes without its weights, as `bench.models.build.assemble` builds a technique from them.

`SkeletonWeights` stands where `bench.models.build.PretrainedWeights` stands in a run: it builds the model from its
config on the meta device (no storage at all, so a 70B model costs nothing), and for the 4-bit bases it
builds the very layer classes a run trains (bitsandbytes' `Linear4bit`, hqq's `HQQLinear`), holding tensors of
the exact shapes and dtypes the quantizers produce: the packed weights, the per-block (NF4) or per-group (INT4)
constants, each layer's code tables. Their own forward and backward then run under fake tensors, through the
fake kernels bitsandbytes registers, so a step allocates what it allocates in a run.

What is taken from shapes rather than traced, and why: quantizing itself (bitsandbytes does not quantize on the
meta device) and the data-dependent initialisations (PiSSA's and OLoRA's decompositions, LoftQ's alternation),
which change the values but not one byte of what a training step holds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from bench.techniques.targets import is_skipped

if TYPE_CHECKING:
    import torch
    from transformers import BitsAndBytesConfig, PretrainedConfig

NF4_BLOCK, NESTED_BLOCK = 64, 256  # bitsandbytes' 4-bit block, and the second level's under double quantization


class SkeletonWeights:
    """`bench.models.build.assemble`'s source of weights for a plan: the model from its config, on the meta device."""

    initialises = False  # no data-dependent initialisation: it changes values, not what a step holds

    def __init__(self, *, config: PretrainedConfig, causal: bool, trust_remote_code: bool = False) -> None:
        from bench.models.load import skeleton_heads

        self.config, self.causal, self.trust_remote_code = config, causal, trust_remote_code
        self.heads = [] if causal else skeleton_heads(self.load(dtype=None))

    def load(self, *, dtype: torch.dtype, quantization: BitsAndBytesConfig | None = None,
             device: torch.device | None = None) -> Any:
        """The model in `dtype` on the meta device; with a BitsAndBytesConfig, its linear layers in 4 bits."""
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        auto = AutoModelForCausalLM if self.causal else AutoModelForSequenceClassification
        with torch.device("meta"):
            model = auto.from_config(self.config, dtype=dtype, trust_remote_code=self.trust_remote_code)
        if quantization is not None:
            skip = list(quantization.llm_int8_skip_modules or [])
            _replace_linears(model, skip, lambda linear: self._nf4(linear, quantization))
        return model

    def quantize_int4(self, model: torch.nn.Module, *, group_size: int, skip: list[str],
                      compute_dtype: torch.dtype) -> None:
        """QA-LoRA's base: every linear layer not in `skip` as an hqq affine INT4 layer."""
        _replace_linears(model, skip, lambda linear: _hqq(linear, group_size, compute_dtype), match=is_skipped)

    def float_weights(self) -> None:
        """No 32-bit copy: LoftQ's initialisation is not traced (it holds nothing a training step holds)."""
        return None

    def _nf4(self, linear: torch.nn.Linear, quantization: Any) -> Any:
        """bitsandbytes' Linear4bit as a run loads it: the packed weight and its quantization state."""
        import torch
        from bitsandbytes.functional import QuantState
        from bitsandbytes.nn import Linear4bit

        compute = quantization.bnb_4bit_compute_dtype
        double = quantization.bnb_4bit_use_double_quant
        kind = quantization.bnb_4bit_quant_type
        layer = Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                           compute_dtype=compute, compress_statistics=double, quant_type=kind, device="meta")
        numel, blocks = linear.weight.numel(), math.ceil(linear.weight.numel() / NF4_BLOCK)
        meta = {"device": "meta"}
        nested = QuantState(absmax=torch.empty(math.ceil(blocks / NESTED_BLOCK), dtype=torch.float32, **meta),
                            code=torch.empty(256, dtype=torch.float32, **meta), blocksize=NESTED_BLOCK,
                            dtype=torch.float32) \
            if double else None
        state = QuantState(absmax=torch.empty(blocks, dtype=torch.uint8 if double else torch.float32, **meta),
                           shape=linear.weight.shape, code=torch.empty(16, dtype=torch.float32, **meta),
                           blocksize=NF4_BLOCK,
                           quant_type=kind, dtype=compute,
                           offset=torch.empty((), dtype=torch.float32, **meta) if double else None, state2=nested)
        weight = torch.nn.Parameter(torch.empty(math.ceil(numel / 2), 1, dtype=torch.uint8, **meta),
                                    requires_grad=False)
        weight.quant_state, weight.quant_type, weight.compress_statistics = state, kind, double
        weight.blocksize, weight.bnb_quantized, weight.quant_storage = NF4_BLOCK, True, torch.uint8
        layer.weight, layer.quant_state = weight, state
        if linear.bias is not None:
            layer.bias = torch.nn.Parameter(torch.empty_like(linear.bias, dtype=compute), requires_grad=False)
        return layer


def _hqq(linear: torch.nn.Linear, group_size: int, compute_dtype: torch.dtype) -> Any:
    """hqq's HQQLinear as `bench.techniques.impl.qalora.quantize_linears_hqq` makes it: 4-bit weights packed two per
    byte along the groups, a scale and a zero point per group in the compute dtype, the bias kept."""
    import torch
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    config = BaseQuantizeConfig(nbits=4, group_size=group_size, axis=1, quant_zero=False, quant_scale=False)
    layer = HQQLinear(None, config, compute_dtype=compute_dtype, device="meta", initialize=False)
    numel = linear.weight.numel()
    groups = numel // group_size
    layer.W_q = torch.nn.Parameter(torch.empty(groups // 2, group_size, dtype=torch.uint8, device="meta"),
                                   requires_grad=False)
    layer.meta = {"nbits": 4, "group_size": group_size, "shape": linear.weight.shape, "axis": 1,
                  "scale": torch.empty(groups, 1, dtype=compute_dtype, device="meta"),
                  "zero": torch.empty(groups, 1, dtype=compute_dtype, device="meta"), "packing": "4bit_u8",
                  "unpack_view_dtype": torch.uint8, "view_as_float": False, "quant_scale": False,
                  "quant_zero": False, "compute_dtype": compute_dtype}
    layer.bias = None if linear.bias is None else torch.empty_like(linear.bias, dtype=compute_dtype)
    layer.in_features, layer.out_features = linear.in_features, linear.out_features
    layer.ready = True
    return layer


def _replace_linears(model: torch.nn.Module, skip: list[str], make: Any, match: Any = None) -> None:
    """Every `nn.Linear` whose name `skip` does not cover becomes `make(linear)`. Unless `match` says otherwise,
    a name is covered by transformers' own rule for `llm_int8_skip_modules`, as when a run loads in 4 bits."""
    import torch
    from transformers.quantizers.quantizers_utils import should_convert_module

    covered = match or (lambda name, entries: not should_convert_module(name, entries))
    names = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and not covered(name, skip)]
    for name in names:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, leaf, make(getattr(parent, leaf)))
