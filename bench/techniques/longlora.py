"""LongLoRA (Chen et al. 2023, arXiv 2309.12307), for causal LMs with Llama-style attention: training attends within
groups of `method.attn_group_ratio` x the sequence, half the heads shifted by half a group (S²-Attn,
`bench.techniques.impl.longlora`); evaluation attends in full. The embedding and every norm train beside LoRA, at
their own rate (`method.embed_norm_lr`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.core.errors import ConfigError
from bench.techniques.base import LORA_KNOBS, Technique, warn

if TYPE_CHECKING:
    import torch

    from bench.config import MethodConfig
    from bench.models.build import BuiltModel

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")  # tested with tiny configs in tests/variants
# Below this many tokens per S²-Attn group, most groups miss the sequence's first tokens, which pretrained
# attention leans on: SmolLM2's loss on 96 tokens of English is 3.0 with full attention and 6.4 with groups
# of 24, against 2.5 and 3.2 on 2,048 tokens (groups of 512). The paper trains groups of 2,048.
SHORT_GROUP_TOKENS = 256


def check_longlora_task(task: str) -> None:
    """The part of the check that needs no model: LongLoRA trains causal LMs only."""
    if task != "causal_lm":
        raise ConfigError(f"method=longlora needs a causal LM (task=causal_lm, e.g. model=smollm2-135m); "
                          f"task={task!r} models attend without a causal mask, which S²-Attn shifts")


def check_longlora_supported(model_type: str, task: str) -> None:
    """Raise a one-line ConfigError unless LongLoRA applies: a causal LM of a verified Llama-style type."""
    check_longlora_task(task)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"method=longlora does not support model type {model_type!r}; choose a Llama-style "
                          f"decoder, one of: {', '.join(SUPPORTED_MODEL_TYPES)}")


class LongLoRA(Technique):
    def check_task(self, method: MethodConfig, task: str) -> None:
        check_longlora_task(task)

    def check_model_type(self, method: MethodConfig, *, model_type: str, task: str) -> None:
        check_longlora_supported(model_type, task)

    def advise(self, method: MethodConfig, *, max_length: int) -> None:
        """Groups too short for S²-Attn to mean what the paper means."""
        group = max_length * method.attn_group_ratio
        if group < SHORT_GROUP_TOKENS:
            warn(f"method=longlora with data.max_length={max_length} and method.attn_group_ratio="
                 f"{method.attn_group_ratio:g} trains with groups of at most {group:.0f} tokens; S²-Attn is meant "
                 f"for long sequences (the paper: groups of 2,048 tokens), and groups under {SHORT_GROUP_TOKENS} "
                 "start from a much higher loss than full attention")

    def prepare_base(self, method: MethodConfig, base: torch.nn.Module, *, weights: Any, built: BuiltModel,
                     skip: list[str]) -> dict[str, Any]:
        """S²-Attn on, the embedding and norms trained at `method.embed_norm_lr`, a tied head kept tied."""
        from bench.techniques.impl.longlora import embeddings_tied, enable_s2_attention, longlora_trainable_modules

        enable_s2_attention(base, group_ratio=method.attn_group_ratio)
        built.also_trained = longlora_trainable_modules(base)
        # the paper trains them at its LoRA rate (2e-5); LoRA's usual 2e-3 would wreck a pretrained embedding
        built.lr_by_module = dict.fromkeys(built.also_trained, method.embed_norm_lr)
        # a tied head (SmolLM2's) shares the trained embedding copy instead of silently untying from it
        return {"ensure_weight_tying": embeddings_tied(base)}


TECHNIQUE = LongLoRA(name="longlora", label="LongLoRA",
                     summary="LoRA with shifted sparse attention, embeddings and norms trained", parent="lora",
                     knobs=LORA_KNOBS | {"attn_group_ratio", "embed_norm_lr"}, causal_lm_only=True,
                     needs_architecture=True, mixes_packed_examples=True, order=9)
