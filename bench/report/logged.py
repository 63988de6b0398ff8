"""The report's side of the metric registry (bench.core.metrics): the column `mlflow.search_runs` returns a metric
in, and what a table's header says of it. Every name goes through the registry here, so a misspelt name in the
report fails on import rather than showing a column that is blank for every run."""

from __future__ import annotations

import re

from bench.core.metrics import definition


def column(name: str) -> str:
    """`eval/accuracy` -> `metrics.eval/accuracy` (the last logged value); an unregistered name raises."""
    definition(name)
    return f"metrics.{name}"


def columns(names: dict[str, str]) -> dict[str, str]:
    """Friendly column -> metric name, as friendly column -> the column `mlflow.search_runs` returns."""
    return {friendly: column(name) for friendly, name in names.items()}


def shown(name: str) -> str:
    """A name as the report writes it: a placeholder in angle brackets, `deploy/<form>/bytes`."""
    return re.sub(r"\{(\w+)\}", r"<\1>", name)


def hint(name: str) -> str:
    """A header's hint: the metric's name and its meaning, as the registry gives it."""
    return f"{shown(name)}: {definition(name).meaning}"


def unit(name: str) -> str:
    """The unit a value of the metric is in (`J`, `s`, ...), for a cell that writes it after the number."""
    return definition(name).unit
