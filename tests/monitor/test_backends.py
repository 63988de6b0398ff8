"""Backend choice and its failure paths: no NVML, a failing reading, CUDA/NVML device numbering."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from bench.config import MonitorConfig
from bench.measure.monitor import Monitor
from bench.measure.monitor.backends import Backend, ProcessSource, pick_backend
from bench.measure.monitor.nvml import DeviceIdentity, match_nvml_index, visible_entry

CPU = torch.device("cpu")


def test_cuda_device_without_nvml_falls_back_to_the_cpu_backend_with_a_reason() -> None:
    """No NVML library here: asking for the CUDA backend must give the CPU one and say why, not raise."""
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("NVML works on this machine")
    backend, reason = pick_backend(SimpleNamespace(type="cuda", index=0))
    assert backend.name == "cpu"
    assert reason.startswith("NVML unavailable: NVMLError_LibraryNotFound")
    assert "rss_bytes" in backend.columns and "nvml_device_bytes" not in backend.columns


def test_cpu_run_records_backend_and_reason_tags(tmp_path) -> None:
    with Monitor.for_device(CPU, MonitorConfig(interval_s=0.02), timeline_dir=tmp_path) as monitor:
        monitor.mark_training()
        for step in range(1, 4):
            monitor.on_step(step)
            torch.ones(2**20).sum()
        coarse = monitor.on_flush(3)
    tags, summary = monitor.tags(), monitor.summary()
    assert tags["monitor/backend"] == "cpu" and tags["monitor/reason"] == "device is cpu"
    assert {"monitor/rss_bytes", "monitor/cpu_util_pct"} <= set(coarse)
    assert {"mem/peak_rss_bytes", "mem/mean_rss_bytes", "cpu/util_mean_pct", "mem/load_peak_rss_bytes"} <= set(summary)
    assert not any(key.startswith("gpu/") for key in summary)
    lines = (tmp_path / "timeline.csv").read_text().splitlines()
    assert lines[0] == "time_s,step,phase,rss_bytes,cpu_util_pct"
    assert len(lines) >= 3 and lines[-1].split(",")[1:3] == ["3", "train"]


def test_monitor_off_keeps_exact_peaks_and_writes_no_timeline(tmp_path) -> None:
    with Monitor.for_device(CPU, MonitorConfig(enabled=False), timeline_dir=tmp_path) as monitor:
        monitor.mark_training()
    assert monitor.tags()["monitor/backend"] == "off"
    assert monitor.timeline is None and not (tmp_path / "timeline.csv").exists()
    assert {"mem/peak_rss_bytes", "mem/baseline_rss_bytes", "mem/load_peak_rss_bytes"} <= set(monitor.summary())


class _Broken(ProcessSource):
    """A source that works for the baseline, then fails inside the thread."""

    def read(self) -> list[float | None]:
        if getattr(self, "_reads", 0) >= 1:
            raise OSError("sensor vanished")
        self._reads = 1
        return super().read()


def test_a_failing_reading_stops_sampling_but_not_the_run() -> None:
    monitor = Monitor(CPU, MonitorConfig(interval_s=0.01), Backend("cpu", [_Broken()]), "test",
                      timeline_dir=None, sample=True)
    with monitor:
        monitor.sampler.join(timeout=2)  # the thread ends by itself on the failure
        monitor.mark_training()
    assert monitor.tags()["monitor/error"] == "OSError: sensor vanished"
    assert monitor.summary()["mem/peak_rss_bytes"] > 0  # the exact counter still answers


GPU_A = DeviceIdentity(pci=(0, 0x3B, 0), uuid="GPU-aaaa1111-0000-0000-0000-000000000000")
GPU_B = DeviceIdentity(pci=(0, 0x86, 0), uuid="GPU-bbbb2222-0000-0000-0000-000000000000")
NVML = [GPU_A, GPU_B]  # NVML order: by PCI bus


@pytest.mark.parametrize(("target", "visible", "pci_order", "expected"), [
    (DeviceIdentity(pci=(0, 0x86, 0)), None, False, (1, "pci")),  # CUDA 0 is NVML 1 ("fastest first")
    (DeviceIdentity(uuid="GPU-BBBB2222-0000-0000-0000-000000000000"), None, False, (1, "uuid")),
    (DeviceIdentity(), "GPU-bbbb", False, (1, "visible_uuid")),  # an abbreviated UUID
    (DeviceIdentity(), "1", True, (1, "visible_index")),  # with CUDA_DEVICE_ORDER=PCI_BUS_ID indices agree
    (DeviceIdentity(), None, True, (0, "visible_index")),
])
def test_cuda_device_maps_to_its_nvml_device(target, visible, pci_order, expected) -> None:
    assert match_nvml_index(target, NVML, cuda_index=0, visible=visible, pci_order=pci_order) == expected


def test_unmappable_devices_are_refused_not_guessed() -> None:
    index, why = match_nvml_index(DeviceIdentity(), NVML, cuda_index=0, visible="1", pci_order=False)
    assert index is None and "CUDA_DEVICE_ORDER" in why  # an index in "fastest first" order is ambiguous
    index, why = match_nvml_index(DeviceIdentity(), [GPU_A, GPU_A], cuda_index=0, visible="GPU-aaaa", pci_order=False)
    assert index is None and "GPU-aaaa" in why


def test_visible_entry_follows_cuda_numbering() -> None:
    assert visible_entry(1, "GPU-x, GPU-y") == "GPU-y"
    assert visible_entry(0, None) is None and visible_entry(3, "0,1") is None
