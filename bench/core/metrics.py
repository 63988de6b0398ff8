"""Every metric bench logs, defined once: its name, unit, which way is better, the module that writes it and one
line of meaning. The table is `metrics.toml` beside this module (a data file, read once, because 150-odd
definitions would drown the code that reads them); this module loads it and answers `definition(name)`.

The tracker checks each name it logs against it (`bench.tracking.tracker`), the report takes its hints from it,
and tests check that the README's metric tables name exactly what it holds. A name may carry placeholders,
`deploy/{form}/bytes`, `dist/rank{rank}/tokens_per_s`: each stands for exactly one of the values the table lists
for it (a rank: a whole number), never a loose prefix, so `deploy/merged5/bytes` is as unregistered as a typo.
Only the standard library (and tomli on Python 3.10) is imported: the report and the tracker both read this, and
neither may pay for torch.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, before it joined the standard library
    import tomli as tomllib

TABLE = Path(__file__).with_name("metrics.toml")
UNITS = {
    "bytes": "bytes (the report shows KiB, MiB, GiB: binary units)", "bits": "bits (per weight or parameter)",
    "s": "seconds", "ms": "milliseconds", "tokens/s": "tokens per second", "samples/s": "examples per second",
    "rows/s": "rows per second", "%": "percent (100 = all, or one CPU core busy)", "J": "joules", "W": "watts",
    "count": "a whole number of things (steps, rows, tokens, parameters, ranks)",
    "fraction": "a share of one (accuracy 0.75 is 75 %)", "nats": "natural-log loss", "logits": "logit units",
    "ratio": "a dimensionless number (a perplexity)"}
BETTER = ("higher", "lower", "neither")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")

# The names spelled most often outside the table; anything else is looked up by its name.
EVAL_ACCURACY = "eval/accuracy"
TEST_ACCURACY = "test/accuracy"
TRAIN_LOSS = "train/loss"
TRAIN_TOKENS_PER_S = "train/tokens_per_s"
TENSOR_PEAK_BYTES = "mem/tensor_peak_bytes"


class UnregisteredMetric(LookupError):
    """A metric name with no definition in `metrics.toml`."""


@dataclass(frozen=True)
class Metric:
    """One definition: `name` may be a template with `{placeholders}`; `meaning` is one line."""

    name: str
    unit: str
    better: str
    writer: str
    meaning: str

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(_PLACEHOLDER.findall(self.name))


@dataclass(frozen=True)
class Placeholder:
    """What a `{name}` in a metric's name may be: one of `values` (value -> what it is, where the table says),
    or, with no values, a match of `pattern` (a rank: any whole number)."""

    name: str
    values: Mapping[str, str]  # read-only: every reader shares the one table
    pattern: str


@dataclass(frozen=True)
class _Table:
    metrics: dict[str, Metric]  # by name as registered (templates keep their placeholders)
    placeholders: dict[str, Placeholder]
    matchers: tuple[tuple[re.Pattern[str], Metric], ...]  # the templates, each as a whole-name pattern


@functools.cache
def _table() -> _Table:
    raw = tomllib.loads(TABLE.read_text(encoding="utf-8"))
    placeholders = {name: _placeholder(name, value) for name, value in raw["placeholders"].items()}
    metrics = {name: Metric(name=name, **fields) for name, fields in raw["metric"].items()}
    matchers = tuple((_pattern(metric.name, placeholders), metric) for metric in metrics.values()
                     if metric.placeholders)
    return _Table(metrics, placeholders, matchers)


def _placeholder(name: str, value: str | list[str] | dict[str, str]) -> Placeholder:
    if isinstance(value, str):
        return Placeholder(name, {}, value)
    values = value if isinstance(value, dict) else dict.fromkeys(value, "")
    return Placeholder(name, MappingProxyType(values), "|".join(map(re.escape, values)))


def _pattern(template: str, placeholders: dict[str, Placeholder]) -> re.Pattern[str]:
    parts = _PLACEHOLDER.split(template)  # literal, placeholder, literal, ...
    return re.compile("".join(re.escape(part) if i % 2 == 0 else f"(?:{placeholders[part].pattern})"
                              for i, part in enumerate(parts)))


def registry() -> dict[str, Metric]:
    """Every definition, by its registered name (a template keeps its placeholders), in the table's order."""
    return dict(_table().metrics)


def placeholder(name: str) -> Placeholder:
    """The placeholder `{name}`: the values it may take (value -> what it is), or its pattern."""
    return _table().placeholders[name]


def definition(name: str) -> Metric:
    """The definition of a logged name (`deploy/merged4/bytes` -> `deploy/{form}/bytes`'s), or of a registered
    template itself. Raises UnregisteredMetric, naming the closest registered names, for anything else."""
    table = _table()
    if name in table.metrics:
        return table.metrics[name]
    for pattern, metric in table.matchers:
        if pattern.fullmatch(name):
            return metric
    close = difflib.get_close_matches(name, known_names(), n=3, cutoff=0.6)
    nearest = f"; close registered names: {', '.join(close)}" if close else ""
    raise UnregisteredMetric(f"metric {name!r} is not registered in bench/core/metrics.toml (give it a unit, a "
                             f"direction, its writer and one line of meaning there){nearest}")


def is_registered(name: str) -> bool:
    try:
        definition(name)
    except UnregisteredMetric:
        return False
    return True


def expand(name: str) -> list[str]:
    """Every name a template stands for, over its placeholders' values (a concrete name: itself). A template with
    an open placeholder (`{rank}`) keeps that placeholder."""
    names = [name]
    for key in dict.fromkeys(_PLACEHOLDER.findall(name)):
        values = placeholder(key).values
        if values:
            names = [done.replace(f"{{{key}}}", value) for done in names for value in values]
    return names


def known_names() -> list[str]:
    """Every registered name with its closed placeholders filled in, and every template as written."""
    metrics = _table().metrics
    return list(dict.fromkeys([*metrics, *(n for metric in metrics.values() for n in expand(metric.name))]))


def logged_as(template: str, **values: str) -> str:
    """A template with its placeholders filled (`logged_as("deploy/{form}/bytes", form="base")`), checked."""
    name = template.format(**values)
    if definition(name).name != template:
        raise UnregisteredMetric(f"{name!r} is not an instance of the registered {template!r}")
    return name
