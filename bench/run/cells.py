"""One job of `bench run`: a single run, or one cell of a sweep.

A single run runs in the process Hydra calls it in. Each cell of a sweep runs in a fresh Python process of its
own (`python -m bench.run.isolation <cell.json>`), whichever launcher calls it: Hydra's default one, which calls the
cells one after another in the launching process, or joblib's workers, which call several cells each. What a cell
leaves behind in a process (allocator arenas, caches, modules imported late) would otherwise be counted in the
next cell's memory figures; optimum-benchmark isolates its benchmarks for the same reason. The calling process
keeps what needs no fresh interpreter: it prints the cell's line, skips a cell already FINISHED with the same
config hash without starting a process, and turns the child's result file into Hydra's job value. The child
inherits stdout and stderr, so its progress bar and `results:` line show as a single run's do. What the fresh
process costs is logged as the cell's `timing/cell_start_s`.

In a sweep, a cell never stops the sweep: whatever goes wrong (a bad value for this cell, an exception,
out of memory, a NaN loss, a process that dies without a result) is recorded as a FAILED child run with its
`failure` kind, and the next cell starts. A single run fails loudly instead, so a typo costs a second.
Ctrl-C or SIGTERM does stop the sweep: the running cell is interrupted first, and its run closes KILLED.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.config import RunConfig, TrackerConfig, config_hash
from bench.core.metrics import EVAL_ACCURACY
from bench.run import overlap

CELL_MODULE = "bench.run.isolation"  # the child's entry point, run with `python -m`
SPEC_FILE, RESULT_FILE = "cell.json", "cell_result.json"  # in the cell's Hydra output folder
INTERRUPT_GRACE_S = 120  # how long an interrupted cell may take to save its adapter and close its run


@dataclass(frozen=True)
class CellSpec:
    """What a cell's process needs, written by the process that launches it."""

    raw: dict[str, Any]  # the resolved config, as Hydra gave it to the job
    sweep: dict[str, Any]  # the SweepContext's fields
    label: str  # "cell 3/12"
    started: float  # time.time() when the launching process started the child
    parent_pid: int  # the launching process, so the child can follow it if it dies
    result: str  # where the child writes its result
    job_logging: dict[str, Any] | None = None  # Hydra's job logging config, resolved
    verbose: Any = False  # Hydra's `hydra.verbose`

    @classmethod
    def read(cls, path: Path) -> CellSpec:
        return cls(**json.loads(path.read_text()))


def run_job(raw: dict[str, Any], *, stage: str = "") -> float | None:
    """Hydra's job: returns the final eval accuracy, or None for a skipped or failed sweep cell. `stage`: what
    the progress label starts with, `stage 1/3: ` in a fair comparison (bench.run.fair)."""
    from hydra.core.hydra_config import HydraConfig

    from bench.run.runner import run_experiment
    from bench.run.sweep import current_context

    sweep = current_context()
    if sweep is None:
        return run_experiment(RunConfig.from_dict(raw))[EVAL_ACCURACY]
    context, number = sweep
    label = f"{stage}cell {number + 1}/{context.total_cells}"
    print(f"{label}: {' '.join(_cell_overrides())}", flush=True)
    timing = overlap.Timing(Path(HydraConfig.get().sweep.dir), number)  # from here on, the cell takes the machine
    try:
        return _sweep_cell(raw, context, label, timing)
    finally:
        timing.end()


def _sweep_cell(raw: dict[str, Any], context: Any, label: str, timing: overlap.Timing) -> float | None:
    """A sweep's cell: skipped when FINISHED already, predicted here when a dry run, else run in a fresh process."""
    from bench.run.runner import run_experiment
    from bench.run.sweep import finished_cell

    try:
        config = RunConfig.from_dict(raw)
        cell_hash = _hash(config)
        done = None if config.force else finished_cell(context, cell_hash)
        if done:
            print(f"{label} skipped: already FINISHED as run {done} (force=true reruns it)", flush=True)
            return None
        if config.dry_run:  # a prediction: nothing loads and nothing is measured, so no process of its own
            return run_experiment(config, parent_run_id=context.parent_run_id)[EVAL_ACCURACY]
    except Exception as error:  # noqa: BLE001 - a failed cell is a result; the sweep goes on
        return cell_failed(raw, error, context, label)
    return _run_in_fresh_process(raw, context, label, cell_hash=cell_hash, timing=timing)


