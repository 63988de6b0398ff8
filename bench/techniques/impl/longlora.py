"""LongLoRA (Chen et al. 2023, arXiv 2309.12307): shifted sparse attention (S²-Attn) plus trainable
embeddings and norms ("LoRA+"), for Llama-style decoders on transformers' attention interface.

S²-Attn, in training only: the sequence of T tokens is cut into groups of G = ceil(T * group_ratio) tokens
and each token attends (causally) only within its group. Half of the heads first roll the sequence by G/2,
so their groups straddle the others' borders and information flows between neighbouring groups. The cost
of attention falls from T² to T·G. Evaluation and generation (`module.training` False) use full attention,
as the paper does: the model is fine-tuned with S²-Attn and served with standard attention.

Where this differs from the official code (`llama_attn_replace.py`):
- The causal mask is built from ORIGINAL positions. The official roll puts the sequence's tail and then its
  head in the last shifted group and applies the group's causal mask by slot, so there the head tokens see
  the tail (a future leak). Masking by original position lets tail tokens see head tokens (the past) and
  never the other way round.
- Padding is honoured: each group's mask is the matching diagonal block of the 4-D mask transformers
  builds for sdpa, gathered through the same roll.
- T need not be a multiple of G: the rolled sequence is padded at its end to whole groups, and padding
  slots are never attended. Every query may attend to itself, so no row is fully masked (no NaN).

Cost: the per-group attention is one `scaled_dot_product_attention` call per head half on [B * groups, h, G, D]
views of the projections' token-major memory; the unshifted half, without a padding mask, uses sdpa's own
causal kernel. GQA key/value heads are repeated (the head halves need not align with key/value groups).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F

from bench.core.errors import ConfigError
from bench.core.ranges import scope

ATTENTION_NAME = "longlora_s2"  # the `attn_implementation` key (no "sdpa" in it: transformers treats those apart)
RATIO_ATTRIBUTE = "longlora_group_ratio"  # set on each attention module by `enable_s2_attention`
DEFAULT_GROUP_RATIO = 0.25  # the paper's group size: a quarter of the training length
MIN_GROUP_SIZE = 2  # a group of one would make the half-group shift zero


def check_group_ratio(group_ratio: float) -> None:
    """The group is a fraction of the sequence: 0 < ratio <= 1 (1 is plain causal attention)."""
    if not 0 < group_ratio <= 1:
        raise ConfigError(f"method.attn_group_ratio={group_ratio!r} is not valid; it must be in (0, 1], "
                          f"e.g. {DEFAULT_GROUP_RATIO}")


def group_size(seq_len: int, group_ratio: float) -> int:
    """Tokens per group for a sequence of `seq_len`: ceil(seq_len * ratio), at least MIN_GROUP_SIZE."""
    # The epsilon keeps 100 * 0.1 = 10.000000000000002 at a group of 10, not 11.
    return max(MIN_GROUP_SIZE, math.ceil(seq_len * group_ratio - 1e-9))


def enable_s2_attention(model: torch.nn.Module, *, group_ratio: float = DEFAULT_GROUP_RATIO) -> Any:
    """Switch a built model (or a peft model around one) to S²-Attn with groups of `group_ratio` of the
    sequence; returns the same model. Modules keep their weights; only the attention function changes."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    check_group_ratio(group_ratio)
    AttentionInterface.register(ATTENTION_NAME, s2_attention_forward)
    # The model asks the mask interface under the same key; without an entry it would pass no mask at all.
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    attention_modules = [module for module in model.modules() if hasattr(module, "num_key_value_groups")]
    if not attention_modules:
        raise ValueError(f"{type(model).__name__} has no Llama-style attention module (num_key_value_groups)")
    for module in attention_modules:
        setattr(module, RATIO_ATTRIBUTE, group_ratio)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft forwards, but be plain
    base.set_attn_implementation(ATTENTION_NAME)
    return model


