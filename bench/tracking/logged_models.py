"""A run's shipped forms as MLflow 3 models (LoggedModels): `mlflow.pyfunc.load_model("models:/<model id>")` loads
each, `mlflow.register_model("models:/<model id>", name)` registers it, and each is linked to the run that made it
(its params, and its final metrics, logged again for the model at the run's last step) and names the run's data
sets in its tags.

The model itself is bench.tracking.served_model, logged from code; its files are the form's folder (an adapter, a
full or merged model) and the tokenizer. An adapter's base is named, not copied (as MLflow's own transformers
flavor does for a peft model): loading it needs the base where the run found it (a hub id and revision, or a
folder on this machine).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CODE = Path(__file__).with_name("served_model.py")
TAG_FORM = "bench.form"  # the model's tag naming the form (adapter, model, merged16, merged4)


@dataclass(frozen=True)
class ShippedForm:
    """One form a run ships: its name and folder, and what `served_model` needs to build it."""

    name: str  # adapter, model (full fine-tuning), merged16, merged4
    folder: Path
    config: dict[str, Any]  # served_model's model_config
    requirements: list[str] = field(default_factory=list)  # pip requirements beyond mlflow's own


def log_form(uri: str, run_id: str, form: ShippedForm, *, tokenizer: Path, step: int,
             tags: dict[str, str]) -> str:
    """Log `form` as a pyfunc LoggedModel of the run (its final metrics, at `step`, linked to it); its model id."""
    import mlflow
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    mlflow.set_tracking_uri(uri)
    key = "adapter" if form.config["form"] == "adapter" else "model"
    causal = form.config["task"] == "causal_lm"
    outputs = ([ColSpec("string", "response")] if causal else
               [*(ColSpec("float", f"logit_{label}") for label in form.config["labels"]), ColSpec("string", "label")])
    signature = ModelSignature(inputs=Schema([ColSpec("string", "prompt" if causal else "text")]),
                               outputs=Schema(outputs),
                               params=ParamSchema([ParamSpec("max_new_tokens", "long", 32)]) if causal else None)
    info = Model.log(None, mlflow.pyfunc, name=form.name, run_id=run_id, step=step, python_model=str(CODE),
                     artifacts={key: str(form.folder), "tokenizer": str(tokenizer)}, model_config=form.config,
                     signature=signature, pip_requirements=form.requirements,
                     tags={**tags, TAG_FORM: form.name})
    return info.model_id


def dataset_tags(client: Any, run_id: str) -> dict[str, str]:
    """`dataset/<context>`: `<name> (<digest>)` of each data set the run logged as its input."""
    tags = {}
    for item in client.get_run(run_id).inputs.dataset_inputs:
        context = next((tag.value for tag in item.tags if tag.key == "mlflow.data.context"), None)
        if context:
            tags[f"dataset/{context}"] = f"{item.dataset.name} ({item.dataset.digest})"
    return tags
