"""A sweep cell's own process: `python -m bench.run.isolation <cell.json>`, started by `bench.run.cells` for every cell.

Each cell is measured alone, in a fresh interpreter, so nothing an earlier cell left in a process (allocator
arenas, caches, modules imported late) is counted in its memory figures. The spec (`bench.run.cells.CellSpec`)
holds the resolved config, the sweep, the cell's label and when the launching process started this one; the
run gets `timing/cell_start_s`, the seconds from then until the imports every run needs are done (what the
fresh process costs). The result file written at the end holds the eval accuracy or the failure kind; a
process that leaves none died (SIGKILL, the OOM killer, a segfault), and the launching process records that.

Signals: the first SIGINT or SIGTERM raises KeyboardInterrupt (the run saves its adapter and closes KILLED, as
a single run does); later ones are ignored, so that cleanup is never cut short. A Ctrl-C in a terminal reaches
this process and the launching one alike, and the launching one then sends its own SIGINT: only one counts.
On Linux this process also gets SIGTERM when the launching process dies, so no cell trains on, orphaned.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.config import ModelConfig

# Imported before the cell counts as started: every run needs them, and in one process they were imported once.
READY_IMPORTS = ("torch", "transformers", "mlflow", "bench.run.runner")
BESIDE = "mlflow"  # imported on a thread of its own while the others import (`_import_ready`)
_PR_SET_PDEATHSIG = 1  # prctl(2)


def main(argv: list[str]) -> int:
    """Run the cell the spec at `argv[0]` describes; exit 0 when it finished, 1 when it failed, 130 interrupted."""
    _interrupt_once()  # first: a Ctrl-C during the imports is an interrupt too, not a traceback
    spec = None
    try:
        from bench.run.cells import CellSpec, run_cell

        spec = CellSpec.read(Path(argv[0]))
        _follow_parent(spec.parent_pid)
        _configure_logging(spec)
        _import_ready()
        from bench.run.console import quiet

        with quiet():  # the libraries' output goes to the cell's bench.log, not to the terminal
            result = run_cell(spec, start_metrics={"timing/cell_start_s": time.time() - spec.started})
    except KeyboardInterrupt:  # the run, if it had started, is closed KILLED by now
        result = {"failure": "killed"}
    for signum in (signal.SIGINT, signal.SIGTERM):  # the cell is over: nothing left that an interrupt could save
        signal.signal(signum, signal.SIG_IGN)
    if spec is None:
        return 130
    written = Path(f"{spec.result}.tmp")
    written.write_text(json.dumps(result))
    written.replace(spec.result)  # whole or absent, even if this process is killed while writing
    return 0 if "failure" not in result else 130 if result["failure"] == "killed" else 1


def _import_ready() -> None:
    """READY_IMPORTS, MLflow's on a thread of its own beside torch's and transformers': the imports wait on the disk
    as much as they compute, and overlapped they took 0.78x the wall time of one after the other (7.9-12.1 s against
    11.9-15.1 s, 3 fresh processes each, 2 loaded cores). A failure there is raised here, by importing it again."""
    beside = threading.Thread(target=importlib.import_module, args=(BESIDE,), daemon=True)
    beside.start()
    for module in READY_IMPORTS:
        if module != BESIDE:
            importlib.import_module(module)
    beside.join()
    importlib.import_module(BESIDE)


def _interrupt_once() -> None:
    """The first SIGINT or SIGTERM raises KeyboardInterrupt; from then on both are ignored."""

    def interrupt(signum: int, _frame: Any) -> None:
        for ignored in (signal.SIGINT, signal.SIGTERM):
            signal.signal(ignored, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)


def _follow_parent(parent_pid: int) -> None:
    """Linux: SIGTERM to this process when the launching one dies (killed with SIGKILL, say)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # it died before the call above
        os.kill(os.getpid(), signal.SIGTERM)


def _configure_logging(spec: ModelConfig) -> None:
    """Hydra's job logging, as the cell had it in the launching process (console and the cell's `bench.log`)."""
    from hydra.core.utils import configure_log
    from omegaconf import OmegaConf

    verbose = OmegaConf.create(spec.verbose) if isinstance(spec.verbose, list) else spec.verbose
    configure_log(OmegaConf.create(spec.job_logging) if spec.job_logging else None, verbose)


def _exit_now(status: int) -> None:
    """End the process at once: everything the cell recorded is written (the tracker writes synchronously, the
    result file is in place), so the interpreter's teardown, ~2 s of unloading torch and friends per cell, buys
    nothing. Buffered output and log files are flushed first."""
    import logging

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    os._exit(status)


if __name__ == "__main__":
    _exit_now(main(sys.argv[1:]))
