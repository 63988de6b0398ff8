"""LoRA target-module presets, resolved per architecture, and a clear error when names match nothing."""

from __future__ import annotations

import re
from typing import Any

from bench.config import ConfigError

# Leaf names of the linear layers in each architecture's attention and MLP blocks. `qv` is the LoRA
# paper's choice (query and value); `all-linear` is left to peft, which also excludes the output head.
_ATTENTION = {
    "bert": ["query", "key", "value", "attention.output.dense"],
    "roberta": ["query", "key", "value", "attention.output.dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gpt2": ["c_attn", "attn.c_proj"],
}
# BERT's MLP output is `layer.N.output.dense`, whose suffix `output.dense` also names the attention
# output, so those presets are regexes (peft full-matches a string against each module name).
_MLP: dict[str, list[str] | str] = {
    "bert": r".*\.layer\.\d+\.(intermediate|output)\.dense",
    "roberta": r".*\.layer\.\d+\.(intermediate|output)\.dense",
    "distilbert": ["lin1", "lin2"],
    "llama": ["gate_proj", "up_proj", "down_proj"],
    "qwen2": ["gate_proj", "up_proj", "down_proj"],
    "mistral": ["gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_fc", "mlp.c_proj"],
}
_QV = {arch: [names[0], names[2]] if len(names) > 2 else names[:1] for arch, names in _ATTENTION.items()}
PRESETS = ("qv", "attention", "mlp", "attention+mlp", "all-linear")


def resolve_targets(preset: str | list[str], model_type: str) -> str | list[str]:
    """Turn a preset name into module names (or a regex) for this architecture; a list passes through."""
    if isinstance(preset, list | tuple):
        return list(preset)
    if preset == "all-linear":
        return "all-linear"
    if preset == "attention+mlp":  # every block's linears, but not the pooler or head that all-linear adds
        parts = [resolve_targets(name, model_type) for name in ("attention", "mlp")]
        return "|".join(f"(?:{_as_regex(part)})" for part in parts)
    tables = {"qv": _QV, "attention": _ATTENTION, "mlp": _MLP}
    if preset not in tables:
        raise ConfigError(f"method.target_modules={preset!r} is not a preset; choose one of "
                          f"{', '.join(PRESETS)} or give a list of module names")
    if model_type not in tables[preset]:
        raise ConfigError(f"method.target_modules={preset!r} has no entry for architecture {model_type!r} "
                          f"(known: {', '.join(sorted(tables[preset]))}); give module names as a list")
    names = tables[preset][model_type]
    return names if isinstance(names, str) else list(names)


def _as_regex(names: str | list[str]) -> str:
    """peft's suffix matching for a list of names, as one full-match regex (a string is one already)."""
    if isinstance(names, str):
        return names
    return r"(.*\.)?(" + "|".join(re.escape(name) for name in names) + ")"


def linear_module_names(model: Any) -> list[str]:
    """Distinct leaf names of the model's linear layers (what a target list can match)."""
    import torch

    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    return sorted(names)


def check_targets_match(model: Any, targets: str | list[str]) -> None:
    """Fail before training when no linear layer matches the requested target names."""
    if targets == "all-linear":
        return
    import torch

    linear = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, name) for name in linear):
            raise ConfigError(f"method.target_modules={targets!r} matches no linear layer of this model; "
                              f"its linear layers are: {', '.join(linear_module_names(model))}")
        return
    unmatched = [t for t in targets if not any(name == t or name.endswith(f".{t}") for name in linear)]
    if unmatched:
        raise ConfigError(f"method.target_modules {unmatched} match no linear layer of this model; "
                          f"its linear layers are: {', '.join(linear_module_names(model))}")
