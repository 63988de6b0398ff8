"""Static size of a model: parameter counts, bytes of weights as held, bits per base weight; and the bytes
of what training adds, read from the real tensors: gradients and the optimizer's state.

4-bit weights are counted as they are stored: `Params4bit` holds two weights per uint8, and each layer
carries a quantization state (absmax per block, and with double quantization a second-level absmax and
offset). Code tables shared by all layers are counted once. An hqq `HQQLinear` (QA-LoRA's base) registers only
its packed `W_q`; its per-group scales and zero points live in a `meta` dict and its bias is a plain attribute,
so they are found on the module and counted beside it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def logical_numel(parameter: Any, packed_numels: dict[int, int] | None = None) -> int:
    """Number of weights a parameter stands for (a packed 4-bit tensor stores half as many bytes).

    `packed_numels` maps `id(W_q)` of hqq layers to their weight count (`hqq_packed_numels`): an hqq tensor
    does not know its own shape, its layer does."""
    if packed_numels and id(parameter) in packed_numels:
        return packed_numels[id(parameter)]
    state = getattr(parameter, "quant_state", None)
    if state is not None and getattr(state, "shape", None) is not None:
        count = 1
        for size in state.shape:
            count *= int(size)
        return count
    return parameter.numel()


def _hqq_layers(model: torch.nn.Module) -> list[Any]:
    """hqq `HQQLinear` modules, recognised by shape rather than class so this module never imports hqq."""
    return [m for m in model.modules() if getattr(m, "W_q", None) is not None
            and isinstance(getattr(m, "meta", None), dict) and "shape" in m.meta]


def _weight_count(layer: torch.nn.Module) -> int:
    return math.prod(int(size) for size in layer.meta["shape"])


def hqq_packed_numels(model: torch.nn.Module) -> dict[int, int]:
    """`id(W_q)` -> d_out * d_in for every hqq layer of the model."""
    return {id(layer.W_q): _weight_count(layer) for layer in _hqq_layers(model)}


def _meta_tensors(meta: dict[str, Any]) -> list[Any]:
    """Every tensor in an hqq meta dict (scale, zero; nested dicts if the meta-data were quantized)."""
    import torch

    found = []
    for value in meta.values():
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, dict):
            found.extend(_meta_tensors(value))
    return found


def _hqq_bias(layer: torch.nn.Module) -> list[Any]:
    """The bias of an hqq layer when it is a plain attribute (a registered one is among the parameters)."""
    import torch

    bias = getattr(layer, "bias", None)
    return [bias] if isinstance(bias, torch.Tensor) and "bias" not in layer._parameters else []


def parameter_counts(model: torch.nn.Module) -> dict[str, float]:
    """`params/trainable`, `params/total` and `params/trainable_pct`, in logical (unpacked) weights."""
    packed = hqq_packed_numels(model)
    hqq_biases = sum(b.numel() for layer in _hqq_layers(model) for b in _hqq_bias(layer))  # frozen
    total = sum(logical_numel(p, packed) for p in model.parameters()) + hqq_biases
    trainable = sum(logical_numel(p, packed) for p in model.parameters() if p.requires_grad)
    return {"params/trainable": trainable, "params/total": total, "params/trainable_pct": 100.0 * trainable / total}


def _quant_state_tensors(state: Any) -> list[Any]:
    """Every tensor a bitsandbytes QuantState holds, including the nested (double-quant) state."""
    import torch

    tensors = [v for v in vars(state).values() if isinstance(v, torch.Tensor)]
    nested = getattr(state, "state2", None)
    return tensors + (_quant_state_tensors(nested) if nested is not None else [])


def held_outside_parameters(model: torch.nn.Module) -> list[Any]:
    """Tensors that hold the weights but are neither parameters nor buffers: bitsandbytes' quantization state
    (absmax per block, its second level, the code table) and hqq's per-group scales, zero points and bias."""
    held = []
    for parameter in model.parameters():
        state = getattr(parameter, "quant_state", None)
        held += _quant_state_tensors(state) if state is not None else []
    for layer in _hqq_layers(model):
        held += [*_meta_tensors(layer.meta), *_hqq_bias(layer)]
    return held


def _storage_key(tensor: torch.Tensor) -> tuple[int, int]:
    return tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes()


def weights_bytes(model: torch.nn.Module) -> int:
    """Bytes of all parameters and buffers as held, plus quantization states; shared storage counted once."""
    seen: dict[tuple[int, int], int] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        seen[_storage_key(tensor)] = tensor.untyped_storage().nbytes()
        state = getattr(tensor, "quant_state", None)
        for extra in _quant_state_tensors(state) if state is not None else []:
            seen[_storage_key(extra)] = extra.untyped_storage().nbytes()
    for layer in _hqq_layers(model):
        for extra in [*_meta_tensors(layer.meta), *_hqq_bias(layer)]:
            seen[_storage_key(extra)] = extra.untyped_storage().nbytes()
    return sum(seen.values())