def run_cell(spec: CellSpec, *, start_metrics: dict[str, float]) -> dict[str, Any]:
    """The cell's run, in its own process: `{"accuracy": ...}`, or `{"failure": kind}` once it is on record."""
    from bench.run.runner import run_experiment
    from bench.run.sweep import SweepContext

    context = SweepContext(**spec.sweep)
    try:
        metrics = run_experiment(RunConfig.from_dict(spec.raw), parent_run_id=context.parent_run_id,
                                 start_metrics=start_metrics)
    except Exception as error:  # noqa: BLE001 - a failed cell is a result; the sweep goes on
        from bench.tracking.tracker import failure_kind

        cell_failed(spec.raw, error, context, spec.label)
        return {"failure": failure_kind(error)}
    return {"accuracy": metrics[EVAL_ACCURACY]}


def cell_failed(raw: dict[str, Any], error: Exception, context: Any, label: str) -> None:
    """Put a failed cell on record (unless its run already is) and say so on stderr; the sweep goes on."""
    from bench.tracking.tracker import failure_kind

    if not getattr(error, "bench_run_id", None):
        _record_failed_cell(raw, error, context)
    print(f"{label} failed ({failure_kind(error)}): {error}", file=sys.stderr, flush=True)


def _hash(config: RunConfig) -> str:
    """The config hash the run will carry: the device and dtypes it will resolve to are part of it."""
    from bench.models.precision import hardware_identity, pick_device

    return config.hash(hardware_identity(config.method, pick_device(config.trainer.device)))


def _cell_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)


def _record_failed_cell(raw: dict[str, Any], error: Exception, context: Any, *, failure: str | None = None,
                        cell_hash: str | None = None) -> None:
    """A cell that failed before its run started (e.g. `method.r=-1`) still gets a FAILED child run.
    `failure`: the kind to record when it is not the error's own (a crashed process); `cell_hash`: the run's
    config hash when the config was valid enough to compute it."""
    from bench.config import flatten
    from bench.techniques import TECHNIQUES
    from bench.tracking.tracker import Tracker
    from bench.tracking.ui_meta import NOTE, failed_note, run_subject, run_title

    values = {k: v for k, v in raw.items() if k not in ("hydra", "tracker", "output_dir", "force")}
    method, model, data = (raw.get(k) or {} for k in ("method", "model", "data"))
    tags = (raw.get("tracker") or {}).get("tags") or {}  # a fair comparison's cell is tagged even when it fails early
    spec = TrackerConfig(uri=context.tracking_uri, experiment=context.experiment, tags=dict(tags))
    name = str(method.get("name"))
    technique = TECHNIQUES.get(name)  # None for a name the config refused
    identity = {"technique": technique.title(method.get("options") or {}) if technique else name,
                "model": model.get("name"), "data": data.get("name"), "seed": raw.get("seed"),
                "rank": method.get("r") if technique and "r" in technique.knobs else None}
    subject = run_subject(**identity)
    with suppress(type(error)), Tracker(spec, run_name=run_title(**identity), parent_run_id=context.parent_run_id,
                                        subject=subject) as tracker:
        tracker.log_params(flatten(values))
        tracker.set_tags({"technique": method.get("name"), "model": model.get("name"), "dataset": data.get("name"),
                          "config_hash": cell_hash or config_hash(values), "sweep_id": context.sweep_id})
        raise error  # leaves the block the way any failed run does: FAILED, with failure and error tags
    if failure:
        ended = failed_note(subject, failure=f"failed ({failure})", error=str(error))
        tracker.set_tags({"failure": failure, NOTE: ended})


def _run_in_fresh_process(raw: dict[str, Any], context: Any, label: str, *, cell_hash: str,
                          timing: overlap.Timing) -> float | None:
    """Run the cell in its own process and read back its result; a process that left none crashed. The run is
    tagged `timing/shared`: whether another cell of the sweep ran while this one did (`bench.run.overlap`)."""
    from hydra.core.hydra_config import HydraConfig

    folder = Path(HydraConfig.get().runtime.output_dir)  # the cell's own, beside its `bench.log`
    folder.mkdir(parents=True, exist_ok=True)
    result = folder / RESULT_FILE
    result.unlink(missing_ok=True)  # a rerun of the sweep in this folder must not read the last one's
    spec = _spec(raw, context, label, result=result)
    (folder / SPEC_FILE).write_text(json.dumps(asdict(spec)))
    pid, returncode = _run_child(folder / SPEC_FILE)
    _tag_timing(context, pid=pid, since=spec.started, shared=timing.end())
    if not result.is_file():
        return _crashed(raw, context, label, pid=pid, returncode=returncode, since=spec.started,
                        cell_hash=cell_hash)
    outcome = json.loads(result.read_text())
    if outcome.get("failure") == "killed":  # the cell alone was interrupted: stop the sweep, as in one process
        raise KeyboardInterrupt(f"{label} was interrupted")
    return outcome.get("accuracy")


