"""Truth tests for the CPU allocator's peak (`bench.measure.monitor.allocator`), the instrument that checks the
plan: known allocations inside a real training step (the one loop, the real monitor) land in it, to within the
loop's own scalars; so does scratch space an op allocates out of the tensor accounting's sight, which the tensor
peak misses."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from bench.config import MonitorConfig, TrainerConfig
from bench.measure.monitor import Monitor
from bench.measure.monitor.allocator import AllocatorPeak, census, rise
from bench.training.loop import train

CPU = torch.device("cpu")
PARAMS = 1024  # fp32 weights of the toy model: 4 KiB
MB = 2**20
SMALL = 256  # bytes: the loop's own scalars (the loss, optimi's step count) and the allocator's alignment


class _KnownStep(torch.autograd.Function):
    """Forward keeps `act` floats for backward; backward allocates `temp` floats, and `hidden` bytes of scratch
    with Python dispatch off (as a kernel's own workspace is: no dispatch mode sees it), then the gradient."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, act: int, temp: int, hidden: int) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(torch.empty(act))
        ctx.temp, ctx.hidden = temp, hidden
        return weight.sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:  # noqa: ANN001
        temporary = torch.empty(ctx.temp)
        with torch._C._DisableTorchDispatch():
            scratch = torch.empty(ctx.hidden, dtype=torch.uint8)
        weight_grad = grad.expand(PARAMS).clone()
        del temporary, scratch
        return weight_grad, None, None, None


class _Toy(torch.nn.Module):
    def __init__(self, act: int, temp: int, hidden: int = 0) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(PARAMS))
        self.act, self.temp, self.hidden = act, temp, hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> Any:
        return SimpleNamespace(loss=_KnownStep.apply(self.weight, self.act, self.temp, self.hidden))


def _batch(size: int) -> dict[str, torch.Tensor]:
    ids, mask = torch.zeros(2, size, dtype=torch.long), torch.ones(2, size, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.zeros(2, dtype=torch.long)}


class _Loader:
    """Batches made as they are drawn, as a data loader collates them: one alive at a time, after the baseline."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Any:
        return (_batch(size) for size in self.sizes)


def _evaluate(model, loader, *, device, autocast_dtype) -> dict[str, float]:  # noqa: ANN001
    return {"eval/accuracy": 0.5}


def _run(make: Any, sizes: list[int], policy: str = "largest") -> tuple[dict[str, float], Any]:
    """Train the model `make()` builds (after the baseline, as a run loads its model) on batches of `sizes`."""
    trainer = TrainerConfig(lr=1e-3, epochs=1, log_every=100, max_grad_norm=0.0)
    with Monitor.for_device(CPU, MonitorConfig(enabled=False, tensors=policy)) as monitor:
        model = make()
        monitor.mark_training()
        train(model=model, train_loader=_Loader(sizes), eval_loader=[], trainer=trainer, device=CPU,
              autocast_dtype=torch.float32, log=lambda metrics, step: None, desc="truth", hooks=monitor,
              evaluate=_evaluate)
    return monitor.summary(), monitor


def test_known_allocations_make_the_allocator_peak() -> None:
    """Step 2 peaks in backward: weight, AdamW's two states and its step count, the batch, the saved activation,
    the temporary and the gradient, all live at once; the allocator counts them as the tensor accounting does."""
    act, temp = 3 * MB // 4, 5 * MB // 4  # floats: 3 MiB and 5 MiB
    summary, _ = _run(lambda: _Toy(act, temp), [16, 16, 16])
    state = 2 * PARAMS * 4 + 4  # exp_avg, exp_avg_sq (fp32) and optimi's step count
    batch = 2 * 16 * 8 * 2 + 2 * 8
    expected = PARAMS * 4 + state + batch + (act + temp) * 4 + PARAMS * 4
    assert summary["mem/allocator_peak_bytes"] == pytest.approx(expected, abs=SMALL), summary
    assert summary["mem/allocator_peak_bytes"] == pytest.approx(summary["mem/tensor_peak_bytes"], abs=SMALL)
    assert summary["mem/allocator_base_bytes"] == pytest.approx(PARAMS * 4 + state + batch, abs=SMALL)


def test_scratch_out_of_the_tensor_accountings_sight_is_in_the_allocator_peak() -> None:
    """8 MiB allocated with dispatch off: the tensor peak misses it, the allocator's does not."""
    hidden = 8 * MB
    summary, _ = _run(lambda: _Toy(MB // 4, MB // 4, hidden), [16, 16])
    gap = summary["mem/allocator_peak_bytes"] - summary["mem/tensor_peak_bytes"]
    assert gap == pytest.approx(hidden, abs=SMALL), summary


def test_the_largest_policy_opens_a_window_on_steps_one_two_and_each_larger_batch() -> None:
    _, monitor = _run(lambda: _Toy(1024, 1024), [16, 8, 8, 32, 16, 64])
    assert monitor.allocator.windows == 4  # steps 1, 2, 4 (32 tokens), 6 (64)
    assert monitor.tags()["mem/allocator_source"] == "cpu_profiler_events"


def test_a_larger_later_batch_raises_the_peak() -> None:
    small, _ = _run(lambda: _Toy(64, 64), [16, 16, 16])
    large, _ = _run(lambda: _Toy(64, 64), [16, 16, 512])
    assert large["mem/allocator_peak_bytes"] - small["mem/allocator_peak_bytes"] == pytest.approx(
        2 * (512 - 16) * 8 * 2, abs=SMALL)


def test_policy_off_measures_nothing() -> None:
    summary, monitor = _run(lambda: _Toy(64, 64), [16, 16], policy="off")
    assert monitor.allocator is None and "mem/allocator_peak_bytes" not in summary


def test_a_busy_profiler_leaves_the_micro_batch_out_and_says_so() -> None:
    peak = AllocatorPeak("largest")
    peak.start()
    peak.on_train_start(torch.nn.Linear(2, 2))
    with peak.step(1, _batch(4), profiler_busy=True):
        pass
    assert peak.metrics() == {} and "monitor.profile" in peak.tags()["mem/allocator_skipped"]


def test_the_census_counts_storages_once_and_leaves_the_baseline_out() -> None:
    kept = torch.zeros(MB, dtype=torch.uint8)
    before = census()
    shared = torch.zeros(2 * MB, dtype=torch.uint8)
    views = [shared[:10], shared[5:]]  # views of one storage count once
    weight = torch.nn.Parameter(torch.zeros(MB // 4))
    weight.sum().backward()  # a gradient made by backward, never read from Python
    assert census() - before == 2 * MB + MB + MB
    assert census({kept.untyped_storage().data_ptr()}) == census() - MB
    del views


def test_rise_takes_events_in_time_order() -> None:
    assert rise([(3, -50), (1, 100), (2, 30)]) == 130
    assert rise([(1, -10), (2, 5)]) == 0


def test_cuda_allocator_peak_is_the_caching_allocators_training_peak() -> None:
    """On CUDA no window opens: the figure is torch's peak allocated of the training phase."""
    from bench.measure.monitor.summary import allocator_metrics

    peaks = SimpleNamespace(phase_peak=lambda name, phase: {"allocated": 123_456}.get(name) if phase == "train" else 0)
    monitor = SimpleNamespace(allocator=None, peaks=peaks)
    assert allocator_metrics(monitor) == {"mem/allocator_peak_bytes": 123_456.0}
