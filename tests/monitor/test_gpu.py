"""The CUDA path: NVML finds this process's GPU, a known GPU allocation shows in every memory figure, and the
event-based step timer agrees with a synchronised wall clock. Skipped without CUDA (see conftest.py)."""

from __future__ import annotations

import time

import pytest
import torch

from bench.config import MonitorConfig
from bench.monitor import Monitor, StepTimer
from bench.monitor.nvml import open_handle

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
    assert summary["mem/peak_bytes"] >= 512 * MB  # the training phase's peak reserved
    assert summary["mem/peak_nvml_process_net_bytes"] == pytest.approx(512 * MB, rel=0.10), tags
    assert summary["mem/peak_nvml_device_net_bytes"] >= 0.9 * 512 * MB
    assert summary["gpu/power_mean_w"] > 0 and summary["gpu/energy_j"] > 0
    assert 0 <= summary["gpu/util_mean_pct"] <= 100


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
