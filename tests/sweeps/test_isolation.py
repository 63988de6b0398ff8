"""Every sweep cell runs alone, in a fresh process: its own PID with either launcher, memory figures that do not
depend on which cells ran before it, a dying process recorded as a crash, and a Ctrl-C that leaves nothing
running. The faults are real: a process that exits or is killed, a SIGINT sent to the launching process."""

from __future__ import annotations

import math
import os
import signal
import subprocess
from typing import Any, NamedTuple

import mlflow
import pandas
import psutil
import pytest
from support import (
    TINY,
    finished_runs,
    reset_mlflow_globals,
    run_cli,
    run_cli_here,
    start_bench,
    wait_until_training,
)

SMALL = [*TINY, "tracker.log_model=false"]
TECHNIQUES = ("full", "lora", "qlora")
# The memory figures a cell must report as if it had run alone, and how far (relative spread) they may differ
# between the cell run first, the cell run last and a single run. Tensor-level accounting sums the tensors alive
# at the peak: the same for a given config and seed, so 2 % leaves room for bookkeeping noise only. RSS is not
# that reproducible even in fresh processes: over 24 fresh-process runs per technique on the tiny BERT
# (trainer.threads=1), the net peak RSS spread 2.9 % (full, ~58 MiB), 4.8 % (lora, ~43 MiB) and 3.8 % (qlora,
# ~45 MiB), i.e. 1.7-2.2 MiB of allocator and page noise. 10 % is twice the worst of that, and still far below
# what a shared process does to it: there a cell run after another reported 60-80 % less (lora 8-12 MiB).
MEMORY_FIGURES = {
    "mem/tensor_peak_bytes": 0.02,
    "mem/at_peak/params_bytes": 0.02,
    "mem/at_peak/grads_bytes": 0.02,
    "mem/at_peak/optimizer_bytes": 0.02,
    "mem/at_peak/activations_bytes": 0.02,
    "mem/at_peak/temporaries_bytes": 0.02,
    "mem/peak_rss_net_bytes": 0.10,
}


def _sweep_here(*overrides: str, store: str, folder) -> subprocess.CompletedProcess[str]:
    """A sweep launched from this process (Hydra's default launcher); its cells start their own processes."""
    return run_cli_here("-m", *overrides, f"tracker.uri={store}", f"hydra.sweep.dir={folder / 'sweep'}", cwd=folder)


def _runs(store: str):
    """(the sweep's parent run, its children) as rows of the store."""
    runs = finished_runs(store)
    parents = runs[runs["tags.sweep_role"] == "parent"]
    assert len(parents) == 1, runs[["run_id", "tags.sweep_role"]]
    return parents.iloc[0], runs[runs["tags.mlflow.parentRunId"].notna()]


def _assert_one_process_per_cell(store: str, cells: int) -> None:
    parent, children = _runs(store)
    pids = list(children["tags.process/pid"])
    assert len(pids) == cells and set(children["status"]) == {"FINISHED"}, children[["status", "tags.process/pid"]]
    assert len(set(pids)) == cells, pids  # no process ran two cells
    assert parent["tags.process/pid"] not in pids  # and none ran in the launching process
    assert (children["metrics.timing/cell_start_s"] > 0).all()  # what each fresh process cost is on record


class TechniqueRuns(NamedTuple):
    """Each technique run first (forward sweep), last (reverse sweep) and alone."""

    rows: dict[str, dict[str, Any]]  # {technique: {"forward"|"reverse"|"single": its run's row}}
    sweeps: dict[str, str]  # {"forward"|"reverse": the sweep's store}


@pytest.fixture(scope="module")
def technique_runs(tmp_path_factory: pytest.TempPathFactory) -> TechniqueRuns:
    """`method=full,lora,qlora` and `method=qlora,lora,full`, launched from this process, and a single run of each
    technique, each in a store of its own."""
    base = tmp_path_factory.mktemp("techniques")
    rows: dict[str, dict[str, Any]] = {technique: {} for technique in TECHNIQUES}
    stores = {where: f"sqlite:///{base / where / 'mlflow.db'}" for where in ("forward", "reverse", *TECHNIQUES)}
    for where in stores:
        (base / where).mkdir()
    # The forward sweep first: it builds the tiny model that every other run then loads from the cache.
    sweeps = {"forward": _sweep_here(*SMALL, f"method={','.join(TECHNIQUES)}", store=stores["forward"],
                                     folder=base / "forward")}
    # A single run is a process of its own, as a user starts it; the three run beside the reverse sweep.
    singles = {technique: start_bench("run", *SMALL, f"method={technique}", f"tracker.uri={stores[technique]}",
                                      f"hydra.run.dir={base / technique / 'o'}", cwd=base / technique)
               for technique in TECHNIQUES}
    try:
        sweeps["reverse"] = _sweep_here(*SMALL, f"method={','.join(TECHNIQUES[::-1])}", store=stores["reverse"],
                                        folder=base / "reverse")
    finally:
        errors = {technique: process.communicate(timeout=600)[1] for technique, process in singles.items()}
    for order, result in sweeps.items():
        assert result.returncode == 0, result.stderr[-3000:]
        for _, row in _runs(stores[order])[1].iterrows():
            rows[row["tags.technique"]][order] = row
    for technique, process in singles.items():
        assert process.returncode == 0, errors[technique][-3000:]
        rows[technique]["single"] = finished_runs(stores[technique]).iloc[0]
    reset_mlflow_globals()  # the URI `finished_runs` set must not outlive this fixture
    return TechniqueRuns(rows, {order: stores[order] for order in sweeps})