def _tag_timing(context: Any, *, pid: int, since: float, shared: bool) -> None:
    """Tag the run the cell's process `pid` started `timing/shared`; a store hiccup is a warning, never a reason to
    stop the sweep (the run then carries no tag: its timing is unknown, not alone)."""
    import mlflow

    from bench.run.sweep import find_cell_run
    from bench.tracking.store import retrying

    try:
        found = find_cell_run(context, pid=pid, since=since)
        if found is not None:
            client = mlflow.MlflowClient(context.tracking_uri)
            retrying(lambda: client.set_tag(found.info.run_id, overlap.SHARED_TAG, str(shared).lower()))
    except Exception as error:  # noqa: BLE001 - the run is on record either way
        print(f"warning: {overlap.SHARED_TAG} was not recorded on the cell's run: {type(error).__name__}: {error}",
              file=sys.stderr, flush=True)


def _spec(raw: dict[str, Any], context: Any, label: str, *, result: Path) -> CellSpec:
    """The cell's spec, stamped with the time now: the child is about to start."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    job_logging, verbose = HydraConfig.get().job_logging, HydraConfig.get().verbose
    return CellSpec(raw=raw, sweep=asdict(context), label=label, started=time.time(), parent_pid=os.getpid(),
                    result=str(result),
                    job_logging=OmegaConf.to_container(job_logging, resolve=True) if job_logging else None,
                    verbose=OmegaConf.to_container(verbose) if OmegaConf.is_config(verbose) else verbose)


def _run_child(spec: Path) -> tuple[int, int]:
    """(pid, exit status) of the cell's process, run to its end. Ctrl-C or SIGTERM while it runs: the child gets
    one SIGINT, time to save its adapter and close its run, then the interrupt goes on up (the sweep stops)."""
    import subprocess

    child = subprocess.Popen([sys.executable, "-m", CELL_MODULE, str(spec)])
    try:
        return child.pid, child.wait()
    except KeyboardInterrupt:
        with _signals_ignored():  # a second Ctrl-C must not abandon the child in its cleanup
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=INTERRUPT_GRACE_S)
            except subprocess.TimeoutExpired:
                print(f"the cell's process {child.pid} did not stop within {INTERRUPT_GRACE_S} s; killed",
                      file=sys.stderr, flush=True)
                child.kill()
                child.wait()
        raise


@contextmanager
def _signals_ignored():
    """SIGINT and SIGTERM ignored for the block (main thread only: elsewhere Python cannot change handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _crashed(raw: dict[str, Any], context: Any, label: str, *, pid: int, returncode: int, since: float,
             cell_hash: str) -> None:
    """The cell's process died without a result (SIGKILL, the OOM killer, a segfault, `os._exit`): its run, if it
    had started one, ends FAILED with `failure=crash`; if not, a FAILED cell is recorded. The sweep goes on."""
    from bench.run.sweep import close_crashed_cell

    error = RuntimeError(f"the cell's process {pid} ended without a result ({_how_it_ended(returncode)})")
    print(f"{label} failed (crash): {error}", file=sys.stderr, flush=True)
    try:
        if not close_crashed_cell(context, pid=pid, since=since, error=str(error)):
            _record_failed_cell(raw, error, context, failure="crash", cell_hash=cell_hash)
    except Exception as store_error:  # noqa: BLE001 - a store hiccup here must not stop the sweep either
        print(f"warning: the crash of {label} was not recorded: {type(store_error).__name__}: {store_error}",
              file=sys.stderr, flush=True)


def _how_it_ended(returncode: int) -> str:
    """`exit code 3`, `signal SIGKILL` (Popen gives a signal as a negative status)."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"
