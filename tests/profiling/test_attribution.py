"""Truth test for the step-time breakdown: a fake model sleeps a known time inside modules of each kind (and its
optimizer and data loader sleep too); the profile, taken by the real monitor over the one training loop, finds
each sleep in its category. Sleeps, not compute, so the expected figures are known in advance on any machine."""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import pytest
import torch
from torch import nn

from bench.config import MonitorConfig, TrainerConfig
from bench.measure.monitor import Monitor
from bench.training.loop import train

CPU = torch.device("cpu")
# milliseconds slept per optimizer step, by the category they must be found in
SLEEP_MS = {"attention": 12.0, "base_matmul": 8.0, "dequant": 7.0, "adapter": 6.0 + 10.0,  # 10 in backward
            "other": 4.0, "optimizer": 5.0, "data_host": 9.0}
# Each category must hold what its sleeps really took while the profiler recorded (a busy machine oversleeps, so
# that is measured around each sleep), at most 0.5 ms less. That bound is the sharp one: every category has a
# sleep and the categories sum to the window, so a sleep charged to the wrong category leaves its own short.
# Above, a category also holds its real ops, the profiler's ranges and, on a busy machine, the time slices other
# processes took while it ran: at most 5 ms + 50 % more.
BELOW_MS, ABOVE_MS, ABOVE_SHARE = 0.5, 5.0, 0.5
SLEPT_MS: dict[str, float] = {}  # category -> milliseconds really slept in the steps the figures count
COUNTED: set[int] = set()  # those steps
STEP = [0]  # the step running now: the data loader counts its fetches, each step's first work


def _sleep(category: str, share: float = 1.0) -> None:
    began = time.perf_counter()
    time.sleep(SLEEP_MS[category] * share / 1000.0)
    if STEP[0] in COUNTED:
        SLEPT_MS[category] = SLEPT_MS.get(category, 0.0) + 1000.0 * (time.perf_counter() - began)


class _SleepInBackward(torch.autograd.Function):
    """Identity forward; backward sleeps, so the adapter's backward cost is known."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        _sleep("adapter", 10.0 / 16.0)
        return grad


class _SleepyLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _sleep("base_matmul")
        return super().forward(x)


class HQQFakeLinear(nn.Module):
    """Stands for an HQQ 4-bit layer: its `dequantize()` sleeps, its matmul is the base model's."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("packed", torch.randn(4, 4))

    def dequantize(self) -> torch.Tensor:
        _sleep("dequant")
        return self.packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.dequantize().t()


