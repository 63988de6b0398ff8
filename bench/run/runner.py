"""One benchmark run, the same skeleton for every task and technique:

    checks (in seconds, before anything loads) → data → tokenizer → batches → imports
    → [monitor: build the technique → train] → measure → check → ship → record

The task (`bench.tasks.base`) supplies the data, the metrics and the evaluation; the technique (`bench.models.build`)
supplies the model; everything else happens here once. However training ends, the monitor's timeline is
uploaded; on Ctrl-C or SIGTERM the adapter trained so far is saved before the run closes KILLED.
"""

from __future__ import annotations

import importlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import ConfigError, RunConfig
from bench.core.paths import create_output_folder
from bench.models.load import ModelLocation
from bench.models.shipping import save_initial_adapter, ship
from bench.plan.in_run import plan_before_training
from bench.tasks.base import Task, TaskData

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

    from bench.tracking.tracker import Tracker


def task_for(cfg: RunConfig) -> Task:
    """The task `cfg.task` names, set up with the run's config."""
    if cfg.task == "causal_lm":
        from bench.tasks.causal.task import CausalTask

        return CausalTask(cfg)
    from bench.tasks.classification import ClassificationTask

    return ClassificationTask(cfg)


def run_experiment(cfg: RunConfig, *, parent_run_id: str | None = None,
                   start_metrics: dict[str, float] | None = None) -> dict[str, float]:
    """Run `cfg` end to end and return the metrics it logged; the MLflow run records everything.
    `start_metrics`: what the caller measured before the run began (a sweep cell's process start), logged first."""
    from bench.distributed.ranks import check_strategy, needs_launch, open_tracker
    from bench.models.build import check_method_fits, check_method_supported
    from bench.models.load import resolve_location
    from bench.models.precision import pick_device
    from bench.run import phases
    from bench.run.console import keep_log, log_file, log_line
    from bench.tracking.ui_meta import result_note, run_subject, run_title, ui_address, ui_link, view_line
    from bench.training.levers import check_trainer_supported

    phases.start()
    # Everything that can be checked without loading weights or data is checked here, in a second.
    device = pick_device(cfg.trainer.device)
    check_method_supported(cfg.method, device, cfg.task)
    check_trainer_supported(cfg.trainer, device)
    check_strategy(cfg, device)
    location = resolve_location(cfg.model)
    check_method_fits(cfg.method, spec=cfg.model, location=location, task=cfg.task, max_length=cfg.data.max_length)
    if not location.has_weights and not cfg.dry_run:
        raise ConfigError(f"model={cfg.model.name} ships its config only, for `bench plan` and dry_run=true; to "
                          "train it, give its weights: model.path=<folder> or a hub id (model=causal-hub "
                          "model.hub_id=...)")
    if cfg.dry_run:
        from bench.plan.dry_run import dry_run

        return dry_run(cfg, device=device)
    output_dir = create_output_folder(cfg.output_dir, key="output_dir")
    task = task_for(cfg)
    identity = {"technique": cfg.method.title, "model": cfg.model.name, "data": cfg.data.name, "seed": cfg.seed,
                "rank": cfg.method.rank}
    run_name = cfg.tracker.run_name or run_title(**identity)  # `lora r=8 · minilm · tweets · s42`
    subject = run_subject(**identity)
    if needs_launch(cfg.trainer):  # the run's processes, started through torchrun; they come back here as ranks
        from bench.distributed.launch import launch

        return launch(cfg, nproc=cfg.trainer.nproc, output_dir=output_dir, subject=subject,
                      parent_run_id=parent_run_id, start_metrics=start_metrics)
    # rank 0 alone records a distributed run (the other ranks' tracker does nothing): one MLflow run
    with open_tracker(cfg.tracker, run_name=run_name, parent_run_id=parent_run_id, subject=subject) as tracker:
        from bench.distributed.ranks import announce

        announce(tracker.run_id)
        tracker.log(start_metrics or {})
        try:
            metrics = _run_tracked(cfg, task, tracker=tracker, device=device, location=location,
                                   output_dir=output_dir)
        finally:  # however the run ends, what the libraries said during it is kept with it
            keep_log(tracker)
        tracker.describe(result_note(subject, metrics))  # the UI's description: the headline result
    if not tracker.run_id:  # a rank other than 0
        return {"eval/accuracy": math.nan, **metrics}
    page = ui_link(tracker.experiment_id, tracker.run_id, address=ui_address(tracker.uri))
    print(f"results: run {tracker.run_id} '{run_name}' in experiment '{cfg.tracker.experiment}' at {tracker.uri} "
          f"({task.result_line(metrics)})\n{view_line(tracker.uri, page)}")
    print(phases.line())
    if parent_run_id is None and (line := log_line(log_file())):  # a sweep names its cells' logs once, at its start
        print(line)
    return {"eval/accuracy": math.nan, **metrics}  # a sweep cell returns the accuracy; a causal LM may have none


