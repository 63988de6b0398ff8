"""What a `bench run` shows in the terminal: bench's own lines, and nothing the libraries under it print.

A run's console holds bench's progress bar, its per-cell lines, its `warning:` lines and its final lines. What the
libraries say goes to the run's own log file instead (Hydra's `bench.log` in the run's output folder, logged as
the run's artifact `log/bench.log`): their logging (MLflow's, bitsandbytes', transformers', ...) and every Python
warning (transformers' deprecations, ...). Their progress bars (transformers' "Loading weights", "Writing model
shards") are switched off: a bar redrawn in a file says nothing.

How, where each kind of output leaves a library:
- logging: the console handlers of Hydra's logging configs (`conf/hydra/{job,hydra}_logging/bench.yaml`) keep only
  bench's records and errors (`ConsoleFilter`); the file handler keeps everything. MLflow and transformers put
  their own handlers on their loggers: those are taken off, so their records reach the file (`quiet`).
- warnings: `warnings.showwarning` writes to the `py.warnings` logger, hence to the file.
- C++ logging: torch's profiler (kineto) writes to stderr itself; `KINETO_LOG_LEVEL` silences it.
- progress bars: `HF_HUB_DISABLE_PROGRESS_BARS`, which transformers reads too, and its switch;
  `MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR` for MLflow's (while it copies a model's files).

`hydra.verbose=true` (or `BENCH_VERBOSE=1`) brings everything back, as the libraries print it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

VERBOSE = "BENCH_VERBOSE"  # "1": the libraries' output on the console too (`hydra.verbose=true` sets it)
LOG_ARTIFACT = "log"  # the run's artifact folder holding its log file
# Environment the run and its cells' processes start with when quiet: read by the libraries at import.
# KINETO_LOG_LEVEL: torch's profiler (the CPU allocator's instrument opens a window per watched step) prints
# `USDT: ... profiler_start`/`profiler_stop` lines from C++ straight to stderr; its levels run VERBOSE 0 to USDT 5,
# so 6 silences it (its errors too: torch raises those that matter to Python).
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "MLFLOW_CONFIGURE_LOGGING": "false",
             "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "KINETO_LOG_LEVEL": "6"}
# Loggers that libraries give a console handler of their own (and do not propagate to the root).
_SELF_HANDLED = ("mlflow", "alembic", "sqlalchemy.engine", "huey", "transformers")


def verbose() -> bool:
    """Whether the libraries' output goes to the console as well."""
    return os.environ.get(VERBOSE, "").lower() not in ("", "0", "false")


def asks_verbose(overrides: list[str]) -> bool:
    """`hydra.verbose=true` (or a list of loggers) among `bench run`'s overrides."""
    for override in overrides:
        match = re.fullmatch(r"\+{0,2}hydra\.verbose=(.*)", override)
        if match and match.group(1).strip().lower() not in ("", "false", "0", "null", "[]"):
            return True
    return False


class ConsoleFilter(logging.Filter):
    """On a console handler: bench's own records and any error pass; library records at lower levels stay in the
    file. Referenced by `conf/hydra/*_logging/bench.yaml`, so Hydra's every (re)configuration keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (verbose() or record.levelno >= logging.ERROR or record.name == "bench"
                or record.name.startswith("bench."))


def quiet_environment() -> None:
    """Before anything imports a library: the environment variables they read at import (inherited by every cell's
    process), unless verbose."""
    if not verbose():
        for name, value in QUIET_ENV.items():
            os.environ.setdefault(name, value)


@contextmanager
def quiet() -> Iterator[None]:
    """Inside a job (a run or a cell's process), once Hydra's logging is configured: library output to the log file.
    Puts the warnings hook back on exit (the handlers and progress bars are the process's until it ends)."""
    if verbose():
        yield
        return
    quiet_environment()
    shown = warnings.showwarning
    warnings.showwarning = _warning_to_log
    _libraries_to_root()
    try:
        yield
    finally:
        warnings.showwarning = shown


def log_file() -> Path | None:
    """The run's log file: the file handler Hydra's job logging put on the root logger (`<output dir>/bench.log`)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return None


def log_line(path: Path | None) -> str:
    """`log: <path> (...)`: where the libraries' output went, printed once."""
    if path is None:
        return ""
    return f"log: {path} (library messages and warnings; hydra.verbose=true prints them here)"


def keep_log(tracker: Any) -> None:
    """The run's log file as its artifact `log/bench.log` (rank 0 alone; a log that cannot be uploaded only warns)."""
    path = log_file()
    if not tracker.run_id or path is None or not path.is_file():
        return
    try:
        tracker.log_artifact(path, LOG_ARTIFACT)
    except Exception as error:  # noqa: BLE001 - never a reason to fail a run that trained
        print(f"warning: the run's log {path} was not uploaded ({type(error).__name__}: {error})", file=sys.stderr)


def _warning_to_log(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    file: object = None, line: str | None = None) -> None:
    text = warnings.formatwarning(message, category, filename, lineno, line)
    logging.getLogger("py.warnings").warning("%s", text.rstrip())


def _libraries_to_root() -> None:
    """Take the console handlers libraries put on their own loggers off, so their records reach the root's handlers
    (Hydra's: the filtered console and the file); switch transformers' progress bars off."""
    for name in _SELF_HANDLED:
        logger = logging.getLogger(name)
        own = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
               and not isinstance(h, logging.FileHandler)]
        if own:
            logger.handlers = [h for h in logger.handlers if h not in own]
            logger.propagate = True
    # imported now (~0.5 s; every run imports it): its handler, once taken off, is not put back by later imports
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