class _SleepyLoraA(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _sleep("adapter", 6.0 / 16.0)  # the forward's share; backward sleeps the rest
        return _SleepInBackward.apply(super().forward(x))


class _LoraLayer(nn.Module):
    """peft's shape: a `base_layer` and `lora_A` / `lora_B` beside it."""

    def __init__(self) -> None:
        super().__init__()
        self.base_layer = HQQFakeLinear()
        self.lora_A = nn.ModuleDict({"default": _SleepyLoraA(4, 2, bias=False)})
        self.lora_B = nn.ModuleDict({"default": nn.Linear(2, 4, bias=False)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.lora_B["default"](self.lora_A["default"](x))


class FakeSelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query = _SleepyLinear(4, 4)
        self.value = _LoraLayer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _sleep("attention")
        return torch.softmax(self.query(x), dim=-1) * self.value(x)


class _SleepyNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _sleep("other")
        return super().forward(x)


class _FakeModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.attention = FakeSelfAttention()
        self.norm = _SleepyNorm(4)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = self.norm(self.attention(self.embed(input_ids)))
        return SequenceClassifierOutput(loss=hidden.float().pow(2).mean())


class _SleepyBatches:
    """A data loader whose every fetch sleeps (reading and collating, as a real one does)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Any:
        for _ in range(self.count):
            STEP[0] += 1
            _sleep("data_host")
            yield {"input_ids": torch.randint(0, 10, (2, 3)), "attention_mask": torch.ones(2, 3, dtype=torch.long),
                   "labels": torch.zeros(2, dtype=torch.long)}


class _SleepyOptimizerHooks:
    """The monitor's hooks, plus a sleep in every optimizer step (a pre-hook runs inside `optimizer.step`)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def on_train_start(self, model: Any, optimizer: Any) -> None:
        optimizer.register_step_pre_hook(lambda *_: _sleep("optimizer"))
        self.monitor.on_train_start(model, optimizer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.monitor, name)


def _evaluate(model, loader, *, device, autocast_dtype) -> dict[str, float]:  # noqa: ANN001
    return {"eval/accuracy": 0.5}


def _profiled(tmp_path, *, steps: int = 6, warmup: int = 1, profile_steps: int = 3, tensors: str = "off"):  # noqa: ANN001, ANN202
    spec = MonitorConfig(enabled=False, tensors=tensors, warmup_steps=warmup, profile=True,
                         profile_steps=profile_steps)
    trainer = TrainerConfig(lr=1e-3, epochs=1, log_every=100, max_grad_norm=0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny ops stay µs: no parallel region waits for a core another process holds
    try:
        return _train_profiled(spec, trainer, steps=steps, warmup=warmup, folder=tmp_path)
    finally:
        torch.set_num_threads(threads)


def _train_profiled(spec: MonitorConfig, trainer: TrainerConfig, *, steps: int, warmup: int, folder: Any):  # noqa: ANN202
    with Monitor.for_device(CPU, spec, timeline_dir=folder) as monitor:
        monitor.mark_training()
        result = train(model=_FakeModel(), train_loader=_SleepyBatches(steps), eval_loader=[], trainer=trainer,
                       device=CPU, autocast_dtype=torch.float32, log=lambda metrics, step: None, desc="profile",
                       hooks=_SleepyOptimizerHooks(monitor), warmup_steps=warmup, evaluate=_evaluate)
    return monitor.summary(), monitor.tags(), result


def test_each_known_sleep_is_found_in_its_category(tmp_path) -> None:  # noqa: ANN001
    SLEPT_MS.clear()
    STEP[0] = 0
    COUNTED.clear()
    COUNTED.update(range(3, 8))  # step 2 is the profiler's warm-up, left out of the figures
    # five profiled steps: a time slice another process takes from one of them weighs a fifth in the mean
    figures, tags, _ = _profiled(tmp_path, steps=9, profile_steps=5)
    assert figures["prof/steps"] == 5 and tags["prof/window"] == "steps 3-7"
    found = {category: figures[f"prof/{category}_ms"] for category in SLEEP_MS}
    slept = {category: SLEPT_MS[category] / 5 for category in SLEEP_MS}  # per profiled step
    assert slept["adapter"] >= SLEEP_MS["adapter"]  # the backward's sleep was in the window too
    for category, expected in slept.items():
        assert expected - BELOW_MS <= found[category] <= expected * (1 + ABOVE_SHARE) + ABOVE_MS, (category, found)
    assert sum(figures[f"prof/{c}_pct"] for c in SLEEP_MS) == pytest.approx(100.0)
    assert figures["prof/step_ms"] == pytest.approx(sum(found.values()))
    assert "monitor/profile/trace.json.gz" in tags["prof/artifacts"]
    # Chrome's trace-event JSON, gzipped (Perfetto opens it), with bench's ranges in it
    with gzip.open(tmp_path / "profile" / "trace.json.gz", "rt") as trace:
        names = {event.get("name") for event in json.load(trace)["traceEvents"]}
    assert {f"bench::{category}" for category in SLEEP_MS} - {"bench::other"} <= names
    ops = (tmp_path / "profile" / "ops.csv").read_text().splitlines()
    assert ops[0] == "category,op,ms_per_step,calls_per_step"
    assert any(line.startswith("adapter,_SleepInBackwardBackward,") for line in ops)  # the backward's sleep


def test_profiled_steps_and_the_one_after_stay_out_of_the_throughput(tmp_path) -> None:  # noqa: ANN001
    _, _, result = _profiled(tmp_path, steps=8, warmup=1, profile_steps=3)
    # 8 steps: 1 warm-up; 2 the profiler's warm-up, 3-5 profiled and 6 pays for the profiler's stop; 7-8 timed
    assert result.timing["train/profiled_steps_excluded"] == 5
    assert result.timing["train/timed_steps"] == 2


def test_a_run_too_short_for_the_window_says_so(tmp_path) -> None:  # noqa: ANN001
    figures, tags, _ = _profiled(tmp_path, steps=2, warmup=3)
    assert not any(key.startswith("prof/") for key in figures)
    assert "before the profiled steps 5-7" in tags["prof/skipped"]


def test_a_window_cut_by_the_end_of_training_covers_the_steps_it_saw(tmp_path) -> None:  # noqa: ANN001
    figures, tags, _ = _profiled(tmp_path, steps=4, warmup=1, profile_steps=5)
    assert figures["prof/steps"] == 2 and tags["prof/window"] == "steps 3-4"


def test_a_profiled_step_also_watched_by_the_tensor_accounting_is_named(tmp_path) -> None:  # noqa: ANN001
    _, tags, _ = _profiled(tmp_path, steps=6, warmup=1, profile_steps=2, tensors="every")
    assert tags["prof/note"].startswith("step(s) 3, 4 of the window were also watched")  # 5 follows the window