def _run_tracked(cfg: RunConfig, task: Task, *, tracker: Tracker, device: torch.device, location: ModelLocation,
                 output_dir: Path) -> dict[str, float]:
    import torch
    from transformers import set_seed

    from bench.distributed.ranks import RankRun
    from bench.models.precision import hardware_identity
    from bench.tracking.provenance import git_sha, hardware, package_versions

    ranks = RankRun.start(cfg.trainer, device)  # a rank of a distributed run joins its group, on its own device
    device = ranks.device
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    tracker.log_params(cfg.flat())
    config_hash = cfg.hash(hardware_identity(cfg.method, device))
    tracker.set_tags({"technique": cfg.method.name, "model": cfg.model.name, "dataset": cfg.data.name,
                      "config_hash": config_hash, "git_sha": git_sha(), **package_versions(), **hardware(device)})
    set_seed(cfg.seed)
    prepared = _prepare(cfg, task, tracker=tracker, device=device, location=location)
    return _train_and_measure(cfg, task, prepared, tracker=tracker, device=device, output_dir=output_dir,
                              ranks=ranks)


@dataclass(frozen=True)
class Prepared:
    """What the run knows before the model loads."""

    data: TaskData
    location: ModelLocation  # a folder or hub id (a tiny model is materialized by now)
    model_type: str
    plan: Any  # bench.plan.engine.MemoryPlan, the prediction; None where planning failed (tag `plan/error`)
    config: PretrainedConfig | None = None  # the model's transformers config


def _prepare(cfg: RunConfig, task: Task, *, tracker: Tracker, device: torch.device,
             location: ModelLocation) -> Prepared:
    """Everything before the model loads: the data, the tokenizer, the context check, the memory prediction,
    the batches and the imports. Done before the monitor's baseline, so its net peaks are the model's and the
    training's alone (peft alone is ~180 MB of RSS)."""
    from bench.models.load import check_context, load_tokenizer, materialize_tiny, model_config
    from bench.run.phases import phase, quick_run_note

    task.check_model(cfg.model, location)
    with phase("data"):
        data = task.load_data()
        tracker.log(data.metrics)
        _log_inputs(cfg, task, data, tracker=tracker)
    if note := quick_run_note(cfg, train_rows=int(data.metrics["data/train_rows"]),
                              test_rows=int(data.metrics["data/test_rows"])):
        print(note, flush=True)
    tokenizer = load_tokenizer(cfg.model, location)
    if location.is_tiny:
        location = materialize_tiny(cfg.model, tokenizer=tokenizer, labels=data.head_labels, seed=cfg.seed)
    config = model_config(cfg.model, location, data.head_labels)
    check_context(cfg.data.max_length, model_limit=getattr(config, "max_position_embeddings", None),
                  tokenizer=tokenizer, model_name=cfg.model.name)
    with phase("plan"):
        plan = plan_before_training(cfg, config=config, device=device, tracker=tracker)  # before any weight loads
    task.make_batches(data, tokenizer)
    tracker.set_tags(data.tags)
    with phase("imports"):
        _import_before_baseline(cfg, task, config)
    return Prepared(data, location, config.model_type, plan, config)


def _log_inputs(cfg: RunConfig, task: Task, data: TaskData, *, tracker: Tracker) -> None:
    """The splits as MLflow dataset inputs (a digest, schema and row count each, not the rows), for the UI's
    Dataset column; like the plan, never a reason to fail the run: an error is the tag `inputs/error`."""
    from bench.tracking.datasets import dataset_inputs

    if not tracker.run_id:  # a rank other than 0 records nothing
        return
    try:
        tracker.log_inputs(dataset_inputs(task.input_frames(data), cfg.data))
    except Exception as error:  # noqa: BLE001 - data MLflow cannot describe still trains and is measured
        tracker.set_tags({"inputs/error": f"{type(error).__name__}: {error}"[:1000]})


def _import_before_baseline(cfg: RunConfig, task: Task, config: PretrainedConfig) -> None:
    """Import now everything the run will import, so no import lands in the measured window (`evaluate`
    alone is ~158 MB of RSS): the model's class, the technique's libraries, the optimizer, the task's metrics.
    The monitor tags whatever still arrives late (`monitor/imported_late`)."""
    from transformers.models.auto import modeling_auto

    classes = (modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING if cfg.task == "causal_lm"
               else modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING)
    classes[type(config)]  # noqa: B018 - indexing the lazy mapping imports the model's module
    libraries = ["optimi", "tqdm.auto", "transformers.optimization", *(["peft"] if cfg.method.uses_adapter else []),
                 *([cfg.method.technique.package] if cfg.method.technique.package else [])]
    for library in libraries:
        importlib.import_module(library)
    task.load_libraries()


