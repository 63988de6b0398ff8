"""The config's schema for Hydra, derived from the typed config dataclasses (`bench.config`, `bench.run.fair`).

Hydra composes `conf/` onto these structured configs (`base_config` heads `conf/config.yaml`'s defaults, and
`method/_base`, `model/_base` head each method and model file), so OmegaConf rejects a key that does not exist
or a value of the wrong type while it composes, before anything runs. The dataclasses stay the one source of
the config's shape and defaults (no file in `conf/` restates one: tests/unit/test_defaults.py): a schema class
has their fields, with each type as OmegaConf can check it (a `Literal` is a `str` here, a union of several types
is `Any`); the checks of values and across fields stay in the dataclasses' `__post_init__`, which runs when
`RunConfig.from_dict` builds the typed config.

The schema classes are module attributes under their own names, so a composed config pickles (joblib, SLURM and
Ray launchers send it to their workers).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from omegaconf import MISSING

from bench.config import (
    DataConfig,
    DeployConfig,
    MethodConfig,
    ModelConfig,
    MonitorConfig,
    RunConfig,
    TrackerConfig,
    TrainerConfig,
    unknown_keys,
)
from bench.config.fair import FairConfig

_SCALARS = (int, float, bool, str)


def schema_type(annotation: Any, schemas: dict[type, type]) -> Any:
    """`annotation` as a type OmegaConf checks: scalars, lists, string-keyed dicts, Optional and config
    dataclasses (as their schema) as they are; a Literal as its values' type; anything else (a union of several
    types, an Optional mapping) as Any."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in _SCALARS or annotation is Any:
        return annotation
    if annotation in schemas:
        return schemas[annotation]
    if origin is Literal:
        kinds = {type(value) for value in args}
        return kinds.pop() if len(kinds) == 1 and kinds <= set(_SCALARS) else Any
    if origin in (Union, types.UnionType):
        present = [arg for arg in args if arg is not type(None)]
        inner = schema_type(present[0], schemas) if len(present) == 1 else Any
        # OmegaConf 2.3 cannot merge a mapping into an Optional mapping that is None (`fair.chosen={lora:2e-3}`)
        return Any if inner is Any or typing.get_origin(inner) is dict else inner | None
    if origin is list and len(args) == 1:
        return list[schema_type(args[0], schemas)]
    if origin is dict and len(args) == 2 and args[0] is str:
        return dict[str, schema_type(args[1], schemas)]
    return Any


def derive(kind: type, name: str, schemas: dict[type, type], *, extra: tuple = ()) -> type:
    """The schema class of the config dataclass `kind`: its fields and defaults, typed for OmegaConf. A field
    without a default is MISSING (`???`): composing must give it a value. `extra`: more (name, type, field)."""
    hints = typing.get_type_hints(kind)
    fields = []
    for item in dataclasses.fields(kind):
        annotation = schema_type(hints[item.name], schemas)
        if item.default is not dataclasses.MISSING:
            default = dataclasses.field(default=item.default)
        elif item.default_factory is not dataclasses.MISSING:
            factory = item.default_factory
            default = dataclasses.field(default_factory=schemas.get(hints[item.name], factory))
        elif isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            default = dataclasses.field(default_factory=annotation)
        else:
            default = dataclasses.field(default=MISSING)
        fields.append((item.name, annotation, default))
    schema = dataclasses.make_dataclass(name, [*fields, *extra])
    schema.__module__, schema.__qualname__ = __name__, name
    schema.__doc__ = f"The schema of `{kind.__module__}.{kind.__name__}`: {kind.__doc__}"
    schemas[kind] = schema
    return schema


_SCHEMAS: dict[type, type] = {}
ModelSchema = derive(ModelConfig, "ModelSchema", _SCHEMAS)
MethodSchema = derive(MethodConfig, "MethodSchema", _SCHEMAS)
DataSchema = derive(DataConfig, "DataSchema", _SCHEMAS)
TrainerSchema = derive(TrainerConfig, "TrainerSchema", _SCHEMAS)
TrackerSchema = derive(TrackerConfig, "TrackerSchema", _SCHEMAS)
MonitorSchema = derive(MonitorConfig, "MonitorSchema", _SCHEMAS)
DeploySchema = derive(DeployConfig, "DeploySchema", _SCHEMAS)
FairSchema = derive(FairConfig, "FairSchema", _SCHEMAS)
# The whole config: a run's sections, and the fair comparison's `fair:` section, which experiments with one set
# (bench.run.fair takes it off before the run's typed config is built).
RunSchema = derive(RunConfig, "RunSchema", _SCHEMAS,
                   extra=(("fair", FairSchema | None, dataclasses.field(default=None)),))

SECTIONS: dict[str, type] = {"": RunConfig, "model": ModelConfig, "method": MethodConfig, "data": DataConfig,
                             "trainer": TrainerConfig, "tracker": TrackerConfig, "monitor": MonitorConfig,
                             "deploy": DeployConfig, "fair": FairConfig}


def register() -> None:
    """Put the schema into Hydra's config store: `base_config` (the whole config), `method/_base` and
    `model/_base` (which every method and model file extends, so a sweep over `method=` can still override
    `method.r`); `method.options` takes any key."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store = ConfigStore.instance()
    store.store(name="base_config", node=RunSchema)
    method = OmegaConf.structured(MethodSchema)
    # A technique's own options are named by its module, not by the schema: `method.options.lr_ratio=8` adds the key
    # without Hydra's `+`, and `MethodConfig` checks it against what the technique declares.
    OmegaConf.set_struct(method.options, False)
    store.store(group="method", name="_base", node=method)
    store.store(group="model", name="_base", node=ModelSchema)


def field_type(key: str) -> Any:
    """The annotated type of a dotted config key (`trainer.lr` -> float), or None for a key outside the schema."""
    section, _, name = key.rpartition(".")
    kind = SECTIONS.get(section)
    if kind is None or name not in {item.name for item in dataclasses.fields(kind)}:
        return None
    return typing.get_type_hints(kind)[name]


def bound(key: str) -> Any:
    """The valid range of a dotted numeric key (`trainer.weight_decay` -> `>= 0`), a `bench.config.bounds.Bound`;
    None for a key that is not a number."""
    from bench.config.bounds import BOUNDS

    return BOUNDS.get(key)


def section_keys(section: str) -> list[str] | None:
    """The keys of a config section (`""`: the top level), or None for a section the schema does not type."""
    kind = SECTIONS.get(section)
    if kind is None:
        return None
    keys = [item.name for item in dataclasses.fields(kind)]
    return sorted([*keys, "fair"]) if section == "" else sorted(keys)


def check_keys(raw: dict[str, Any]) -> None:
    """Raise ConfigError for a key that the schema does not have. OmegaConf rejects one while composing, except
    where Hydra adds it on purpose (`+trainer.lrr=1`); the typed config would reject it later, after Hydra
    started the run or the sweep."""
    valid = section_keys("") or []
    unknown = {key: raw[key] for key in raw if key not in valid and key != "hydra"}
    if unknown:
        raise unknown_keys("", unknown, valid)
    for section in SECTIONS:
        values = raw.get(section) if section else None
        if isinstance(values, dict):
            names = section_keys(section) or []
            unknown = {key: values[key] for key in values if key not in names}
            if unknown:
                raise unknown_keys(section, unknown, names)