def _tensor_bytes(tensors: Any) -> int:
    """Bytes of distinct storages among `tensors` (views of one buffer count once). A DTensor (FSDP's shard)
    counts the part this rank holds."""
    held = [t.to_local() if hasattr(t, "to_local") else t for t in tensors]
    seen = {_storage_key(t): t.untyped_storage().nbytes() for t in held}
    return sum(seen.values())


def trainable_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters that train, as held (fp32 adapters and head, or the 16-bit weights in full FT)."""
    return _tensor_bytes(p for p in model.parameters() if p.requires_grad)


def training_state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """`mem/grads_bytes` and `mem/optimizer_bytes` from the tensors that exist after an optimizer step, before
    the gradients are cleared: every tensor in the optimizer's state, not a formula. AdamW: two moments, plus a
    Kahan compensation buffer for 16-bit weights in torch-optimi; bitsandbytes' 8-bit AdamW: two uint8 moments
    with an fp32 absmax per block of 256 each, and two 256-entry code tables that every tensor's state points to
    (counted once: storages are counted once); paged state lives in CUDA unified memory, counted the same."""
    import torch

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    state = [value for per_param in optimizer.state.values() for value in _flat_values(per_param)
             if isinstance(value, torch.Tensor)]
    return {"mem/grads_bytes": _tensor_bytes(grads), "mem/optimizer_bytes": _tensor_bytes(state)}


def _flat_values(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [v for value in tree.values() for v in _flat_values(value)]
    if isinstance(tree, list | tuple):
        return [v for value in tree for v in _flat_values(value)]
    return [tree]


def base_weight_bits_per_param(model: torch.nn.Module) -> float:
    """Bits per weight of the base's linear layers as the technique holds them: its quantized layers alone
    where it quantizes (~4.13 for NF4 with double quant, 4 + 2 * 16 / group_size for hqq INT4 with bf16 scales
    and zero points), else every base linear layer (16 for bf16).

    Adapters, the head and layers a 4-bit technique leaves in float (a causal LM's tied `lm_head`) are
    excluded: this is the storage cost of the quantized pretrained matrices. Code tables that all layers
    share are counted once, over all layers together.
    """
    import torch

    bits, weights = _hqq_weight_bits(model)  # hqq layers are not nn.Linear: counted apart
    linears = [module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
               and not any(part in name for part in ("lora_", "modules_to_save", "original_module"))]
    quantized = [m for m in linears if getattr(m.weight, "quant_state", None) is not None]
    if quantized or weights:  # a 4-bit base: its quantized layers only
        linears = quantized
    shared: dict[tuple[int, int], int] = {}
    for module in linears:
        weight = module.weight
        bits += 8 * weight.numel() * weight.element_size()
        weights += logical_numel(weight)
        state = getattr(weight, "quant_state", None)
        for extra in _quant_state_tensors(state) if state is not None else []:
            if _is_code_table(extra, state):
                shared[_storage_key(extra)] = 8 * extra.untyped_storage().nbytes()
            else:
                bits += 8 * extra.numel() * extra.element_size()
    return (bits + sum(shared.values())) / weights if weights else 0.0


def model_bits_per_param(model: torch.nn.Module) -> float:
    """Bits the whole model holds per parameter: every weight, buffer and quantization state (`weights_bytes`)
    over every parameter counted as the weights it stands for, embeddings, head and adapters included."""
    total = parameter_counts(model)["params/total"]
    return 8 * weights_bytes(model) / total if total else 0.0


def _hqq_weight_bits(model: torch.nn.Module) -> tuple[int, int]:
    """Bits held by the hqq layers' packed weights and per-group meta-data, and how many weights they hold
    (the bias is left out, as it is for float layers)."""
    bits, weights = 0, 0
    for layer in _hqq_layers(model):
        for tensor in [layer.W_q, *_meta_tensors(layer.meta)]:
            bits += 8 * tensor.numel() * tensor.element_size()
        weights += _weight_count(layer)
    return bits, weights


def _is_code_table(tensor: torch.Tensor, state: Any) -> bool:
    nested = getattr(state, "state2", None)
    return tensor is getattr(state, "code", None) or (nested is not None and tensor is getattr(nested, "code", None))


def directory_bytes(folder: str | Path) -> int:
    """Bytes on disk of every file under a folder (what a user would ship)."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())