def _train_and_measure(cfg: RunConfig, task: Task, prepared: Prepared, *, tracker: Tracker, device: torch.device,
                       output_dir: Path, ranks: Any) -> dict[str, float]:
    """Build the technique's model and train it under the monitor, then finish the run (`bench.run.finish`)."""
    from bench.measure.monitor import Monitor
    from bench.measure.monitor.results import upload_timeline
    from bench.models.footprint import held_outside_parameters
    from bench.run.finish import Trained, finish
    from bench.run.phases import mark_setup_done, phase

    data = prepared.data
    monitor = Monitor.for_device(device, cfg.monitor, timeline_dir=output_dir / ranks.folder("monitor"),
                                 static_tensors=held_outside_parameters)
    try:
        with monitor:
            mark_setup_done()
            with phase("model"):
                built, static = _build(cfg, tracker=tracker, location=prepared.location,
                                       model_type=prepared.model_type, labels=data.head_labels or [], device=device)
            before = task.after_build(built.model, data, device=device, autocast_dtype=built.compute_dtype)
            tracker.log(before)
            tracker.set_tags({"timing/train_start_ms": int(time.time() * 1000)})  # gap between sweep cells
            monitor.mark_training()
            with phase("train"):
                result = _train(cfg, task, built, data, tracker=tracker, device=device, output_dir=output_dir,
                                ranks=ranks, monitor=monitor)
    finally:  # an OOM or NaN run keeps its timeline too: it shows how memory got there
        upload_timeline(monitor, tracker)
    trained = Trained(built, static, before, result, monitor)
    if ranks.distributed:  # every rank's figures to rank 0, which goes on alone, on a plain model
        from bench.distributed.ranks import NullTracker

        trained.built, trained.rank_figures = ranks.finish(
            built, result=result, monitor=monitor, rebuild=lambda: _build(
                cfg, tracker=NullTracker(), location=prepared.location, model_type=prepared.model_type,
                labels=data.head_labels or [], device=device)[0])
        if trained.built is None:
            return {}
    return finish(cfg, task, prepared, trained, tracker=tracker, device=device, output_dir=output_dir, ranks=ranks)


def _train(cfg: RunConfig, task: Task, built: Any, data: TaskData, *, tracker: Tracker, device: torch.device,
           output_dir: Path, ranks: Any, monitor: Any) -> Any:
    """The one training loop on the model as the ranks wrap it (DDP, FSDP); on Ctrl-C or SIGTERM the adapter
    trained so far is saved before the run closes KILLED."""
    from bench.training.loop import train

    model, train_loader = ranks.prepare(built.model, data.train_loader, seed=cfg.seed)
    try:
        return train(model=model, train_loader=train_loader, eval_loader=data.eval_data, trainer=cfg.trainer,
                     device=device, autocast_dtype=built.compute_dtype, log=tracker.log,
                     desc=f"{cfg.method.title} {cfg.model.name}", hooks=monitor,
                     warmup_steps=cfg.monitor.warmup_steps, lr_by_module=built.rates(cfg.trainer.lr),
                     evaluate=task.evaluate)
    except KeyboardInterrupt:
        if cfg.method.uses_adapter and ranks.ships_interrupted:
            ship(built.model, output_dir=output_dir, uses_adapter=True, tracker=tracker, upload=cfg.tracker.log_model)
        raise


def _build(cfg: RunConfig, *, tracker: Tracker, location: ModelLocation, model_type: str, labels: list[str],
           device: torch.device) -> tuple[Any, dict[str, float]]:
    """Load the model the technique needs; log its precision tags and static sizes."""
    from bench.models.build import build_model
    from bench.models.footprint import (
        base_weight_bits_per_param,
        model_bits_per_param,
        parameter_counts,
        trainable_bytes,
        weights_bytes,
    )
    from bench.models.precision import dtype_name

    built = build_model(method=cfg.method, spec=cfg.model, location=location, model_type=model_type,
                        labels=labels, device=device, task=cfg.task)
    tracker.set_tags({"precision/weights": dtype_name(built.weights_dtype),
                      "precision/compute": dtype_name(built.compute_dtype), "architecture": model_type,
                      "lora/target_modules": built.target_modules, "head_modules": built.head_modules,
                      "base": cfg.method.technique.base, "also_trained": built.also_trained})
    static = {**parameter_counts(built.model), "mem/weights_bytes": weights_bytes(built.model),
              "mem/trainable_bytes": trainable_bytes(built.model),
              "mem/weight_bits_per_param": base_weight_bits_per_param(built.model),
              "mem/model_bits_per_param": model_bits_per_param(built.model), **built.init_metrics}
    tracker.log(static)
    if cfg.method.technique.converted_on_save and tracker.run_id:  # rank 0 alone writes the run's files
        save_initial_adapter(built.model, Path(cfg.output_dir))
    return built, static
