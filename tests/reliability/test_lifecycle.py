"""Faults injected into real `bench run`s (processes, where a signal or a second process is the fault): each
leaves an accurate record, none stays RUNNING."""

from __future__ import annotations

import signal

import mlflow
import pytest
import torch
from support import TINY, TINY_CAUSAL, finished_runs, run_cli_here, wait_until_training

from bench.tracking.ui_meta import EXPERIMENT_KIND, TRAINING_KIND

FOREVER = ["trainer.max_steps=20000", "trainer.epochs=1000", "trainer.log_every=1"]  # minutes, unless stopped
LONG = [*TINY, *FOREVER]
SHRUNK = {"classification": TINY, "causal_lm": TINY_CAUSAL}  # both tasks go through the one run skeleton
# What a run may leave in the folder it was started from (here the test's, with the store in it and the run's
# output folder `o`): the store, its artifacts and the outputs. No lock, no scratch file.
KEPT = {"mlflow.db", "mlruns", "o", "o2"}
WRITERS = 8  # runs that start at once on one server store; each costs ~11 s of CPU (a round: 45 s+ on 2 free cores)

# Faults happen for real, in the real training loop, on the 3rd forward pass; runs that need no signal or
# second process go through `bench.cli.main` in this process (`run_cli_here`), with the fault patched in.
FAULTS = {
    "exception": lambda output: _raise(RuntimeError("injected failure in the training step")),
    "nan": lambda output: setattr(output, "loss", output.loss * float("nan")),
    "oom": lambda output: _raise(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")),
}


def _raise(error: BaseException) -> None:
    raise error


def assert_nothing_left_behind(folder) -> None:
    """The folder a run started in holds what the user asked for and nothing else, however the run ended."""
    left = sorted(path.name for path in folder.iterdir() if path.name not in KEPT)
    scratch = sorted(str(path) for path in folder.rglob("*") if path.suffix in (".lock", ".tmp"))
    assert not left and not scratch, (left, scratch)


def _inject(monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    """Every model `bench.models.build.build_model` builds fails with `fault` from its 3rd training forward on."""
    import bench.models.build as methods

    build = methods.build_model

    def faulty_build(**kwargs):
        built = build(**kwargs)
        forward, calls = built.model.forward, [0]

        def faulty_forward(*args, **kw):
            output = forward(*args, **kw)
            calls[0] += 1
            if calls[0] >= 3 and built.model.training:
                FAULTS[fault](output)
            return output

        built.model.forward = faulty_forward
        return built

    monkeypatch.setattr(methods, "build_model", faulty_build)


@pytest.mark.parametrize(("fault", "failure", "task"), [
    ("exception", "error", "classification"), ("nan", "nan", "classification"), ("oom", "oom", "classification"),
    ("exception", "error", "causal_lm")])
def test_fault_in_training_ends_failed_with_metrics_so_far(fault, failure, task, store, tmp_path, ledger,
                                                           monkeypatch) -> None:
    _inject(monkeypatch, fault)
    result = run_cli_here(*SHRUNK[task], "trainer.max_steps=6", f"tracker.uri={store}",
                          f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    stderr = result.stderr
    assert result.returncode != 0
    runs = finished_runs(store)
    ledger(f"{fault} in training ({task})", 1, len(runs))
    run = runs.iloc[0]
    assert run["status"] == "FAILED" and run["tags.failure"] == failure, stderr[-2000:]
    assert run["tags.error"]
    assert run["metrics.params/trainable"] > 0  # what was logged before the fault is kept
    timeline = [a.path for a in mlflow.MlflowClient(store).list_artifacts(run["run_id"], "monitor")]
    assert timeline == ["monitor/timeline.csv"]  # how memory got to the fault
    history = mlflow.MlflowClient(store).get_metric_history(run["run_id"], "train/loss")
    if fault == "nan":
        assert len(history) >= 3  # the losses up to and including the first NaN are on record
    assert_nothing_left_behind(tmp_path)


@pytest.mark.parametrize(("signum", "task"), [(signal.SIGINT, "classification"), (signal.SIGTERM, "classification"),
                                            (signal.SIGINT, "causal_lm")])
def test_signal_ends_the_run_killed(signum, task, store, tmp_path, ledger, start) -> None:
    process = start("run", *SHRUNK[task], *FOREVER, "method=lora", f"tracker.uri={store}",
                     f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    run_id = wait_until_training(store, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    run = mlflow.MlflowClient(store).get_run(run_id)
    ledger(f"{signal.Signals(signum).name} mid-training ({task})", 1, len(finished_runs(store)))
    assert run.info.status == "KILLED"
    assert run.data.tags["failure"] == "killed"
    assert (tmp_path / "o" / "adapter" / "adapter_config.json").is_file()  # the adapter so far is saved
    assert "train/loss" in run.data.metrics
    assert_nothing_left_behind(tmp_path)


def test_sigkill_leaves_no_run_running(store, tmp_path, ledger, start) -> None:
    """SIGKILL cannot be caught: the next run on this host closes the orphan as KILLED."""
    process = start("run", *LONG, f"tracker.uri={store}", f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    run_id = wait_until_training(store, process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert mlflow.MlflowClient(store).get_run(run_id).info.status == "RUNNING"
    after = run_cli_here(*TINY, f"tracker.uri={store}", f"hydra.run.dir={tmp_path / 'o2'}", cwd=tmp_path)
    assert after.returncode == 0, after.stderr[-2000:]
    runs = finished_runs(store)
    ledger("SIGKILL mid-training", 2, len(runs))
    assert "RUNNING" not in set(runs["status"])
    killed = mlflow.MlflowClient(store).get_run(run_id)
    assert killed.info.status == "KILLED" and killed.data.tags["failure"] == "killed"


def test_four_writers_on_one_new_sqlite_store(store, tmp_path, ledger, start) -> None:
    """Four processes create and write one fresh SQLite store at once; every run is recorded."""
    processes = [start("run", *TINY, f"seed={seed}", f"tracker.uri={store}", f"hydra.run.dir={tmp_path / str(seed)}",
                        cwd=tmp_path) for seed in range(4)]
    errors = [p.communicate(timeout=600)[1] for p in processes]
    assert all(p.returncode == 0 for p in processes), [e[-1500:] for e in errors]
    runs = finished_runs(store)
    ledger("4 concurrent writers, new SQLite store", 4, len(runs))
    assert sorted(runs["params.seed"]) == ["0", "1", "2", "3"]
    assert set(runs["status"]) == {"FINISHED"}


def test_writers_starting_together_on_a_server_store(mlflow_server, tmp_path, ledger, start) -> None:
    """Several sweeps launched at once against one `mlflow server`: WRITERS runs start together, twice, and every
    one is recorded FINISHED. First on a new experiment (they all create it, tag its kind, log the same dataset),
    then on one that exists without a kind (they all tag it at the same moment)."""
    client = mlflow.MlflowClient(mlflow_server)
    client.create_experiment("untagged")
    for experiment in ("new", "untagged"):
        processes = [start("run", *TINY, f"seed={seed}", f"tracker.uri={mlflow_server}",
                           f"tracker.experiment={experiment}", f"hydra.run.dir={tmp_path / experiment / str(seed)}",
                           cwd=tmp_path) for seed in range(WRITERS)]
        errors = [process.communicate(timeout=600)[1] for process in processes]
        failed = [error[-1500:] for process, error in zip(processes, errors, strict=True) if process.returncode]
        assert not failed, failed
        runs = finished_runs(mlflow_server, experiment)
        ledger(f"{WRITERS} writers starting together, server store, {experiment} experiment", WRITERS, len(runs))
        assert sorted(runs["params.seed"], key=int) == [str(seed) for seed in range(WRITERS)]
        assert set(runs["status"]) == {"FINISHED"}
        assert client.get_experiment_by_name(experiment).tags[EXPERIMENT_KIND] == TRAINING_KIND


def test_secrets_never_reach_the_store(store, tmp_path, ledger) -> None:
    """A hub token in the config and in the environment: neither appears in params, tags or run names."""
    secret = "hf_SeCrEtVaLuE1234567"
    result = run_cli_here(*TINY, f"tracker.uri={store}", f"model.token={secret}", f"tracker.run_name=run-{secret}",
                          f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path, env={"HF_TOKEN": secret})
    assert result.returncode == 0, result.stderr[-2000:]
    runs = finished_runs(store)
    ledger("secret in config and environment", 1, len(runs))
    assert secret not in runs.astype(str).to_csv()
    assert runs.iloc[0]["params.model.token"] == "***"


def test_allow_nan_trains_on(store, tmp_path, ledger, monkeypatch) -> None:
    _inject(monkeypatch, "nan")
    result = run_cli_here(*TINY, "trainer.max_steps=6", "trainer.allow_nan=true", f"tracker.uri={store}",
                          f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = finished_runs(store)
    ledger("nan in training, allow_nan=true", 1, len(runs))
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    history = mlflow.MlflowClient(store).get_metric_history(run["run_id"], "train/loss")
    assert len(history) == 6  # all six steps ran; the NaN losses are on record
    assert_nothing_left_behind(tmp_path)
