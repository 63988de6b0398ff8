"""`method=peft`: any method peft has, by its type, benchmarked with the same measurements and report as the rest.

`method.options.peft_type=LOHA` (any `peft.PeftType` name: LOHA, LOKR, IA3, BOFT, OFT, VERA, ...) picks peft's
config class; the other `method.options` are that class's own fields, passed through as they are
(`method.options.r=8 method.options.alpha=16`). bench sets what it sets for every technique: the task type, the
targets (`method.target_modules`, a preset or names) and the modules that train in full (a classifier's head).
Runs are named by the type (`peft-loha · minilm · tweets · s42`) and report rows show it (`peft qv
options.peft_type=LOHA`); a type's rank, if it has one, is an option.
`bench plan` traces any of them (the same `assemble` builds its skeleton); the analytic estimate does not know an
arbitrary method's size, and says so (no figure) rather than guess.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bench.core.errors import ConfigError
from bench.techniques.base import Technique, kind_name

if TYPE_CHECKING:
    import torch

    from bench.config import MethodConfig

# peft config fields bench fills itself (or that say where a saved adapter came from): not options.
SET_BY_BENCH = {"peft_type": "method.options.peft_type", "task_type": "the task",
                "target_modules": "method.target_modules", "modules_to_save": "the task's head",
                "base_model_name_or_path": None, "revision": None, "inference_mode": None, "auto_mapping": None}


def peft_config_class(peft_type: Any) -> type:
    """peft's config class for a PeftType name (any case), or a ConfigError listing peft's types."""
    from peft import PEFT_TYPE_TO_CONFIG_MAPPING, PeftType

    types = {item.name: item for item in PeftType}
    chosen = types.get(str(peft_type).upper())
    if chosen is None or chosen not in PEFT_TYPE_TO_CONFIG_MAPPING:
        raise ConfigError(f"method.options.peft_type={peft_type!r} is not a peft method; choose one of: "
                          f"{', '.join(sorted(item.name for item in PEFT_TYPE_TO_CONFIG_MAPPING))}")
    return PEFT_TYPE_TO_CONFIG_MAPPING[chosen]


def _check_types(config_class: type, options: dict[str, Any]) -> None:
    """Values of fields peft types as a plain int, float, bool or str must be one (peft does not check)."""
    hints = typing.get_type_hints(config_class)
    for name, value in options.items():
        kind = hints.get(name)
        if kind not in (int, float, bool, str):
            continue
        kinds = (int, float) if kind is float else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and kind is not bool):
            raise ConfigError(f"method.options.{name}={value!r} is not valid for peft's {config_class.__name__}: "
                              f"it must be {kind_name(kind)}")


class PeftMethod(Technique):
    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """`peft_type` in upper case, and the rest checked against its config class's fields and by peft itself."""
        options = dict(given)
        if "peft_type" not in options:
            raise ConfigError("method=peft needs method.options.peft_type=<a peft.PeftType name>, e.g. LOHA, LOKR, "
                              "IA3, BOFT or VERA")
        peft_type = str(options.pop("peft_type")).upper()
        config_class = peft_config_class(peft_type)
        valid = sorted(item.name for item in dataclasses.fields(config_class)
                       if item.init and item.name not in SET_BY_BENCH)
        for name in options:
            if name in SET_BY_BENCH:
                by = SET_BY_BENCH[name] or "left as peft has it"
                raise ConfigError(f"method.options.{name} is set by bench ({by}); the options of "
                                  f"{config_class.__name__}: {', '.join(valid)}")
            if name not in valid:
                raise ConfigError(f"method.options.{name} is not an option of peft's {config_class.__name__}; "
                                  f"valid: {', '.join(valid)}")
        _check_types(config_class, options)
        try:
            config_class(**options)  # peft's own checks of the values, before any run starts
        except (TypeError, ValueError) as error:
            raise ConfigError(f"method.options for peft's {config_class.__name__} are not valid: "
                              f"{' '.join(str(error).split())}") from None
        return {"peft_type": peft_type, **options}

    def check_adapter_fits(self, method: MethodConfig, model: torch.nn.Module, *, targets: str | list[str],
                           skip: list[str]) -> None:
        """Nothing to refuse here: a method's own rank, if it has one, is its option, and peft checks it."""

    def peft_config(self, method: MethodConfig, *, task_type: str, targets: str | list[str],
                    modules_to_save: list[str], initialise: bool, **extra: Any) -> Any:
        options = dict(method.options)
        config_class = peft_config_class(options.pop("peft_type"))
        fields = {item.name for item in dataclasses.fields(config_class)}
        given = {"task_type": task_type, **options, **extra}
        if "target_modules" in fields:
            given["target_modules"] = targets
        if "modules_to_save" in fields:
            given["modules_to_save"] = list(modules_to_save)
        return config_class(**given)

    def adapter_params(self, method: MethodConfig, *, d_in: int, d_out: int) -> None:
        """Unknown for an arbitrary method: the analytic estimate gives no figure (the traced plan does)."""
        return None


TECHNIQUE = PeftMethod(name="peft", label="a peft method", summary="any peft method by its type "
                       "(method.options.peft_type=LOHA, IA3, ...)", compared_with="lora",
                       knobs=frozenset({"target_modules"}), title_options=("peft_type",))
