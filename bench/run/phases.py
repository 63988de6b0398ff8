"""Where a run's wall time goes, phase by phase: logged as `time/<phase>_s` and said in one `time:` line at its end.

The phases, in order: `setup` (from `run_experiment`'s start to the model load: the checks, `data`, the
tokenizer and `plan`, the batches and `imports`, each also on its own), `model` (the base loaded and the technique
built), `train` (the loop, validation included), `test` (the test split scored once), `ship` (the adapter or
weights saved), `deploy` (every served form measured) and `models` (logged as MLflow models). A sweep cell's
`timing/cell_start_s` (its fresh process) comes before them all.

One clock per process: a run is one process's work (a sweep's cells run in processes of their own), so the phases
are timed where they happen without the clock being handed down every call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.config import RunConfig

ORDER = ("setup", "data", "plan", "imports", "model", "train", "test", "ship", "deploy", "models")
_SUB = ("data", "plan", "imports")  # parts of setup, shown in its brackets
_CLOCK: dict[str, float] = {}


def start() -> None:
    """A run begins: forget the last one's phases."""
    _CLOCK.clear()
    _CLOCK["_started"] = time.perf_counter()


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as `name` (added up, if it comes twice)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        _CLOCK[name] = _CLOCK.get(name, 0.0) + time.perf_counter() - started


def mark_setup_done() -> None:
    """The model is about to load: setup is everything since `start`."""
    if "_started" in _CLOCK:
        _CLOCK["setup"] = time.perf_counter() - _CLOCK["_started"]


def metrics() -> dict[str, float]:
    """`time/<phase>_s` for every phase timed so far, and `time/total_s` since `start`."""
    found = {f"time/{name}_s": _CLOCK[name] for name in ORDER if name in _CLOCK}
    if "_started" in _CLOCK:
        found["time/total_s"] = time.perf_counter() - _CLOCK["_started"]
    return found


def line() -> str:
    """`time: setup 9.1 s (data 1.2, plan 0.8, imports 3.0), model 1.1 s, train 77.0 s, ...`."""
    parts = []
    for name in ORDER:
        if name not in _CLOCK or name in _SUB:
            continue
        text = f"{name} {_CLOCK[name]:.1f} s"
        if name == "setup":
            inner = [f"{sub} {_CLOCK[sub]:.1f}" for sub in _SUB if sub in _CLOCK]
            text += f" ({', '.join(inner)})" if inner else ""
        parts.append(text)
    return f"time: {', '.join(parts)}" if parts else ""


def announce(text: str) -> None:
    """A phase that may take a while says so as it starts (training has its bar; a form's deployment its line)."""
    print(text, flush=True)


def quick_run_note(cfg: RunConfig, *, train_rows: int, test_rows: int) -> str:
    """Before training, in a run shrunk so far that it trains on fewer rows than its test split holds (a quick
    `trainer.max_steps=2` run): the phases its caps leave as they were, and how to bound them; "" otherwise."""
    import math

    per_step = cfg.trainer.batch_size * cfg.trainer.grad_accum_steps
    steps = min(cfg.trainer.epochs * math.ceil(train_rows / per_step), cfg.trainer.max_steps or math.inf)
    if steps * per_step >= test_rows:
        return ""
    cap = cfg.data.max_test_samples
    slow = [f"the test split keeps its {test_rows:,} rows (data.max_test_samples={cap if cap else 'null'})"]
    fixes = [f"data.max_test_samples={max(steps * per_step, 16)} caps it"]
    if cfg.deploy.measure:
        technique = cfg.method.technique
        forms = (["base", "unmerged", "merged16", *(["merged4"] if technique.base == "nf4" else [])]
                 if technique.uses_adapter else ["full"])
        slow.append(f"the deployment step measures {len(forms)} form{'s' if len(forms) > 1 else ''} "
                    f"({', '.join(forms)}): each loaded {cfg.deploy.load_repeats}×, scored on the test split and timed "
                    f"for at least {cfg.deploy.min_repeats} calls per speed figure")
        fixes.append("deploy.measure=false skips it")
    return (f"note: this run trains on {steps * per_step:,} rows, but {' and '.join(slow)}; these take longer than "
            f"training: {'; '.join(fixes)}")
