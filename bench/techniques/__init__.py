"""The fine-tuning techniques: one module each, found here, and nothing about any of them anywhere else.

Each module of this package that defines `TECHNIQUE` (a `bench.techniques.base.Technique`) adds a technique: the
config validates `method=` against the registry, `bench.models.build` builds from it, `bench plan`, the report,
its plots and `bench --help` read it. Adding one is a module here and a YAML file in conf/method/; no other edit.
The heavy implementations (torch, peft, hqq, bitsandbytes) live in `bench.techniques.impl`, which the registry
never imports, so anything may read the registry (the report, which never imports torch, and `bench --help`).
"""

from __future__ import annotations

import importlib
import pkgutil

from bench.techniques.base import ALL_KNOBS, BASES, LORA_KNOBS, QUANT_KNOBS, VARIANT_KNOBS, Option, Technique

__all__ = ["ALL_KNOBS", "BASES", "LORA_KNOBS", "NAMES", "QUANT_KNOBS", "REFERENCE", "TECHNIQUES", "VARIANT_KNOBS",
           "Option", "Technique", "report_order", "technique"]


def _discover() -> dict[str, Technique]:
    """Every technique module's TECHNIQUE, in their `order` (the first ten as they were added; then by name)."""
    found: dict[str, Technique] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.ispkg or module.name.startswith("_"):
            continue
        defined = getattr(importlib.import_module(f"{__name__}.{module.name}"), "TECHNIQUE", None)
        if defined is None:
            continue  # a helper module (base, targets)
        if defined.name in found:
            raise ValueError(f"two technique modules define {defined.name!r}")
        found[defined.name] = defined
    return {item.name: item for item in sorted(found.values(), key=lambda item: (item.order, item.name))}


TECHNIQUES: dict[str, Technique] = _discover()
NAMES = tuple(TECHNIQUES)
# What the report's deltas and ratios compare with: the technique that trains every weight.
REFERENCE = next(name for name, item in TECHNIQUES.items() if not item.uses_adapter)


def technique(name: str) -> Technique:
    """The technique `name` (a KeyError names the valid ones; the config checks names before anyone asks)."""
    try:
        return TECHNIQUES[name]
    except KeyError:
        raise KeyError(f"unknown technique {name!r}; valid: {', '.join(NAMES)}") from None


def report_order() -> list[str]:
    """The order tables list techniques in: each main technique followed by its variants (full; lora, dora,
    ..., longlora; qlora, loftq, qalora)."""
    roots = [name for name in NAMES if TECHNIQUES[name].parent is None]
    return [name for root in roots for name in NAMES if name == root or TECHNIQUES[name].parent == root]
