"""The terms a plan adds beyond its traced tensor peak (`bench.plan.overhead`), from plan_store's synthetic runs:
the closest runs there are (this configuration, else this model and technique, else this device, else another
GPU), the largest each measured, with where they came from; and the figures and budgets they give."""

from __future__ import annotations

import pytest
from plan_store import MIB, RTX4090, RUNS, Measured, build_store

from bench.plan.cards import CARDS

LEVERS = {"gradient_checkpointing": (False, False), "optimizer": ("adamw", "adamw"), "grad_accum_steps": (1, 1)}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    from bench.plan.calibrate import load_store
    from bench.plan.overhead import ALLOCATOR

    return load_store(build_store(tmp_path_factory.mktemp("memory")), metric=ALLOCATOR)


def _ask(store, *, technique: str = "lora", checkpointing: bool = False, card: str | None = "rtx4090",
         device: str = "cuda", model: str = "tiny-llama"):
    from bench.plan.overhead import measured_overhead

    found = CARDS[card] if card else None
    levers = {**LEVERS, "gradient_checkpointing": (checkpointing, False)}
    return measured_overhead(store, device=device, gpu=found.matches if found else None,
                             gpu_title=found.title if found else "", model=model, technique=technique, seq_len=32,
                             levers=levers)


def _largest(runs: list[Measured]) -> tuple[int, int, int]:
    """(allocator, cache, runtime) by hand: the largest gap between consecutive figures of the runs."""
    gaps = [[(run.memory[i + 1] - run.memory[i]) * MIB for run in runs] for i in range(3)]
    return tuple(int(max(gap)) for gap in gaps)


def _names(overhead) -> list[str]:
    return sorted(label.split(" ")[0] for label in overhead.runs)


def test_this_configurations_runs_come_first(store) -> None:
    overhead = _ask(store)
    expected = [run for run in RUNS if run.calibrates(technique="lora", checkpointing=False, gpu=RTX4090)]
    assert _names(overhead) == sorted(run.name for run in expected) == ["lora-4090-a", "lora-4090-old"]
    assert (overhead.allocator_bytes, overhead.cache_bytes, overhead.runtime_bytes) == _largest(expected)
    assert overhead.source.startswith("2 runs of this configuration on GeForce RTX 4090, ")
    assert overhead.calibrated and overhead.reason == ""


def test_a_lever_has_its_own_runs(store) -> None:
    overhead = _ask(store, checkpointing=True)
    assert _names(overhead) == ["lora-4090-ckpt"]
    assert (overhead.allocator_bytes, overhead.cache_bytes, overhead.runtime_bytes) == _largest(
        [run for run in RUNS if run.name == "lora-4090-ckpt"])


def test_then_the_same_model_and_technique_then_the_device(store) -> None:
    qlora = _ask(store, technique="qlora", checkpointing=True)  # no qlora run used checkpointing
    assert _names(qlora) == ["qlora-4090"] and "1 run of tiny-llama qlora on GeForce RTX 4090" in qlora.source
    full = _ask(store, technique="full")  # full fine-tuning ran on an A100 only: every finished 4090 run
    on_4090 = [run for run in RUNS if run.gpu == RTX4090 and run.status == "FINISHED" and run.memory]
    assert _names(full) == sorted(run.name for run in on_4090) and "runs on GeForce RTX 4090" in full.source
    assert (full.allocator_bytes, full.cache_bytes, full.runtime_bytes) == _largest(on_4090)


def test_another_gpu_stands_in_and_says_so(store) -> None:
    overhead = _ask(store, card="l4")
    assert "another GPU" in overhead.source
    cuda = [run for run in RUNS if run.gpu and run.status == "FINISHED" and run.memory]
    assert _names(overhead) == sorted(run.name for run in cuda)
    nameless = _ask(store, card=None)  # no card named: only other GPUs' runs can stand in
    assert nameless.runs == overhead.runs and "another GPU" in nameless.source


def test_the_cpu_runtime_is_rss_beyond_the_allocator(store) -> None:
    overhead = _ask(store, card=None, device="cpu")
    assert _names(overhead) == ["lora-cpu"]
    assert (overhead.allocator_bytes, overhead.cache_bytes, overhead.runtime_bytes) == (  # the trace sees the
        0, 0, int((700 - 10.5) * MIB))  # CPU's scratch itself: no allocator term from runs


def test_uncalibrated_says_why(store, tmp_path) -> None:
    from bench.plan.calibrate import load_store
    from bench.plan.overhead import ALLOCATOR, measured_overhead

    missing = load_store(f"sqlite:///{tmp_path / 'none.db'}", metric=ALLOCATOR)
    overhead = measured_overhead(missing, device="cuda", model="m", technique="lora", seq_len=32, levers=LEVERS)
    assert not overhead.calibrated and "no MLflow store" in overhead.reason
    assert overhead.total_bytes == 0 and overhead.describe().startswith("uncalibrated (no MLflow store")
    throughput_only = load_store(build_store(tmp_path, [Measured("old", 10.0)]), metric=ALLOCATOR)
    assert "logged mem/allocator_peak_bytes" in measured_overhead(
        throughput_only, device="cpu", model="m", technique="lora", seq_len=32, levers=LEVERS).reason


def test_figures_add_each_term_on_the_larger_of_tensor_peak_and_traced_scratch() -> None:
    from bench.plan.overhead import Overhead, predict

    terms = Overhead(allocator_bytes=64, cache_bytes=100, runtime_bytes=700, source="1 run", runs=("r (12345678)",))
    gpu = predict(1000, terms, device="cuda")
    assert (gpu.allocator_bytes, gpu.reserved_bytes, gpu.process_bytes) == (1064, 1164, 1864)
    assert gpu.metrics("plan/met_") == {"plan/met_allocator_peak_bytes": 1064.0, "plan/met_reserved_bytes": 1164.0,
                                        "plan/met_process_bytes": 1864.0}
    cpu = predict(1000, terms, device="cpu")  # no caching allocator: nothing reserved beyond what is allocated
    assert (cpu.allocator_bytes, cpu.reserved_bytes, cpu.process_bytes) == (1064, None, 1764)
    assert "plan/reserved_bytes" not in cpu.metrics()
    scratch = predict(1000, terms, device="cpu", traced_allocator_bytes=1500)  # an op's own scratch, traced
    assert (scratch.allocator_bytes, scratch.process_bytes) == (1564, 2264)
    described = "allocator +0.0 MiB, cache +0.0 MiB, runtime +0.0 MiB (largest of 1 run: r (12345678))"
    assert terms.describe() == described
