"""The run's shipped forms logged as MLflow models (`tracker.log_model`, on by default): the adapter (or full fine-
tuning's weights) and the merged forms the deployment step measured (`merged16`, and `merged4` on a 4-bit base).

Each is a pyfunc LoggedModel of the run (bench.tracking.logged_models); its id is the run's tag `model/<form>`.
QA-LoRA's HQQ base has no `from_pretrained` path, so its adapter could not be loaded back: it stays a run artifact
and the run says so (tag `model/skipped`). Logging a model never fails a run that trained: an error is the tag
`model/error`.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import RunConfig

if TYPE_CHECKING:
    import torch

    from bench.models.load import ModelLocation
    from bench.tracking.logged_models import ShippedForm
    from bench.tracking.tracker import Tracker

MERGED = ("merged16", "merged4")  # the deployment step's merged forms, in output_dir/deploy/


def keeping_merged_forms(cfg: RunConfig) -> RunConfig:
    """The config the deployment step runs with: its merged forms stay on disk until they are logged as models."""
    if not cfg.tracker.log_model or cfg.deploy.keep:
        return cfg
    return dataclasses.replace(cfg, deploy=dataclasses.replace(cfg.deploy, keep=True))


def log_shipped_models(cfg: RunConfig, tracker: Tracker, built: Any, *, location: ModelLocation, labels: list[str],
                       output_dir: Path, step: int) -> None:
    """Log each shipped form as an MLflow model of the run; the merged forms' folders go afterwards unless
    `deploy.keep`."""
    try:
        if cfg.tracker.log_model and tracker.run_id:
            _log_all(cfg, tracker, built, location=location, labels=labels, output_dir=output_dir, step=step)
    except Exception as error:  # noqa: BLE001 - the run's figures stand; the files are still its artifacts
        print(f"warning: the run's models were not logged to MLflow ({type(error).__name__}: {error})",
              file=sys.stderr, flush=True)
        tracker.set_tags({"model/error": f"{type(error).__name__}: {error}"[:500]})
    finally:
        if not cfg.deploy.keep:
            shutil.rmtree(output_dir / "deploy", ignore_errors=True)


def _log_all(cfg: RunConfig, tracker: Tracker, built: Any, *, location: ModelLocation, labels: list[str],
             output_dir: Path, step: int) -> None:
    from bench.models.load import load_tokenizer, resolve_location
    from bench.tracking.logged_models import dataset_tags, log_form

    if cfg.method.technique.base == "int4-affine":
        tracker.set_tags({"model/skipped": "QA-LoRA's HQQ base cannot be loaded back from a saved folder: its "
                                           "adapter is the run's artifact adapter/"})
        return
    tokenizer = output_dir / "tokenizer"
    load_tokenizer(cfg.model, resolve_location(cfg.model)).save_pretrained(tokenizer)  # as the run loaded it
    tags = dataset_tags(tracker.client, tracker.run_id)
    logged = {}
    for form in shipped_forms(cfg, built, location=location, labels=labels, output_dir=output_dir):
        logged[f"model/{form.name}"] = log_form(tracker.uri, tracker.run_id, form, tokenizer=tokenizer, step=step,
                                                tags=tags)
    tracker.set_tags(logged)


def shipped_forms(cfg: RunConfig, built: Any, *, location: ModelLocation, labels: list[str],
                  output_dir: Path) -> list[ShippedForm]:
    """The forms of this run, each with what loading it back needs."""
    from bench.tracking.logged_models import ShippedForm

    technique = cfg.method.technique
    common = {"task": cfg.task, "labels": labels, "max_length": cfg.data.max_length,
              "autocast_dtype": _name(built.compute_dtype)}
    requirements = _requirements(quantized=technique.quantized)
    if technique.uses_adapter:
        first = ShippedForm("adapter", output_dir / "adapter", {
            **common, "form": "adapter", "base": str(location.source), "base_revision": cfg.model.revision,
            "quantization": _quantization(built.model),
            "dtype": _name(built.compute_dtype if technique.quantized else built.weights_dtype)}, requirements)
    else:
        first = ShippedForm("model", output_dir / "model", {**common, "form": "model",
                                                            "dtype": _name(built.weights_dtype)}, requirements)
    merged = [ShippedForm(name, output_dir / "deploy" / name, {**common, "form": "model",
                                                               "dtype": _name(built.compute_dtype)}, requirements)
              for name in MERGED if (output_dir / "deploy" / name).is_dir()]
    return [first, *merged]


def _quantization(model: Any) -> dict[str, Any] | None:
    """The bitsandbytes config a 4-bit base was loaded with (transformers keeps it on the model's config)."""
    import json

    found = getattr(getattr(model, "config", None), "quantization_config", None)
    return json.loads(found.to_json_string()) if hasattr(found, "to_json_string") else found  # enums as text


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _requirements(*, quantized: bool) -> list[str]:
    """What loading the model needs, pinned to the versions that trained it (local builds, `+cpu`, left out)."""
    from importlib.metadata import version

    names = ["torch", "transformers", "peft", "pandas", *(["bitsandbytes"] if quantized else [])]
    return [f"{name}=={version(name).split('+')[0]}" for name in names]
