"""Full FT, LoRA and QLoRA each run through the real CLI and leave a complete MLflow record."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from support import REQUIRED_METRICS, TINY, assert_plan_matches, finished_runs, run_cli

from bench.core.metrics import is_registered


@pytest.fixture(scope="module")
def technique_run(tmp_path_factory: pytest.TempPathFactory):
    """`technique_run(technique)`: (the CLI's result, its store) for one default TINY run of the technique, each
    run once for the module, in a store of its own; the tests below only read what it recorded."""
    done = {}

    def run(technique: str):
        if technique not in done:
            folder = tmp_path_factory.mktemp(f"run-{technique}")
            store = f"sqlite:///{folder / 'mlflow.db'}"
            done[technique] = run_cli(*TINY, f"method={technique}", f"tracker.uri={store}",
                                      f"hydra.run.dir={folder / 'out'}", cwd=folder), store
        return done[technique]

    return run


@pytest.mark.parametrize("technique", ["full", "lora", "qlora"])
def test_each_technique_records_every_metric(technique: str, technique_run) -> None:
    result, store = technique_run(technique)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = finished_runs(store)
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    missing = [m for m in REQUIRED_METRICS if f"metrics.{m}" not in runs.columns or runs[f"metrics.{m}"].isna().any()]
    assert not missing, f"missing metrics: {missing}"
    logged = [c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.")]
    assert [name for name in logged if not is_registered(name)] == []  # each has its definition (bench.core.metrics)
    assert run["tags.technique"] == technique
    for tag in ("model", "dataset", "config_hash", "git_sha", "version/torch", "version/peft", "hw/cpu"):
        assert run[f"tags.{tag}"], tag
    assert run["params.method.name"] == technique and run["params.trainer.max_steps"] == "2"
    assert run["params.deploy.measure"] == "False"  # TINY turns it off: nothing of deploy is measured or logged
    assert not [c for c in runs.columns if c.startswith(("metrics.deploy/", "tags.deploy/"))]
    history = mlflow.MlflowClient(store).get_metric_history(run["run_id"], "train/loss")
    assert [m.step for m in history] == [1, 2]  # one point per optimizer step
    shipped = "adapter" if technique != "full" else "model"
    artifacts = [a.path for a in mlflow.MlflowClient(store).list_artifacts(run["run_id"])]
    assert artifacts == sorted([shipped, "log", "monitor"])  # what ships, the run's log, the monitor's timeline
    assert run["metrics.artifact/adapter_bytes"] > 0
    assert 0 <= run["metrics.eval/majority_baseline"] <= 1
    # the tensor accounting holds every weight where the model does (4-bit state counted with the parameters)
    assert run["metrics.mem/at_peak/params_bytes"] + run["metrics.mem/at_peak/buffers_bytes"] == \
        run["metrics.mem/weights_bytes"]
    categories = [c for c in runs.columns if c.startswith("metrics.mem/at_peak/")]
    assert sum(run[c] for c in categories) == run["metrics.mem/tensor_peak_bytes"]
    assert_plan_matches(run)  # bench plan's prediction, made before training, against this measurement
    # the largest batch met, as a plan must assume it: 8 rows cut at data.max_length=32 (TINY)
    assert (run["metrics.mem/largest_batch_rows"], run["metrics.mem/largest_batch_length"]) == (8, 32)
    # nothing the run needs is first imported inside the measured window (evaluate alone is ~158 MB of RSS);
    # the model build may still import small submodules of packages already loaded
    late = str(run.get("tags.monitor/imported_late") or "").replace(" ", "").split(",")
    assert not {name.split(".")[0] for name in late if name} - {"torch", "transformers", "peft"}, late


def test_full_trains_every_parameter_and_lora_a_sliver(technique_run) -> None:
    stores = []
    for technique in ("full", "lora"):
        result, store = technique_run(technique)
        assert result.returncode == 0, result.stderr[-3000:]
        stores.append(store)
    runs = pd.concat([finished_runs(store) for store in stores]).set_index("tags.technique")
    assert runs.loc["full", "metrics.params/trainable_pct"] == 100.0
    assert runs.loc["full", "metrics.params/trainable"] == runs.loc["full", "metrics.params/total"]
    assert runs.loc["lora", "metrics.params/trainable_pct"] < 5.0
    # bf16 where the CPU has native bf16, else fp32: the tag names the dtype used and the bits follow it
    held = runs.loc["full", "tags.precision/weights"]
    assert held in ("bf16", "fp32")
    assert runs.loc["full", "metrics.mem/weight_bits_per_param"] == {"bf16": 16.0, "fp32": 32.0}[held]


def test_qlora_is_4bit_and_keeps_training_after_evaluation(store: str, tmp_path) -> None:
    """Two epochs with an evaluation between them: the AVX512-BF16 repacking bug would break epoch 2."""
    wide = ["model.architecture.hidden_size=256", "model.architecture.intermediate_size=512"]
    result = run_cli(*TINY, *wide, "method=qlora", "trainer.max_steps=null", "trainer.epochs=2",
                     "data.max_train_samples=32", f"tracker.uri={store}", "tracker.log_model=false",
                     f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = finished_runs(store).iloc[0]
    assert run["status"] == "FINISHED"
    assert run["metrics.mem/weight_bits_per_param"] <= 4.6  # NF4 + double quant is 4.127 plus code tables
    client = mlflow.MlflowClient(store)
    evals = client.get_metric_history(run["run_id"], "eval/accuracy")
    assert [m.step for m in evals] == [4, 8]  # evaluated after epoch 1 and after epoch 2
    losses = client.get_metric_history(run["run_id"], "train/loss")
    assert [m.step for m in losses] == list(range(1, 9))  # epoch 2's steps ran and were recorded
