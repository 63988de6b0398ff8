"""The valid range of every number in the config, as data: part of the schema (`bench.config.schema.bound`; the
one-line errors say it after the type: `a number (float) >= 0`), and checked when the typed config is built, so a
value out of range fails in a second, before anything loads (in a sweep: that cell alone, recorded FAILED).

The dataclasses' own `__post_init__` checks run first and keep their words; this table adds the keys they did
not check (a negative seed crashed numpy after the run had started; `trainer.warmup_ratio=2` trained with a rate
that never reached its peak) and is the one list of what is valid. tests/unit/test_config.py checks that every
int and float key of every section has its range here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.core.errors import ConfigError


@dataclass(frozen=True)
class Bound:
    """An interval: `low` and `high` (None: unbounded), each end closed unless `*_open`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def words(self) -> str:
        """`> 0`, `>= 1`, `in [0, 1)`: as the one-line errors say it."""
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        return (f"in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}"
                f"{')' if self.high_open else ']'}")


POSITIVE = Bound(0, low_open=True)
NON_NEGATIVE = Bound(0)
SHARE = Bound(0, 1, low_open=True, high_open=True)  # a fraction of the rows: neither none nor all
SEED = Bound(0, 2**32 - 1)  # what numpy's and sklearn's generators take

BOUNDS: dict[str, Bound] = {
    "seed": SEED,
    "method.lr": POSITIVE, "method.r": POSITIVE, "method.alpha": POSITIVE,
    "method.dropout": Bound(0, 1, high_open=True),
    "method.svd_iters": NON_NEGATIVE, "method.loftq_iter": POSITIVE, "method.group_size": Bound(2),
    "method.attn_group_ratio": Bound(0, 1, low_open=True), "method.embed_norm_lr": POSITIVE,
    "data.eval_fraction": SHARE, "data.test_fraction": SHARE, "data.split_seed": SEED,
    "data.max_train_samples": POSITIVE, "data.max_eval_samples": POSITIVE, "data.max_test_samples": POSITIVE,
    "data.max_length": POSITIVE, "data.general_eval_chunks": NON_NEGATIVE,
    "data.max_new_tokens": Bound(1),
    "trainer.lr": POSITIVE, "trainer.epochs": POSITIVE, "trainer.max_steps": POSITIVE, "trainer.batch_size": POSITIVE,
    "trainer.eval_batch_size": POSITIVE, "trainer.weight_decay": NON_NEGATIVE,
    "trainer.warmup_ratio": Bound(0, 1, high_open=True), "trainer.max_grad_norm": NON_NEGATIVE,
    "trainer.threads": POSITIVE, "trainer.log_every": POSITIVE, "trainer.grad_accum_steps": Bound(1),
    "trainer.nproc": POSITIVE,
    "monitor.interval_s": POSITIVE, "monitor.warmup_steps": NON_NEGATIVE, "monitor.profile_steps": POSITIVE,
    "deploy.throughput_batch": POSITIVE, "deploy.new_tokens": POSITIVE, "deploy.max_seconds": POSITIVE,
    "deploy.min_repeats": POSITIVE, "deploy.load_repeats": POSITIVE, "deploy.fidelity_rows": POSITIVE,
    "fair.tune_seed": SEED, "fair.seeds": SEED, "fair.rate": NON_NEGATIVE,  # a list's bound holds for each item
    "fair.refine_rounds": Bound(0, 5), "fair.round": POSITIVE,  # 5 rounds halve a half-decade 5 times: 1.04x
}


def check_bounds(section: str, values: Mapping[str, Any]) -> None:
    """Raise ConfigError for the first value of `section` (`""`: the top level) outside its bound; None (a cap not
    set) and values of other types (the schema's concern) pass."""
    prefix = f"{section}." if section else ""
    for name, value in values.items():
        bound = BOUNDS.get(prefix + name)
        if bound is None:
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, int | float) and not isinstance(item, bool) and not bound.holds(item):
                raise ConfigError(f"{prefix}{name}={value!r} is not valid; it must be {bound.words()}")


def _number(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