def test_each_cell_runs_in_its_own_process(technique_runs: TechniqueRuns) -> None:
    """Hydra's default launcher calls the cells in the launching process (here, this one): each runs in its own."""
    for store in technique_runs.sweeps.values():
        _assert_one_process_per_cell(store, len(TECHNIQUES))
        assert _runs(store)[0]["tags.process/pid"] == str(os.getpid())  # this process launched the sweep


def test_joblib_workers_start_a_fresh_process_per_cell(store: str, tmp_path) -> None:
    """Three cells on two workers: without a process per cell, one worker would run two of them."""
    result = run_cli("-m", *SMALL, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2,3",
                     f"tracker.uri={store}", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("results: run ") == 3  # each cell's own output comes through
    _assert_one_process_per_cell(store, 3)


@pytest.mark.parametrize("metric", MEMORY_FIGURES)
def test_memory_figures_do_not_depend_on_the_order_of_cells(metric: str, technique_runs: TechniqueRuns) -> None:
    """The issue's acceptance test: `method=full,lora,qlora` and `method=qlora,lora,full` report each technique's
    memory as its single run does."""
    for technique, runs in technique_runs.rows.items():
        values = {where: runs[where].get(f"metrics.{metric}", math.nan) for where in ("forward", "reverse", "single")}
        assert not any(math.isnan(value) for value in values.values()), f"{metric} is not logged ({technique})"
        spread = max(values.values()) - min(values.values())
        assert spread <= MEMORY_FIGURES[metric] * max(abs(v) for v in values.values()), (technique, values)


SITECUSTOMIZE = '''
"""Test fault: the cell whose seed $CRASH_IN_TRAINING names exits in training, the one $KILLED_BEFORE_RUN names is
SIGKILLed before its run starts. Loaded by every interpreter started with this folder on PYTHONPATH."""
import os
import signal

import bench.run.runner

_run_experiment = bench.run.runner.run_experiment


def run_experiment(cfg, **kwargs):
    if str(cfg.seed) == os.environ.get("KILLED_BEFORE_RUN"):
        os.kill(os.getpid(), signal.SIGKILL)
    if str(cfg.seed) == os.environ.get("CRASH_IN_TRAINING"):
        import bench.training.loop

        bench.training.loop.train = lambda **_: os._exit(3)
    return _run_experiment(cfg, **kwargs)


bench.run.runner.run_experiment = run_experiment
'''


def test_a_crashed_cell_is_recorded_and_the_sweep_goes_on(store: str, tmp_path) -> None:
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "sitecustomize.py").write_text(SITECUSTOMIZE)
    result = run_cli("-m", *SMALL, "method=lora", "seed=1,2,3", f"tracker.uri={store}",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
                     env={"PYTHONPATH": os.pathsep.join(filter(None, [str(faults), os.environ.get("PYTHONPATH")])),
                          "CRASH_IN_TRAINING": "1", "KILLED_BEFORE_RUN": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "cell 1/3 failed (crash)" in result.stderr and "cell 2/3 failed (crash)" in result.stderr
    assert "1 finished, 2 failed" in result.stdout
    parent, children = _runs(store)
    cells = children.set_index("params.seed")
    assert cells.loc["3", "status"] == "FINISHED"  # the cell after the crashes ran
    for seed, how in (("1", "exit code 3"), ("2", "signal SIGKILL")):
        assert cells.loc[seed, "status"] == "FAILED" and cells.loc[seed, "tags.failure"] == "crash", seed
        assert how in cells.loc[seed, "tags.error"], cells.loc[seed, "tags.error"]
    # The first crashed in training, in a run of its own (its model was built); the second had started no run.
    assert isinstance(cells.loc["1", "tags.precision/weights"], str)
    assert pandas.isna(cells.loc["2", "tags.precision/weights"])
    assert cells.loc["1", "tags.process/pid"] not in (parent["tags.process/pid"], cells.loc["3", "tags.process/pid"])


def test_sigint_to_the_launching_process_stops_the_cell_and_the_sweep(store: str, tmp_path, start) -> None:
    forever = ["trainer.max_steps=20000", "trainer.epochs=1000", "trainer.log_every=1"]
    process = start("run", "-m", *TINY, *forever, "method=lora", "seed=1,2", f"tracker.uri={store}",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    run_id = wait_until_training(store, process)
    process.send_signal(signal.SIGINT)  # the launching process only, not its cell's
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    client = mlflow.MlflowClient(store)
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["failure"] == "killed"
    assert (tmp_path / "sweep" / "0" / "adapter" / "adapter_config.json").is_file()  # the adapter so far is saved
    parent, children = _runs(store)
    assert parent["status"] == "KILLED" and len(children) == 1  # the second cell never started
    pid = int(run.data.tags["process/pid"])
    assert pid != process.pid
    assert not psutil.pid_exists(pid)  # the launching process waited for its cell's process
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert left == []  # no cell's process is left running
