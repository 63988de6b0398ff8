"""Truth tests: the monitor reports what we know happened. A known allocation, a step of known duration,
an optimizer whose state size is known in advance."""

from __future__ import annotations

import mmap
import time
from types import SimpleNamespace

import pytest
import torch

from bench.config import MonitorConfig, TrainerConfig
from bench.measure.monitor import Monitor, StepTimer
from bench.models.footprint import trainable_bytes, training_state_bytes
from bench.tasks.metrics import evaluate_classifier
from bench.training.loop import build_optimizer, train

MB = 2**20
CPU = torch.device("cpu")


def _hold(megabytes: int, seconds: float) -> None:
    """Hold `megabytes` of fresh, written pages. An anonymous mapping of its own, not the allocator's: malloc
    may serve a block from memory an earlier test freed and left resident, which would raise no peak at all."""
    with mmap.mmap(-1, megabytes * MB) as block:
        pages = torch.frombuffer(block, dtype=torch.uint8)
        pages.fill_(1)  # written, so every page is resident
        time.sleep(seconds)
        del pages  # the mapping closes with no view of it left


def test_known_allocation_shows_as_peak_rss_increase() -> None:
    """Exact path: the kernel's high-water mark, reset when the monitor starts."""
    with Monitor.for_device(CPU, MonitorConfig(interval_s=0.05)) as monitor:
        monitor.mark_training()
        _hold(256, 0.2)
    summary = monitor.summary()
    assert monitor.tags()["mem/rss_peak_source"] == "kernel_vmhwm"
    assert summary["mem/peak_rss_net_bytes"] == pytest.approx(256 * MB, rel=0.10)
    assert summary["mem/peak_rss_bytes"] == summary["mem/baseline_rss_bytes"] + summary["mem/peak_rss_net_bytes"]


def test_what_loading_held_is_not_training_peak() -> None:
    """256 MB held and released while the model "loads" is the load phase's peak, not training's."""
    with Monitor.for_device(CPU, MonitorConfig(interval_s=0.05)) as monitor:
        _hold(256, 0.2)
        monitor.mark_training()
        _hold(32, 0.2)
    summary = monitor.summary()
    assert summary["mem/load_peak_rss_bytes"] - summary["mem/baseline_rss_bytes"] == pytest.approx(256 * MB, rel=0.1)
    assert summary["mem/peak_rss_net_bytes"] == pytest.approx(32 * MB, rel=0.25)


def test_known_allocation_is_seen_by_sampling_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fallback path (no /proc/self/clear_refs): the sampler's largest reading, even with monitoring off."""
    monkeypatch.setattr("bench.measure.monitor.peak.reset_kernel_peak", lambda: False)
    with Monitor.for_device(CPU, MonitorConfig(enabled=False, interval_s=0.02)) as monitor:
        monitor.mark_training()
        _hold(256, 0.5)
    summary = monitor.summary()
    assert monitor.tags()["mem/rss_peak_source"] == "rss_sampled"
    assert summary["mem/peak_rss_net_bytes"] == pytest.approx(256 * MB, rel=0.10)


