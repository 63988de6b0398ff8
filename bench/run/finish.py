"""A run after its training loop: the test split scored once, the figures measured against the plan, what the
technique checks, the shipped forms saved, what serving them costs, the final metrics recorded and the forms logged
as MLflow models. Everything here is outside the training figures: the monitor has stopped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import RunConfig
from bench.models.shipping import ship
from bench.plan.in_run import plan_at_largest_batch
from bench.tasks.base import Task

if TYPE_CHECKING:
    import torch

    from bench.run.runner import Prepared
    from bench.tracking.tracker import Tracker


@dataclass
class Trained:
    """What training left: the built model, its static sizes, the figures logged before training, the loop's result
    and the monitor that watched it."""

    built: Any  # bench.models.build.BuiltModel
    static: dict[str, float]
    before: dict[str, float]
    result: Any  # bench.training.loop.TrainResult
    monitor: Any  # bench.measure.monitor.Monitor
    rank_figures: Any = None  # a distributed run's per-rank figures, gathered on rank 0


def finish(cfg: RunConfig, task: Task, prepared: Prepared, trained: Trained, *, tracker: Tracker,
           device: torch.device, output_dir: Path, ranks: Any) -> dict[str, float]:
    """Test, measure, check, ship, deploy, record; returns every final figure."""
    from bench.run import phases
    from bench.run.shipped_models import log_shipped_models

    built, result, data = trained.built, trained.result, prepared.data
    measure = {"device": device, "autocast_dtype": built.compute_dtype}
    after, tested = _test(task, trained, data, tracker=tracker, measure=measure)
    measured = _measured(cfg, task, prepared, trained, tracker=tracker, device=device, ranks=ranks, measure=measure)
    with phases.phase("ship"):
        shipped = ship(built.model, output_dir=output_dir, uses_adapter=cfg.method.uses_adapter, tracker=tracker,
                       upload=cfg.tracker.log_model)
    deployed = _deploy(cfg, task, prepared, built, tracker=tracker, device=device, output_dir=output_dir,
                       tested=tested)
    final = {**trained.static, **measured, **result.final_eval, **trained.before, **after, **tested,
             "artifact/adapter_bytes": shipped, **data.metrics, **deployed}
    tracker.log({k: v for k, v in final.items() if k not in trained.static and not k.startswith(("eval/", "test/"))},
                result.steps)
    tracker.flush()  # every final figure is in the store before the models link to them
    with phases.phase("models"):
        log_shipped_models(cfg, tracker, built, location=prepared.location, labels=data.head_labels or [],
                           output_dir=output_dir, step=result.steps)
    tracker.log(phases.metrics(), result.steps)
    return final


def _test(task: Task, trained: Trained, data: Any, *, tracker: Tracker,
          measure: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """What the task measures after training (a causal LM's forgetting), then the test split, once, after every
    choice was made on validation."""
    from bench.run.phases import announce, phase

    with phase("test"):
        announce(f"test: scoring the {int(data.metrics.get('data/test_rows', 0)):,} rows of the test split")
        after = task.after_training(trained.built.model, data, trained.before, **measure)
        tracker.log(after, trained.result.steps)
        tested = task.evaluate_test(trained.built.model, data, **measure)
        tracker.log(tested, trained.result.steps)
    return after, tested


def _measured(cfg: RunConfig, task: Task, prepared: Prepared, trained: Trained, *, tracker: Tracker,
              device: torch.device, ranks: Any, measure: dict[str, Any]) -> dict[str, float]:
    """The monitor's figures against the plan at the largest batch the run met (every rank's, on rank 0), and what
    the technique checks after training (QA-LoRA's merge), which is not part of training's cost."""
    from bench.measure.monitor.results import run_metrics

    monitor = trained.monitor
    tensor_figures = monitor.tensors.metrics() if monitor.tensors is not None else {}
    met = plan_at_largest_batch(cfg, prepared.plan, tensor_figures, config=prepared.config, device=device)
    measured, tags = run_metrics(result=trained.result, monitor=monitor, plan=met)
    if ranks.distributed:
        measured, tags = ranks.run_figures(trained.rank_figures, measured, tags, plan=met)
    tracker.set_tags(tags)
    measured.update(cfg.method.technique.after_training(cfg.method, trained.built.model,
                                                        lambda: task.sample_batch(prepared.data), **measure))
    return measured


def _deploy(cfg: RunConfig, task: Task, prepared: Prepared, built: Any, *, tracker: Tracker, device: torch.device,
            output_dir: Path, tested: dict[str, float]) -> dict[str, float]:
    """What serving each shipped form costs (`deploy.measure`), after shipping, outside the training figures."""
    if not cfg.deploy.measure:
        return {}
    from bench.measure.deploy.measure import deploy_after_training
    from bench.run.phases import announce, phase
    from bench.run.shipped_models import keeping_merged_forms

    with phase("deploy"):
        announce("deploy: each form the model ships in, loaded, scored on the test split and timed serving")
        deployed, deploy_tags = deploy_after_training(keeping_merged_forms(cfg), task, prepared.data, built,
                                                      location=prepared.location, device=device,
                                                      output_dir=output_dir, tested=tested)
    tracker.set_tags(deploy_tags)
    return deployed
