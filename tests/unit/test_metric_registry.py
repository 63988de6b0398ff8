"""bench.core.metrics: one well-formed definition per metric, exact matching of templates, the placeholders' values
as the code that writes the names has them, and the tracker refusing (in tests) a name it does not define."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from support import spelled_unit

import bench
from bench.core import metrics
from bench.core.metrics import BETTER, UNITS, UnregisteredMetric, definition, is_registered, placeholder, registry

PACKAGE = Path(bench.__file__).resolve().parent


def _instances(metric: metrics.Metric) -> list[str]:
    """The names a definition stands for; an open placeholder (a rank) as a few ranks."""
    return [name.replace("{rank}", rank) for name in metrics.expand(metric.name) for rank in ("0", "1", "12")]


def test_every_definition_is_complete() -> None:
    for name, metric in registry().items():
        assert metric.unit in UNITS, name
        assert metric.better in BETTER, name
        assert metric.meaning.strip() and "\n" not in metric.meaning, name
        module = PACKAGE.parent / metric.writer.replace(".", "/")
        assert module.with_suffix(".py").is_file() or (module / "__init__.py").is_file(), (name, metric.writer)
        for key in metric.placeholders:
            assert placeholder(key), (name, key)


def test_every_name_has_exactly_one_definition() -> None:
    """No logged name matches two definitions: a concrete name is never also an instance of a template."""
    for metric in registry().values():
        for name in _instances(metric):
            assert definition(name) == metric, name


def test_a_unit_the_name_spells_is_its_unit() -> None:
    """`_bytes` is bytes, `_ms` milliseconds, `_pct` percent, `tokens_per_s` tokens/s, ..."""
    for name, metric in registry().items():
        assert spelled_unit(name) in (None, metric.unit), name


@pytest.mark.parametrize("name", ["eval/acuracy", "deploy/merged5/bytes", "dist/rankx/tokens", "dist/rank/tokens",
                                  "mem/at_peak/param_bytes", "prof/dequant", "eval/accuracy/", "Eval/accuracy",
                                  "deploy/{form}/byte", "mem/peak_bytes", "plan/peak_bytes_low"])
def test_a_name_outside_the_registry_is_refused_with_its_neighbours(name: str) -> None:
    assert not is_registered(name)
    with pytest.raises(UnregisteredMetric, match="not registered in bench/core/metrics.toml") as raised:
        definition(name)
    if name == "eval/acuracy":
        assert "close registered names: eval/accuracy" in str(raised.value)


def test_templates_match_whole_names_and_listed_values_only() -> None:
    assert definition("deploy/merged4/latency_p50_ms_low").name == "deploy/{form}/latency_p50_ms_{bound}"
    assert definition("dist/rank12/allreduce_s").name == "dist/rank{rank}/allreduce_s"
    assert definition("mem/at_peak/params_bytes").name == "mem/at_peak/{part}_bytes"
    assert definition("plan/peak_bytes").name == "plan/peak_bytes"  # not plan/{part}_bytes: `peak` is no part
    assert definition("deploy/{form}/bytes").name == "deploy/{form}/bytes"  # a template names itself
    assert metrics.logged_as("deploy/{form}/bytes", form="merged16") == "deploy/merged16/bytes"
    with pytest.raises(UnregisteredMetric):
        metrics.logged_as("deploy/{form}/bytes", form="merged8")
    for constant in (metrics.EVAL_ACCURACY, metrics.TEST_ACCURACY, metrics.TRAIN_LOSS, metrics.TRAIN_TOKENS_PER_S,
                     metrics.TENSOR_PEAK_BYTES):
        assert definition(constant).name == constant


def test_placeholder_values_are_those_the_writers_use() -> None:
    from bench.measure.monitor.tensors import CATEGORIES as TENSOR_CATEGORIES
    from bench.measure.profile.categories import CATEGORIES as PROFILE_CATEGORIES
    from bench.plan.engine import CATEGORIES as PLAN_CATEGORIES
    from bench.report.deploy import FORMS
    from bench.tasks.splits import SPLITS

    assert list(placeholder("part").values) == list(TENSOR_CATEGORIES.values()) == list(PLAN_CATEGORIES)
    assert list(placeholder("category").values) == list(PROFILE_CATEGORIES)
    assert list(placeholder("form").values) == list(FORMS)
    assert list(placeholder("split").values) == list(SPLITS)


def test_figures_only_a_gpu_or_several_ranks_log_are_registered() -> None:
    """The names CPU runs never reach, from the functions that make them: CUDA memory per phase, NVML, GPU
    energy, the coarse per-step points, and every rank's figures."""
    import torch

    from bench.distributed.figures import rank_figures, run_figures
    from bench.measure.monitor import monitor, summary

    series = SimpleNamespace(peak=2.0, mean=1.0)
    sampler = SimpleNamespace(by_phase={phase: {column: series for column in summary._MEMORY}
                                        for phase in ("train", "load", "eval")}, series={"gpu_util_pct": series})
    sampler.by_phase["train"] |= {"gpu_util_pct": series, "power_w": series}
    fake = SimpleNamespace(sampler=sampler, peaks=SimpleNamespace(phase_peak=lambda stem, phase: 3.0),
                           baseline=dict.fromkeys(summary._MEMORY, 1.0),
                           training=SimpleNamespace(energy=lambda: (5.0, "full"), seconds=4.0))
    names = [*summary._gpu(fake), *monitor._COARSE.values()]
    for column, (stem, exact) in summary._MEMORY.items():
        names += summary._memory(fake, column, stem, exact)
    result = SimpleNamespace(timing={}, tokens=10, time_s=1.0, state_bytes={})
    comm = SimpleNamespace(total_seconds=lambda: 0.5, buckets=2)
    rank_monitor = SimpleNamespace(tensors=None, allocator=None, peaks=fake.peaks)
    figures = rank_figures(torch.nn.Linear(2, 2), result=result, monitor=rank_monitor, comm=comm)
    figures["tensor_peak_bytes"] = 7.0  # NaN without a tensor accounting, and a NaN maximum is left out
    names += run_figures([figures, figures], strategy="ddp", backend="gloo")[0]
    assert len(names) > 40 and [name for name in names if not is_registered(name)] == []


