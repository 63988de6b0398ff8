"""Training throughput measured in the MLflow store, for `bench plan --tokens`: how long a token budget takes.

A plan's time comes only from runs that measured it: FINISHED runs of the same model (`model` tag) and
technique (`technique` tag) at the same sequence length (`params.data.max_length`), with the same memory levers
(a lever a run did not log counts as its default), on the same device (the card's `hw/gpu` tag on CUDA,
`hw/device` cpu on the CPU). Their `train/tokens_per_s` (non-padding tokens per second of training, warm-up left
out) is averaged. With no such run the row is "uncalibrated" and no time is given: a throughput is never
guessed from FLOPs or from another device.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEVERS = ("gradient_checkpointing", "optimizer", "grad_accum_steps")
THROUGHPUT = "metrics.train/tokens_per_s"


@dataclass(frozen=True)
class Calibration:
    """The measured throughput of one planned configuration, and the runs it comes from."""

    tokens_per_s: float | None  # None: uncalibrated
    runs: tuple[str, ...] = ()  # `name (run id)` of each run averaged
    reason: str = ""  # why uncalibrated

    def seconds(self, tokens: float) -> float | None:
        """Training time for `tokens` non-padding tokens at the measured rate."""
        return tokens / self.tokens_per_s if self.tokens_per_s else None

    def cost(self, tokens: float, price_per_hour: float | None) -> float | None:
        """What that time costs at `price_per_hour` (USD per hour of the device)."""
        seconds = self.seconds(tokens)
        return None if seconds is None or price_per_hour is None else seconds / 3600 * price_per_hour


@dataclass(frozen=True)
class Store:
    """The store's FINISHED runs that measured a throughput (an empty frame and why, when there are none)."""

    runs: Any  # pandas.DataFrame, as mlflow.search_runs returns it
    problem: str = ""


def load_store(uri: str, metric: str = THROUGHPUT) -> Store:
    """Every FINISHED run with `metric` (default `train/tokens_per_s`), across experiments. A missing SQLite file is
    not created (MLflow would make an empty store) and an unreachable store is a reason, not an error: the plan
    stands."""
    import pandas as pd

    empty = pd.DataFrame()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return Store(empty, f"no MLflow store at {uri.removeprefix('sqlite:///')}")
    try:
        import mlflow

        logging.getLogger("alembic").setLevel(logging.WARNING)
        mlflow.set_tracking_uri(uri)
        runs = mlflow.search_runs(search_all_experiments=True, filter_string="attributes.status = 'FINISHED'",
                                  max_results=100_000)
    except Exception as error:  # noqa: BLE001 - whatever MLflow raises for a store it cannot read
        from bench.tracking.store import redact_uri

        return Store(empty, f"the store at {redact_uri(uri)} cannot be read ({type(error).__name__})")
    if runs.empty or metric not in runs:
        return Store(empty, f"no finished run in the store logged {metric.removeprefix('metrics.')}")
    return Store(runs[runs[metric].notna()].reset_index(drop=True))


def column(runs: Any, name: str) -> Any:
    """The store's column `name`, or a column of None where no run logged it."""
    import pandas as pd

    return runs[name] if name in runs else pd.Series(None, index=runs.index, dtype=object)


def same_levers(runs: Any, levers: dict[str, tuple[Any, Any]]) -> Any:
    """Runs whose logged `trainer.<lever>` equals the planned value; a run that did not log a lever (older than
    the lever) ran with its default. `levers`: name -> (planned value, default)."""
    keep = runs.index == runs.index  # all True
    for name, (value, default) in levers.items():
        logged = column(runs, f"params.trainer.{name}")
        keep &= (logged.astype(str) == str(value)) | (logged.isna() & (value == default))
    return keep


def calibrate(store: Store, *, model: str, technique: str, seq_len: int, levers: dict[str, tuple[Any, Any]],
              device: str, card: Any = None) -> Calibration:
    """The mean measured throughput of the runs that match (see the module docstring). `device`: cuda or cpu;
    `card`: the `bench.plan.cards.Card` planned for on CUDA (None: no card named, nothing can match)."""
    where = f"{model} {technique} at data.max_length={seq_len}"
    if store.problem:
        return Calibration(None, reason=store.problem)
    if device == "cuda" and card is None:
        return Calibration(None, reason="no card named (--gpu): a throughput belongs to one GPU model")
    runs = store.runs
    if device == "cuda":
        on_device = column(runs, "tags.hw/gpu").fillna("").astype(str).map(card.matches)
        device_name = card.title
    else:
        on_device = column(runs, "tags.hw/device").astype(str) == "cpu"
        device_name = "cpu"
    match = (on_device & (column(runs, "tags.model") == model) & (column(runs, "tags.technique") == technique)
             & (column(runs, "params.data.max_length").astype(str) == str(seq_len)) & same_levers(runs, levers))
    rates = runs[THROUGHPUT].astype(float)
    found = runs[match & rates.map(math.isfinite) & (rates > 0)]
    if found.empty:
        return Calibration(None, reason=f"no finished run of {where} on {device_name} with these levers")
    names = column(found, "tags.mlflow.runName").fillna("").astype(str)
    labels = tuple(f"{name or 'run'} ({run_id[:8]})" for name, run_id in zip(names, found["run_id"], strict=True))
    return Calibration(float(found[THROUGHPUT].astype(float).mean()), labels)


def levers_of(cfg: Any) -> dict[str, tuple[Any, Any]]:
    """The trainer's memory levers `cfg` sets: name -> (value, default)."""
    from bench.config import TrainerConfig, field_defaults

    defaults = field_defaults(TrainerConfig)
    return {name: (getattr(cfg.trainer, name), defaults[name]) for name in LEVERS if hasattr(cfg.trainer, name)}


def duration(seconds: float) -> str:
    """`42.0 s`, `12.5 min`, `222.22 h`: the unit that reads best."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:,.2f} h"
