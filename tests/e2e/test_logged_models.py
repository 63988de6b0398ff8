"""A run's shipped forms are MLflow models: loaded back with `mlflow.pyfunc.load_model`, the adapter gives the logits
the trained model gave, the merged form and full fine-tuning's weights load too, the registry registers them, and
`tracker.log_model=false` logs none."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
import torch
from support import TINY, finished_runs, run_cli_here

TEXTS = ["what a lovely morning", "this is the worst service ever", "the bus comes at nine", "meh"]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory):
    """A LoRA run with its deployment step (so a merged form exists), and the logits its trained model gave on TEXTS
    just before its models were logged, in this process."""
    import bench.run.runner as runner
    import bench.run.shipped_models as shipped

    folder = tmp_path_factory.mktemp("logged-models")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    seen = {}
    original = shipped.log_shipped_models

    def watching(cfg, tracker, built, **kwargs):
        from bench.models.load import load_tokenizer, resolve_location

        tokenizer = load_tokenizer(cfg.model, resolve_location(cfg.model))  # as the run loaded it
        encoded = tokenizer(TEXTS, truncation=True, max_length=cfg.data.max_length, padding=True, return_tensors="pt")
        built.model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=built.compute_dtype,
                                             enabled=built.compute_dtype != torch.float32):
            seen["logits"] = built.model(**encoded).logits.float()
        seen["labels"] = kwargs["labels"]
        return original(cfg, tracker, built, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "log_shipped_models", watching, raising=False)
        patch.setattr(shipped, "log_shipped_models", watching)
        result = run_cli_here(*TINY, "method=lora", "deploy.measure=true", "deploy.max_seconds=0.05",
                              "deploy.min_repeats=2", "deploy.load_repeats=1", f"tracker.uri={store}",
                              f"hydra.run.dir={folder / 'out'}", cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return store, finished_runs(store).iloc[0], seen


def test_the_logged_adapter_loads_back_and_gives_the_trained_logits(logged) -> None:
    store, run, seen = logged
    mlflow.set_tracking_uri(store)
    model_id = run["tags.model/adapter"]
    model = mlflow.MlflowClient(store).get_logged_model(model_id)
    assert model.source_run_id == run["run_id"] and model.name == "adapter"
    linked = {metric.key for metric in model.metrics}
    assert {"test/accuracy", "eval/accuracy", "mem/tensor_peak_bytes"} <= linked  # the run's final figures
    assert model.tags["dataset/test"].startswith("tweets-test (")  # and the data sets it was scored on
    predicted = mlflow.pyfunc.load_model(f"models:/{model_id}").predict(pd.DataFrame({"text": TEXTS}))
    logits = torch.tensor(predicted[[f"logit_{label}" for label in seen["labels"]]].to_numpy())
    assert torch.equal(logits, seen["logits"]), (logits, seen["logits"])
    assert list(predicted["label"]) == [seen["labels"][i] for i in seen["logits"].argmax(-1).tolist()]


def test_the_merged_form_is_a_model_too_and_registers(logged) -> None:
    store, run, seen = logged
    mlflow.set_tracking_uri(store)
    merged = mlflow.pyfunc.load_model(f"models:/{run['tags.model/merged16']}")
    logits = torch.tensor(merged.predict(pd.DataFrame({"text": TEXTS}))[[f"logit_{x}" for x in seen["labels"]]]
                          .to_numpy())
    assert (logits - seen["logits"]).abs().max() < 0.05  # merging into 16-bit weights rounds, nothing more
    version = mlflow.register_model(f"models:/{run['tags.model/adapter']}", "bench-lora")
    assert int(version.version) == 1 and mlflow.MlflowClient(store).get_registered_model("bench-lora").name


def test_full_fine_tuning_logs_its_weights_and_log_model_false_logs_nothing(tmp_path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for technique, log_model in (("full", "true"), ("lora", "false")):
        result = run_cli_here(*TINY, f"method={technique}", f"tracker.log_model={log_model}", f"tracker.uri={store}",
                              f"hydra.run.dir={tmp_path / technique}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    runs = finished_runs(store).set_index("tags.technique")
    assert "tags.model/model" in runs and not pd.isna(runs.loc["full", "tags.model/model"])
    assert pd.isna(runs.loc["lora"].get("tags.model/adapter"))
    client = mlflow.MlflowClient(store)
    models = client.search_logged_models(experiment_ids=[str(runs.loc["full", "experiment_id"])])
    assert [(m.name, m.source_run_id) for m in models] == [("model", runs.loc["full", "run_id"])]
    mlflow.set_tracking_uri(store)
    full = mlflow.pyfunc.load_model(f"models:/{models[0].model_id}").predict(pd.DataFrame({"text": TEXTS}))
    assert len(full) == len(TEXTS) and set(full["label"]) <= {"negative", "neutral", "positive"}
