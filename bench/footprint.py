"""Static size of a model: parameter counts, bytes of weights as held, bits per base weight; and the bytes
of what training adds, read from the real tensors: gradients and the optimizer's state.

4-bit weights are counted as they are stored: `Params4bit` holds two weights per uint8, and each layer
carries a quantization state (absmax per block, and with double quantization a second-level absmax and
offset). Code tables shared by all layers are counted once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def logical_numel(parameter: Any) -> int:
    """Number of weights a parameter stands for (a packed 4-bit tensor stores half as many bytes)."""
    state = getattr(parameter, "quant_state", None)
    if state is not None and getattr(state, "shape", None) is not None:
        count = 1
        for size in state.shape:
            count *= int(size)
        return count
    return parameter.numel()


def parameter_counts(model: Any) -> dict[str, float]:
    """`params/trainable`, `params/total` and `params/trainable_pct`, in logical (unpacked) weights."""
    total = sum(logical_numel(p) for p in model.parameters())
    trainable = sum(logical_numel(p) for p in model.parameters() if p.requires_grad)
    return {"params/trainable": trainable, "params/total": total, "params/trainable_pct": 100.0 * trainable / total}


def _quant_state_tensors(state: Any) -> list[Any]:
    """Every tensor a bitsandbytes QuantState holds, including the nested (double-quant) state."""
    import torch

    tensors = [v for v in vars(state).values() if isinstance(v, torch.Tensor)]
    nested = getattr(state, "state2", None)
    return tensors + (_quant_state_tensors(nested) if nested is not None else [])


def _storage_key(tensor: Any) -> tuple[int, int]:
    return tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes()


def weights_bytes(model: Any) -> int:
    """Bytes of all parameters and buffers as held, plus quantization states; shared storage counted once."""
    seen: dict[tuple[int, int], int] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        seen[_storage_key(tensor)] = tensor.untyped_storage().nbytes()
        state = getattr(tensor, "quant_state", None)
        for extra in _quant_state_tensors(state) if state is not None else []:
            seen[_storage_key(extra)] = extra.untyped_storage().nbytes()
    return sum(seen.values())


def _tensor_bytes(tensors: Any) -> int:
    """Bytes of distinct storages among `tensors` (views of one buffer count once)."""
    seen = {_storage_key(t): t.untyped_storage().nbytes() for t in tensors}
    return sum(seen.values())


def trainable_bytes(model: Any) -> int:
    """Bytes of the parameters that train, as held (fp32 adapters and head, or the 16-bit weights in full FT)."""
    return _tensor_bytes(p for p in model.parameters() if p.requires_grad)


def training_state_bytes(model: Any, optimizer: Any) -> dict[str, int]:
    """`mem/grads_bytes` and `mem/optimizer_bytes` from the tensors that exist after an optimizer step, before
    the gradients are cleared: every tensor in the optimizer's state (AdamW: two moments, plus a Kahan
    compensation buffer for 16-bit weights in torch-optimi), not a formula."""
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


def base_weight_bits_per_param(model: Any) -> float:
    """Bits per weight of the frozen base linear layers (16 for bf16, ~4.13 for NF4 with double quant).

    Adapters and the head are excluded: this is the storage cost of the pretrained matrices. Code tables
    that all layers share are counted once, over all layers together.
    """
    import torch

    bits, weights = 0, 0
    shared: dict[tuple[int, int], int] = {}
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or "lora_" in name or "modules_to_save" in name:
            continue
        if "original_module" in name:  # peft keeps a frozen copy of the head beside the trained one
            continue
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


def _is_code_table(tensor: Any, state: Any) -> bool:
    nested = getattr(state, "state2", None)
    return tensor is getattr(state, "code", None) or (nested is not None and tensor is getattr(nested, "code", None))


def directory_bytes(folder: str | Path) -> int:
    """Bytes on disk of every file under a folder (what a user would ship)."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())