def test_the_tracker_refuses_an_unregistered_name_in_tests(store: str) -> None:
    """tests/conftest.py makes every test strict: the typo raises where it is logged and the run closes FAILED."""
    import mlflow

    from bench.config import TrackerConfig
    from bench.tracking.tracker import Tracker

    refused = pytest.raises(UnregisteredMetric, match="eval/acuracy.*close registered names: eval/accuracy")
    with refused, Tracker(TrackerConfig(uri=store, experiment="strict"), run_name="typo") as tracker:
        tracker.log({"eval/accuracy": 0.5, "eval/acuracy": 0.5})
    run = mlflow.MlflowClient(store).get_run(tracker.run_id)
    assert run.info.status == "FAILED" and run.data.metrics == {}  # nothing of the refused batch was queued


def test_a_users_run_logs_an_unregistered_name_with_a_warning(store: str, monkeypatch, capsys) -> None:
    """Outside tests a name never costs the run: the figure is kept, and a warning names it once."""
    import mlflow

    from bench.config import TrackerConfig
    from bench.tracking.tracker import STRICT_METRICS, Tracker

    monkeypatch.delenv(STRICT_METRICS)
    with Tracker(TrackerConfig(uri=store, experiment="lenient"), run_name="typo") as tracker:
        for step in (1, 2):
            tracker.log({"eval/acuracy": 0.5, "train/loss": 1.0}, step)
    run = mlflow.MlflowClient(store).get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"eval/acuracy": 0.5, "train/loss": 1.0}
    warnings = [line for line in capsys.readouterr().err.splitlines() if "eval/acuracy" in line]
    assert len(warnings) == 1 and "logged anyway" in warnings[0] and "eval/accuracy" in warnings[0]