def s2_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                         **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention function: S²-Attn while training with more than one group, else exactly
    transformers' sdpa. query [B, H, T, D], key/value [B, H_kv, T, D], mask None or [B, 1, T, T] (True =
    attend); returns ([B, T, H, D], None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    seq_len = query.shape[2]
    size = group_size(seq_len, getattr(module, RATIO_ATTRIBUTE, DEFAULT_GROUP_RATIO))
    grouped = (module.training and size < seq_len and key.shape[2] == seq_len
               and getattr(module, "is_causal", True))  # a KV cache (kv longer than q) means inference
    if not grouped:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    # Work token-major, [B, T, H, D]: that is the projections' own memory layout (transformers views them as
    # [B, H, T, D]), so cutting T into groups and splitting the heads are views, not copies.
    query, key, value = (tensor.transpose(1, 2) for tensor in (query, key, value))
    repeats = getattr(module, "num_key_value_groups", 1)
    key, value = _repeat_heads(key, repeats), _repeat_heads(value, repeats)
    allowed = _as_bool_mask(attention_mask)
    half = query.shape[2] // 2  # the official split: heads [0, H/2) stay, heads [H/2, H) are shifted
    split = [half, query.shape[2] - half]
    outputs = [
        _grouped_attention(q, k, v, allowed, size=size, shift=shift, dropout=dropout, scaling=scaling)
        for q, k, v, shift in zip(*(tensor.split(split, dim=2) for tensor in (query, key, value)), (0, size // 2),
                                  strict=True)
        if q.shape[2] > 0
    ]
    return torch.cat(outputs, dim=2), None


def _repeat_heads(tensor: torch.Tensor, repeats: int) -> torch.Tensor:
    """[B, T, H_kv, D] -> [B, T, H_kv * repeats, D]: each key/value head serves `repeats` query heads (GQA)."""
    if repeats == 1:
        return tensor
    batch, seq_len, kv_heads, head_dim = tensor.shape
    expanded = tensor[:, :, :, None].expand(batch, seq_len, kv_heads, repeats, head_dim)
    return expanded.reshape(batch, seq_len, kv_heads * repeats, head_dim)


def _as_bool_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, T, T] bool (True = may attend) from transformers' 4-D mask; an additive float mask also works."""
    if attention_mask is None:
        return None
    if attention_mask.shape[1] != 1:
        raise ValueError(f"S²-Attn expects one mask for all heads, got a mask of shape {tuple(attention_mask.shape)}")
    mask = attention_mask[:, 0]
    if mask.dtype != torch.bool:
        mask = mask > torch.finfo(mask.dtype).min / 2  # additive: 0 attends, -inf / dtype-min does not
    return mask


def group_positions(seq_len: int, size: int, shift: int, device: torch.device | None = None) -> torch.Tensor:
    """[groups, size]: the original position held by each slot, after rolling the sequence left by `shift`
    (slot i holds position (i + shift) mod T, as the official `roll(-G/2)`); `seq_len` marks padding slots."""
    groups = math.ceil(seq_len / size)
    rolled = (torch.arange(seq_len, device=device) + shift) % seq_len
    padding = torch.full((groups * size - seq_len,), seq_len, device=device)
    return torch.cat([rolled, padding]).view(groups, size)


def group_mask(positions: torch.Tensor, allowed: torch.Tensor | None, seq_len: int) -> torch.Tensor:
    """[B or 1, groups, G, G] bool: causal by original position, padding slots never attended, the model's
    mask honoured through the roll, and each slot's own key always allowed (no fully masked row, no NaN)."""
    query_pos, key_pos = positions[:, :, None], positions[:, None, :]
    mask = ((key_pos <= query_pos) & (key_pos < seq_len))[None]
    if allowed is not None:
        padded = F.pad(allowed, (0, 1, 0, 1), value=False)  # row/column `seq_len` answers for padding slots
        mask = mask & padded[:, query_pos, key_pos]
    own_key = torch.eye(positions.shape[1], dtype=torch.bool, device=positions.device)
    return mask | own_key


@functools.lru_cache(maxsize=8)
def _unpadded_group_mask(seq_len: int, size: int, shift: int, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False):  # a cached inference tensor could not be saved for a later backward
        return group_mask(group_positions(seq_len, size, shift, device=device), None, seq_len)


def _grouped_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor | None,
                       *, size: int, shift: int, dropout: float, scaling: float | None) -> torch.Tensor:
    """Attention within groups for the heads that share one shift; tensors [B, T, h, D] in and out."""
    batch, seq_len, heads, head_dim = query.shape
    groups = math.ceil(seq_len / size)
    with scope("adapter"):  # the shift and the grouping are S²-Attn's own work; attention within groups is not
        grouped = [_to_groups(tensor, shift=shift, slots=groups * size, size=size) for tensor in (query, key, value)]
        mask = None if shift == 0 and allowed is None and groups * size == seq_len else \
            _grouped_mask(allowed, batch=batch, seq_len=seq_len, size=size, shift=shift, device=query.device)
    if mask is None:  # plain causal blocks: sdpa's own causal kernel, no mask to build or read
        output = F.scaled_dot_product_attention(*grouped, is_causal=True, dropout_p=dropout, scale=scaling)
    else:
        output = F.scaled_dot_product_attention(*grouped, attn_mask=mask, dropout_p=dropout, scale=scaling)
    with scope("adapter"):
        output = output.transpose(1, 2).reshape(batch, groups * size, heads, head_dim)[:, :seq_len]
        return roll_tokens(output, shift) if shift else output


