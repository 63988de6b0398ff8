"""LoRA target-module presets, resolved per architecture, and a clear error when names match nothing."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bench.core.errors import ConfigError

if TYPE_CHECKING:
    import torch

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


def matches(name: str, targets: str | list[str]) -> bool:
    """peft's rule for whether `targets` selects the module `name`: a string is a regex that must match the
    whole name; a list matches a name that equals an entry or ends with "." + the entry."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == target or name.endswith(f".{target}") for target in targets)


def is_skipped(name: str, skip: list[str] | tuple[str, ...]) -> bool:
    """Whether an entry of `skip` names this module: the whole dotted name, a leading part of it up to a dot
    ("classifier" covers "classifier.out_proj") or a trailing part after a dot ("pooler.dense" covers
    "bert.pooler.dense"). Like bitsandbytes' `llm_int8_skip_modules`, but never inside a name component."""
    return any(name == entry or name.startswith(entry + ".") or name.endswith("." + entry) for entry in skip)


def select_modules(names: list[str], targets: str | list[str], *, skip: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The names among `names` that `targets` selects; `all-linear` is every name not in `skip` (the head)."""
    if targets == "all-linear":
        return [name for name in names if not is_skipped(name, skip)]
    return [name for name in names if matches(name, targets)]


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Distinct leaf names of the model's linear layers (what a target list can match)."""
    import torch

    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    return sorted(names)


def check_targets_match(model: torch.nn.Module, targets: str | list[str]) -> None:
    """Fail before training when no linear layer matches the requested target names."""
    if targets == "all-linear":
        return
    import torch

    linear = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    if isinstance(targets, str):
        if not select_modules(linear, targets):
            raise ConfigError(f"method.target_modules={targets!r} matches no linear layer of this model; "
                              f"its linear layers are: {', '.join(linear_module_names(model))}")
        return
    unmatched = [t for t in targets if not select_modules(linear, [t])]
    if unmatched:
        raise ConfigError(f"method.target_modules {unmatched} match no linear layer of this model; "
                          f"its linear layers are: {', '.join(linear_module_names(model))}")


def check_rank_fits(model: torch.nn.Module, *, targets: str | list[str], r: int, skip: list[str] | tuple[str,
                    ...] = ()) -> None:
    """Refuse a LoRA rank that a targeted linear layer cannot hold: the update B·A has rank at most
    min(in_features, out_features), so a larger `method.r` only adds parameters. Targets that match nothing are
    left to `check_targets_match`."""
    import torch

    linears = {name: module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    chosen = select_modules(list(linears), targets, skip=skip)
    if not chosen:
        return
    name = min(chosen, key=lambda name: min(linears[name].in_features, linears[name].out_features))
    layer = linears[name]
    largest = min(layer.in_features, layer.out_features)
    if r > largest:
        raise ConfigError(f"method.r={r} exceeds the smallest dimension of the targeted layer {name} (in_features="
                          f"{layer.in_features}, out_features={layer.out_features}); its update B·A cannot "
                          f"have a rank above {largest}, so the largest valid rank is method.r={largest}")
