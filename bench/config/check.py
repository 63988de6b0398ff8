"""The command line's config, checked the way Hydra will compose it, before anything runs; and every config error,
whoever raised it (Hydra, OmegaConf or our checks), as one line that names the key, the bad value and what is
valid.

`bench run` composes each job's config here first: the single run's, or for a sweep (`-m`, or a `sweep=` preset)
each value of each swept key once, so a typo in the fifth value of a grid fails in seconds instead of after four
cells, and before the sweep's parent run exists. Values are checked against the schema (`bench.config.schema`), which
OmegaConf enforces while composing; what the typed dataclasses' `__post_init__` checks stays where it is (a bad
value in one cell of a sweep is a FAILED cell, and the sweep goes on).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable
from typing import Any, Literal

from bench.config import ConfigError, unknown_keys

HYDRA_GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"
Compose = Callable[..., Any]  # bench.cli.compose: (overrides, *, return_hydra_config) -> DictConfig
_ABSENT = object()


def check_command_line(overrides: list[str], *, compose: Compose, multirun: bool) -> None:
    """Compose every job `bench run <overrides>` would run (each value of a sweep once) and check its keys, and the
    folders it will write; raise ConfigError with one line on the first that fails."""
    parsed = [_parse(override) for override in overrides]
    sweeps = [override for override in parsed if override.is_sweep_override()]
    fixed = [override.input_line for override in parsed if not override.is_sweep_override()]
    placeholder = [] if any(o.key_or_group == "output_dir" for o in parsed) else ["output_dir=."]
    swept = {override.key_or_group: (override, _values(override)) for override in sweeps}
    first = [f"{override.get_key_element()}={values[0]}" for override, values in swept.values() if values]
    config = _compose([*fixed, *first, *placeholder], compose=compose, hydra=True)
    if sweeps and not (multirun or getattr(config.hydra.mode, "name", None) == "MULTIRUN"):  # a preset's mode
        override, values = swept[sweeps[0].key_or_group]
        raise ConfigError(f"{override.input_line} sweeps over {len(values)} values; add -m to run one job per value "
                          f"(bench run -m ...), or give a list as {override.get_key_element()}=[{','.join(values)}]")
    _check_folders(config, multirun=multirun or getattr(config.hydra.mode, "name", None) == "MULTIRUN",
                   output_dir=not placeholder)
    preset = config.hydra.sweeper.get("params") or {}
    for key, value in preset.items():  # a `sweep=` preset's grid, unless the command line sweeps that key itself
        override = _parse(f"{key}={value}")
        if override.key_or_group not in swept and override.is_sweep_override():
            swept[override.key_or_group] = (override, _values(override))
    base = [*fixed, *placeholder,
            *(f"{override.get_key_element()}={values[0]}" for override, values in swept.values() if values)]
    job = _compose(base, compose=compose) if len(swept) > 0 else None
    for key, (override, values) in swept.items():
        others = [line for line in base if _key(line) != key]
        for value in values[1:]:
            line = f"{override.get_key_element()}={value}"
            if _is_value(override, job):  # a value of one key: set on the composed job, as Hydra does (a grid of 100
                _check_value(job, key, line)  # seeds takes milliseconds, not 100 compositions)
            else:  # a group choice (method=lora), or a key added or deleted: composed again
                _compose([*others, line], compose=compose)


def _check_folders(config: Any, *, multirun: bool, output_dir: bool) -> None:
    """The folders a run writes, checked before Hydra creates them (it would fail with a traceback): Hydra's run
    folder, or a sweep's, and an `output_dir` the command line gives."""
    from bench.core.paths import check_writable_folder

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    check_writable_folder(str(config.hydra.sweep.dir if multirun else config.hydra.run.dir), key=key)
    if output_dir:
        check_writable_folder(str(config.output_dir), key="output_dir")


def _is_value(override: Any, job: Any) -> bool:
    """A plain change of a leaf of the job's config (`method.r=4`, `seed=3`): not a group's choice (`method=lora`,
    whose key is a section), not a key added or deleted, not Hydra's own."""
    from hydra.core.override_parser.types import OverrideType
    from omegaconf import OmegaConf

    key = override.key_or_group
    if override.type != OverrideType.CHANGE or key.startswith("hydra") or "/" in key:
        return False
    node = OmegaConf.select(job, key, default=_ABSENT, throw_on_resolution_failure=False)
    return node is not _ABSENT and not OmegaConf.is_config(node)


def _check_value(job: Any, key: str, line: str) -> None:
    """`line` (`key=value`) applied to a copy of the composed job config, then resolved and its keys checked."""
    import copy

    from omegaconf import OmegaConf

    trial = copy.deepcopy(job)
    try:
        OmegaConf.update(trial, key, _parse(line).value(), merge=True)
    except Exception as error:  # noqa: BLE001 - as in `_compose`
        raise ConfigError(describe(error, [line]) or f"{line}: {_first_line(error)}") from error
    _checked(trial, [line])