def _grouped_mask(allowed: torch.Tensor | None, *, batch: int, seq_len: int, size: int, shift: int,
                  device: torch.device) -> torch.Tensor:
    """[batch * groups, 1, G, G]: one mask per (sequence, group), shared by the heads."""
    groups = math.ceil(seq_len / size)
    if allowed is None:  # the same for every layer and step of this length: built once
        mask = _unpadded_group_mask(seq_len, size, shift, device)
    else:
        mask = group_mask(group_positions(seq_len, size, shift, device=device), allowed, seq_len)
    return mask.expand(batch, groups, size, size).reshape(batch * groups, 1, size, size)


def _to_groups(tensor: torch.Tensor, *, shift: int, slots: int, size: int) -> torch.Tensor:
    """[B, T, h, D] -> [B * groups, h, G, D] in the order of `group_positions`: rolled left by `shift`,
    then zero-padded at the end to whole groups."""
    batch, seq_len, heads, head_dim = tensor.shape
    if shift:
        tensor = roll_tokens(tensor, -shift)
    if slots > seq_len:
        tensor = F.pad(tensor, (0, 0, 0, 0, 0, slots - seq_len))
    return tensor.reshape(batch * (slots // size), size, heads, head_dim).transpose(1, 2)


def roll_tokens(tensor: torch.Tensor, shift: int) -> torch.Tensor:
    """`torch.roll(tensor, shift, dims=1)`, done as one `cat` each way: on CPU torch.roll is ~20x slower."""
    return _RollTokens.apply(tensor, shift)


class _RollTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, shift: int) -> torch.Tensor:
        ctx.shift = shift
        return _cat_roll(tensor, shift)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _cat_roll(grad, -ctx.shift), None  # a roll's gradient is the opposite roll


def _cat_roll(tensor: torch.Tensor, shift: int) -> torch.Tensor:
    cut = tensor.shape[1] - shift % tensor.shape[1]
    return torch.cat([tensor[:, cut:], tensor[:, :cut]], dim=1)


def longlora_trainable_modules(model: torch.nn.Module) -> list[str]:
    """Names for peft's `modules_to_save` that train what LongLoRA trains besides LoRA: the input embedding
    and every normalization layer. Full dotted names from the base model, because peft matches
    `modules_to_save` by plain string suffix (`key.endswith(name)`): a short `norm` would catch any module
    whose name ends in "norm". With tied input/output embeddings also pass `ensure_weight_tying=True`
    (see `longlora_peft_options`)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    embedding = base.get_input_embeddings()
    embedding_names = [name for name, module in base.named_modules() if module is embedding and name]
    if not embedding_names:
        raise ValueError(f"{type(base).__name__} has no named input embedding module")
    return embedding_names[:1] + [name for name, module in base.named_modules() if _is_norm(module)]


def embeddings_tied(model: torch.nn.Module) -> bool:
    """Whether the output head shares its weight with the input embedding (SmolLM2 does)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    return head is not None and head.weight is base.get_input_embeddings().weight


def longlora_peft_options(model: torch.nn.Module) -> dict[str, Any]:
    """The LoraConfig keywords for LongLoRA's trainable embedding and norms, tie-safe.

    peft 0.21.2 wraps `embed_tokens` in a ModulesToSaveWrapper: a trainable copy. With tied embeddings
    and `ensure_weight_tying=False` (its default) it warns and unties: the input copy trains while
    `lm_head` keeps the frozen original. With `ensure_weight_tying=True` it wraps `lm_head` too, sharing
    the very same copy: counted once as trainable, still tied after training, after a save/reload and
    after `merge_and_unload`. The saved adapter then holds the matrix twice (under `lm_head` and
    `embed_tokens`). Untied models get `ensure_weight_tying=False`: True would only warn there."""
    return {"modules_to_save": longlora_trainable_modules(model), "ensure_weight_tying": embeddings_tied(model)}


def _is_norm(module: torch.nn.Module) -> bool:
    # LlamaRMSNorm, MistralRMSNorm, Qwen2RMSNorm, torch's LayerNorm/RMSNorm: LongLoRA trains every "norm".
    return type(module).__name__.endswith(("RMSNorm", "LayerNorm"))
