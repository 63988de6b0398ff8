"""The table of fine-tuning techniques: the one place their names and traits are listed.

The config validates `method=` against it, `bench.models.build` builds from it, the estimate, the report, its plots
and `bench --help` read it. It imports nothing (no torch, no bench module), so anything may read it.
"""

from __future__ import annotations

from dataclasses import dataclass

# MethodConfig fields that change a technique's result, by family; the rest are inherited unused.
LORA_KNOBS = frozenset({"r", "alpha", "dropout", "target_modules", "bias"})
QUANT_KNOBS = frozenset({"quant_type", "double_quant", "compute_dtype"})
VARIANT_KNOBS = frozenset({"svd_iters", "loftq_iter", "group_size", "attn_group_ratio", "embed_norm_lr"})
ALL_KNOBS = LORA_KNOBS | QUANT_KNOBS | VARIANT_KNOBS

BASES = ("16-bit", "nf4", "int4-affine")  # how a technique holds the pretrained weights it adapts


@dataclass(frozen=True)
class Technique:
    """One way of fine-tuning, as the rest of bench needs to know it."""

    name: str  # the `method=` choice
    base: str  # one of BASES: 16-bit, nf4 (bitsandbytes NF4), int4-affine (HQQ, a scale and zero per group)
    parent: str | None  # the technique it modifies, for the report's variant table; None for full, lora, qlora
    knobs: frozenset[str]  # MethodConfig fields besides lr and dtype that change its result (the config hash)
    summary: str  # what it changes, in a few words (`bench --help`)
    converted_on_save: bool = False  # PiSSA/OLoRA change the base: the adapter ships as a plain LoRA delta
    causal_lm_only: bool = False  # LongLoRA's S²-Attn needs a causal mask

    @property
    def uses_adapter(self) -> bool:
        """Everything but full fine-tuning trains an adapter on a frozen base."""
        return self.name != REFERENCE

    @property
    def quantized(self) -> bool:
        """Whether the base's linear layers are held in 4 bits."""
        return self.base != "16-bit"


REFERENCE = "full"  # what the report's deltas and ratios compare with

# The three main techniques first, then the variants; `report_order` groups each variant under its parent.
TECHNIQUES: dict[str, Technique] = {t.name: t for t in (
    Technique("full", "16-bit", None, frozenset(), "every parameter trains"),
    Technique("lora", "16-bit", None, LORA_KNOBS, "a rank-r update B·A on a frozen 16-bit base"),
    Technique("qlora", "nf4", None, LORA_KNOBS | QUANT_KNOBS, "LoRA on a 4-bit NF4 base with double quantization"),
    Technique("dora", "16-bit", "lora", LORA_KNOBS, "LoRA on the direction, a trained magnitude per output"),
    Technique("rslora", "16-bit", "lora", LORA_KNOBS, "LoRA scaled by alpha/√r"),
    Technique("pissa", "16-bit", "lora", LORA_KNOBS | {"svd_iters"}, "LoRA started at the top-r singular vectors",
              converted_on_save=True),
    Technique("olora", "16-bit", "lora", LORA_KNOBS, "LoRA started at an orthonormal (QR) basis",
              converted_on_save=True),
    Technique("loftq", "nf4", "qlora", LORA_KNOBS | QUANT_KNOBS | {"loftq_iter"},
              "QLoRA with base and adapter initialised together"),
    Technique("qalora", "int4-affine", "qlora", LORA_KNOBS | {"group_size", "compute_dtype"},
              "LoRA on pooled groups of an INT4 base, mergeable into it"),
    Technique("longlora", "16-bit", "lora", LORA_KNOBS | {"attn_group_ratio", "embed_norm_lr"},
              "LoRA with shifted sparse attention, embeddings and norms trained", causal_lm_only=True),
)}
NAMES = tuple(TECHNIQUES)


def technique(name: str) -> Technique:
    """The row of `name` (a KeyError names the valid ones; the config checks names before anyone asks)."""
    try:
        return TECHNIQUES[name]
    except KeyError:
        raise KeyError(f"unknown technique {name!r}; valid: {', '.join(NAMES)}") from None


def report_order() -> list[str]:
    """The order tables list techniques in: each main technique followed by its variants (full; lora, dora,
    ..., longlora; qlora, loftq, qalora)."""
    roots = [name for name in NAMES if TECHNIQUES[name].parent is None]
    return [name for root in roots for name in NAMES if name == root or TECHNIQUES[name].parent == root]