def describe(error: BaseException, overrides: list[str] | None = None) -> str | None:
    """One line for a config error from Hydra or OmegaConf (None for any other error): the key, the bad value
    (as the command line gave it, where it did) and the valid keys, type or choices."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import (
        ConfigKeyError,
        InterpolationResolutionError,
        MissingMandatoryValue,
        OmegaConfBaseException,
        ValidationError,
    )

    if isinstance(error, ConfigError):
        return str(error)
    if isinstance(error, OverrideParseException):
        return f"cannot parse the override: {_first_line(error)}; see {HYDRA_GRAMMAR}"
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, choice = error.missing_cfg_file.rpartition("/")
        options = [option for option in error.options or [] if not option.startswith("_")]
        if not group:
            return f"config {choice!r} not found ({_first_line(error)})"
        return f"unknown {group} {choice!r}; valid choices: {', '.join(options)}"
    cause = _omegaconf_cause(error)
    if cause is None:
        from hydra.errors import HydraException

        return " ".join(str(error).split()) if isinstance(error, HydraException) else None
    key = cause.full_key or ""
    value = _given(key, overrides)
    if isinstance(cause, ConfigKeyError) or "not in struct" in cause.msg or " not in '" in cause.msg:
        found = re.match(r"In '([^']+)'", str(error))  # a config file's key, not the command line's
        return _unknown_key(key, value) + (f" (in conf/{found.group(1)}.yaml)" if found and value is None else "")
    if isinstance(cause, InterpolationResolutionError):
        return f"{key}={value or '<interpolation>'} cannot be resolved: {_first_line(cause)}"
    if isinstance(cause, MissingMandatoryValue):
        return f"{key} has no value (???); set it, e.g. {key}=<value>"
    if isinstance(cause, ValidationError):
        shown = value if value is not None else repr(cause.value)
        return f"{key}={shown} is not valid; it must be {expected(key)}"
    assert isinstance(cause, OmegaConfBaseException)
    if "does not support deletion" in cause.msg:
        return f"~{key}: {key} cannot be deleted, every key of the schema has a value; set it instead ({key}=<value>)"
    return f"{key}={value}: {_first_line(cause)}" if value is not None else f"{key}: {_first_line(cause)}"


def expected(key: str) -> str:
    """What the schema accepts for `key`, in words: `a number (float)`, `one of: none, all, lora_only`."""
    from bench.config.schema import bound, field_type

    annotation = field_type(key)
    if annotation is None:
        return "a value of the type the schema gives it"
    valid = bound(key)
    return _in_words(annotation) + (f" {valid.words()}" if valid is not None else "")


def _in_words(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return f"one of: {', '.join(map(str, args))}"
    if type(None) in args:
        present = [arg for arg in args if arg is not type(None)]
        return " or ".join([*(_in_words(arg) for arg in present), "null"])
    if args and origin not in (list, dict):  # str | list[str]
        return " or ".join(_in_words(arg) for arg in args)
    if dataclasses.is_dataclass(annotation):
        return f"a section with the keys {', '.join(f.name for f in dataclasses.fields(annotation))}"
    words = {int: "an integer", float: "a number (float)", bool: "true or false", str: "a string",
             list: "a list, e.g. [a,b]", dict: "a mapping, e.g. {key: value}"}
    return words.get(origin or annotation, str(annotation))


def _unknown_key(key: str, value: str | None) -> str:
    from bench.config.schema import section_keys

    section, _, name = key.rpartition(".")
    valid = section_keys(section)
    if valid is None:  # a free mapping (model.architecture, tracker.tags, fair.grid): Hydra adds keys with `+`
        return (f"{key} is not set, so it cannot be overridden; add it with +{key}={value or '<value>'} "
                f"(a new key of {section})")
    return str(unknown_keys(section, {name: value}, valid))


def _given(key: str, overrides: list[str] | None) -> str | None:
    """The value the command line gave `key`, as typed; None where it gave none (a config file did)."""
    for override in reversed(overrides or []):
        name, sign, value = override.partition("=")
        if sign and name.lstrip("+~") == key:
            return value
    return None


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~").split("@")[0]


def _omegaconf_cause(error: BaseException) -> Any:
    """The OmegaConf error behind a Hydra one (Hydra wraps them: "Error merging override ..."), or the error."""
    from omegaconf.errors import OmegaConfBaseException

    seen = error
    while seen is not None:
        if isinstance(seen, OmegaConfBaseException) and getattr(seen, "full_key", None) is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _first_line(error: BaseException) -> str:
    text = getattr(error, "msg", None) or str(error)
    lines = [line.strip() for line in str(text).splitlines() if line.strip() and not line.startswith("See https")]
    return lines[0] if lines else type(error).__name__


def _parse(override: str) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides([override])[0]
    except OverrideParseException as error:
        raise ConfigError(f"cannot parse the override {override!r}: {_first_line(error)}; see "
                          f"{HYDRA_GRAMMAR}") from error


def _values(override: Any) -> list[str]:
    """The values a sweep override runs, as override text; [] for a sweep that is not a list (a glob, an interval
    for an optimising sweeper), which Hydra alone can expand."""
    from hydra.errors import HydraException

    try:
        return list(override.sweep_string_iterator())
    except HydraException:
        return []


def _compose(overrides: list[str], *, compose: Compose, hydra: bool = False) -> Any:
    """The composed config (with Hydra's node where `hydra`), resolved and its keys checked; a config error
    becomes a ConfigError with one line."""
    try:
        config = compose(overrides, return_hydra_config=hydra)
    except Exception as error:  # noqa: BLE001 - composing fails only on the config; anything else is one line too
        raise ConfigError(describe(error, overrides) or f"the config does not compose: {type(error).__name__}: "
                          f"{_first_line(error)}") from error
    _checked(config, overrides)
    return config


def _checked(config: Any, overrides: list[str]) -> None:
    """Resolve every interpolation of the job's config (Hydra's own node aside) and check its keys."""
    from omegaconf import OmegaConf

    from bench.config.schema import check_keys

    try:
        raw = {key: OmegaConf.to_container(config[key], resolve=True) if OmegaConf.is_config(config[key])
               else config[key] for key in config if key != "hydra"}
        check_keys(raw)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - an interpolation that does not resolve, a value it gives
        raise ConfigError(describe(error, overrides) or f"{type(error).__name__}: {_first_line(error)}") from error