class _FakeClock:
    """`time.perf_counter` for the loop and the timer, advanced only by the fake model: steps take exactly
    their stated time, so neither the loop's own work nor a busy CPU can move the figures."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _FakeClock:
    fake = _FakeClock()
    monkeypatch.setattr(time, "perf_counter", fake.perf_counter)
    return fake


def test_fake_step_of_known_duration_gives_its_throughput(clock: _FakeClock) -> None:
    timer = StepTimer(CPU, warmup_steps=2)
    timer.start()
    for step in range(10):
        clock.wait(0.15 if step < 2 else 0.05)  # slow warm-up steps must not count
        timer.step(samples=8, tokens=200)
    summary = timer.summary()
    assert summary["train/warmup_steps_excluded"] == 2 and summary["train/timed_steps"] == 8
    assert summary["train/step_time_p50_s"] == pytest.approx(0.05)
    assert summary["train/tokens_per_s"] == pytest.approx(200 / 0.05)
    assert summary["train/samples_per_s"] == pytest.approx(8 / 0.05)


class _SlowClassifier(torch.nn.Module):
    """A classifier whose training forward takes `step_s` and whose evaluation forward `eval_s` on `clock`."""

    def __init__(self, step_s: float, dtype: torch.dtype = torch.float32, *, clock: _FakeClock | None = None,
                 eval_s: float = 0.0) -> None:
        super().__init__()
        self.step_s, self.eval_s, self.clock = step_s, eval_s, clock
        self.body = torch.nn.Linear(16, 32, dtype=dtype)
        self.head = torch.nn.Linear(32, 3, dtype=dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        if self.clock is not None:
            self.clock.wait(self.step_s if self.training else self.eval_s)
        features = torch.nn.functional.one_hot(input_ids % 16, 16).to(self.body.weight.dtype).mean(1)
        logits = self.head(torch.relu(self.body(features))).float()
        return SimpleNamespace(loss=torch.nn.functional.cross_entropy(logits, labels), logits=logits)


def _batches(count: int, *, rows: int = 4, length: int = 10, real: int = 7) -> list[dict[str, torch.Tensor]]:
    mask = torch.zeros(rows, length, dtype=torch.long)
    mask[:, :real] = 1  # `real` tokens per row, the rest padding
    return [{"input_ids": torch.arange(rows * length).reshape(rows, length), "attention_mask": mask,
             "labels": torch.arange(rows) % 3} for _ in range(count)]


def _train(model: torch.nn.Module, *, batches: int, epochs: int = 1, warmup_steps: int = 0) -> object:
    trainer = TrainerConfig(lr=1e-3, epochs=epochs, log_every=3, threads=1)
    return train(model=model, train_loader=_batches(batches), eval_loader=_batches(1), trainer=trainer, device=CPU,
                 autocast_dtype=torch.float32, log=lambda metrics, step: None, desc="truth", warmup_steps=warmup_steps,
                 evaluate=evaluate_classifier)


def test_training_loop_throughput_excludes_warmup_and_evaluation(clock: _FakeClock) -> None:
    """Two epochs through the real loop: 4 x 7 real tokens per 100 ms step, and an evaluation of 40 x 50 ms
    after each epoch that must not count as training time."""
    trainer = TrainerConfig(lr=1e-3, epochs=2, log_every=3, threads=1)
    result = train(model=_SlowClassifier(0.1, clock=clock, eval_s=0.05), train_loader=_batches(6),
                   eval_loader=_batches(40), trainer=trainer, device=CPU, autocast_dtype=torch.float32,
                   log=lambda metrics, step: None, desc="truth", warmup_steps=2,
                   evaluate=evaluate_classifier)
    timing = result.timing
    assert result.steps == 12 and timing["train/timed_steps"] == 10, timing
    assert timing["train/step_time_p50_s"] == pytest.approx(0.1), timing
    assert timing["train/step_time_p90_s"] == pytest.approx(0.1), timing  # no evaluation inside a step
    assert timing["train/tokens_per_s"] == pytest.approx(4 * 7 / 0.1), timing
    assert timing["train/samples_per_s"] == pytest.approx(4 / 0.1), timing


def test_adamw_state_is_two_fp32_copies_of_the_trainable_weights() -> None:
    model = _SlowClassifier(0.0)
    model.body.requires_grad_(False)  # frozen weights have no state
    result = _train(model, batches=2)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) * 4
    assert trainable_bytes(model) == trainable
    assert result.state_bytes["mem/optimizer_bytes"] == 2 * trainable
    assert result.state_bytes["mem/grads_bytes"] == trainable


def test_adamw_on_bf16_weights_adds_a_kahan_buffer() -> None:
    """torch-optimi keeps a compensation buffer for 16-bit weights: three bf16 copies, still measured."""
    model = _SlowClassifier(0.0, dtype=torch.bfloat16)
    optimizer = build_optimizer(model, TrainerConfig(lr=1e-3))
    batch = _batches(1)[0]
    model(**batch).loss.backward()
    optimizer.step()
    sizes = training_state_bytes(model, optimizer)
    assert sizes["mem/optimizer_bytes"] == 3 * trainable_bytes(model)
    assert sizes["mem/grads_bytes"] == trainable_bytes(model)
