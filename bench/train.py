"""The one training loop, the same for every technique: AdamW, linear warm-up/decay, autocast, clipping.

Step losses stay on the device and are read in bulk every `trainer.log_every` steps, so the loop does not
synchronise with the GPU on every step. The clock covers optimizer steps only: evaluation between epochs
is paused out of `train/time_s`. Each step is also timed on its own (`bench.monitor.StepTimer`) for the
step-time percentiles and the throughput after warm-up, and the gradients and optimizer state are sized
once, after the first step, from the real tensors.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.config import TrainerConfig
from bench.footprint import training_state_bytes
from bench.monitor.throughput import StepTimer

LogFn = Callable[[dict[str, float], int], None]
EvalFn = Callable[..., dict[str, float]]  # (model, eval_loader, *, device, autocast_dtype) -> eval/* metrics


class StepHooks(Protocol):
    """What the loop tells the outside world: `bench.monitor.Monitor` implements it."""

    def on_train_start(self, model: Any, optimizer: Any) -> None:
        """Once, before the first step: what a step's memory accounting must know about."""

    def step(self, step: int, batch: dict[str, Any]) -> AbstractContextManager[bool]:
        """Around one optimizer step (batch already on the device); yields whether the step is watched by the
        memory accounting, which slows it, so that its time stays out of the throughput."""

    def evaluation(self) -> AbstractContextManager[None]:
        """Around each evaluation between epochs: not training, for the memory and energy figures."""

    def on_step(self, step: int) -> None:
        """After each optimizer step; must cost next to nothing."""

    def on_flush(self, step: int) -> dict[str, float]:
        """Every `trainer.log_every` steps: metrics to log at this step."""


class _NoHooks:
    def on_train_start(self, model: Any, optimizer: Any) -> None:
        pass

    def step(self, step: int, batch: dict[str, Any]) -> AbstractContextManager[bool]:
        return contextlib.nullcontext(False)

    def evaluation(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def on_step(self, step: int) -> None:
        pass

    def on_flush(self, step: int) -> dict[str, float]:
        return {}


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What the loop measured."""

    steps: int = 0
    samples: int = 0
    tokens: int = 0  # non-padding tokens only
    time_s: float = 0.0  # optimizer steps only, evaluation excluded
    last_loss: float = math.nan
    final_eval: dict[str, float] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)  # StepTimer.summary(): percentiles, throughput
    state_bytes: dict[str, int] = field(default_factory=dict)  # mem/grads_bytes, mem/optimizer_bytes


class _Clock:
    """Wall time that can be paused; synchronises CUDA so queued kernels are counted."""

    def __init__(self, device: Any) -> None:
        self._device, self.elapsed, self._started = device, 0.0, None

    def _sync(self) -> None:
        if self._device.type == "cuda":
            import torch

            torch.cuda.synchronize(self._device)

    def start(self) -> None:
        self._sync()
        self._started = time.perf_counter()

    def pause(self) -> None:
        self._sync()
        self.elapsed, self._started = self.seconds(), None

    def seconds(self) -> float:
        """Time counted so far, without synchronising (for the progress bar only)."""
        return self.elapsed + (time.perf_counter() - self._started if self._started is not None else 0.0)


def build_optimizer(model: Any, trainer: TrainerConfig, lr_by_module: dict[str, float] | None = None) -> Any:
    """AdamW from torch-optimi: identical to torch's AdamW on fp32 weights, and with Kahan summation on
    16-bit weights, where plain AdamW would round most small updates away (pure bf16 full fine-tuning).
    `lr_by_module`: modules (dotted names in the base model) that train at their own rate."""
    import optimi

    groups: dict[float, list[Any]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            owner = next((m for m in (lr_by_module or {}) if f".{m}." in f".{name}"), None)
            groups.setdefault(lr_by_module[owner] if owner else trainer.lr, []).append(parameter)
    return optimi.AdamW([{"params": params, "lr": lr} for lr, params in groups.items()], lr=trainer.lr,
                        betas=(0.9, 0.999), eps=1e-8, weight_decay=trainer.weight_decay)


def train(*, model: Any, train_loader: Any, eval_loader: Any, trainer: TrainerConfig, device: Any,
          autocast_dtype: Any, log: LogFn, desc: str, evaluate: EvalFn, hooks: StepHooks | None = None,
          warmup_steps: int = 0, lr_by_module: dict[str, float] | None = None) -> TrainResult:
    """Train for `trainer.epochs` (or `trainer.max_steps`), evaluating after each epoch and at the end."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    total_steps = min(trainer.epochs * len(train_loader), trainer.max_steps or math.inf)
    optimizer = build_optimizer(model, trainer, lr_by_module)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(trainer.warmup_ratio * total_steps), total_steps)
    result, clock, timer, pending = TrainResult(), _Clock(device), StepTimer(device, warmup_steps=warmup_steps), []
    hooks = hooks or _NoHooks()
    hooks.on_train_start(model, optimizer)
    bar = tqdm(total=total_steps, desc=desc, unit="step", dynamic_ncols=True)
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype != torch.float32)
    model.train()
    clock.start()
    timer.start()
    for _epoch in range(trainer.epochs):
        for batch in train_loader:
            tokens, samples = int(batch["attention_mask"].sum()), len(batch["labels"])  # host copy: no sync
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with hooks.step(result.steps + 1, batch) as watched:
                loss = _step(model, batch, autocast=autocast, optimizer=optimizer, scheduler=scheduler,
                             max_grad_norm=trainer.max_grad_norm, result=result)
            result.steps += 1
            result.tokens, result.samples = result.tokens + tokens, result.samples + samples
            timer.step(samples, tokens, timed=not watched)
            hooks.on_step(result.steps)
            pending.append((result.steps, loss.detach()))
            if result.steps % trainer.log_every == 0 or result.steps == total_steps:
                _flush(pending, result, log, bar, clock, allow_nan=trainer.allow_nan)
                timer.collect()  # the flush just waited for the GPU: reading step events is free now
                log(hooks.on_flush(result.steps), result.steps)
            if result.steps >= total_steps:
                break
        clock.pause()
        with hooks.evaluation():
            result.final_eval = evaluate(model, eval_loader, device=device, autocast_dtype=autocast_dtype)
        log(result.final_eval, result.steps)
        bar.set_postfix(loss=f"{result.last_loss:.4f}", acc=f"{result.final_eval.get('eval/accuracy', math.nan):.3f}")
        if result.steps >= total_steps:
            break
        clock.start()
        timer.start()  # the next step is timed from here, so evaluation is not in it
    bar.close()
    result.time_s, result.timing = clock.elapsed, timer.summary()
    return result


def _step(model: Any, batch: dict[str, Any], *, autocast: Any, optimizer: Any, scheduler: Any,
          max_grad_norm: float, result: TrainResult) -> Any:
    """One optimizer step on a batch already on the device; returns the loss, still on the device."""
    import torch

    with autocast:
        loss = model(**batch).loss
    loss.backward()
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    if not result.steps:  # gradients and optimizer state both exist only now, before they are cleared
        result.state_bytes = training_state_bytes(model, optimizer)
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def _flush(pending: list[tuple[int, Any]], result: TrainResult, log: LogFn, bar: Any, clock: _Clock, *,
           allow_nan: bool) -> None:
    """Read buffered losses in one transfer, log them, stop on NaN/inf, refresh the progress bar."""
    import torch

    values = torch.stack([loss for _, loss in pending]).float().cpu().tolist()
    for (step, _), value in zip(pending, values, strict=True):
        log({"train/loss": value}, step)
    bar.update(len(pending))
    pending.clear()
    result.last_loss = values[-1]
    bad = [v for v in values if not math.isfinite(v)]
    if bad and not allow_nan:
        raise NonFiniteLoss(f"training loss became {bad[0]} at or before step {result.steps}")
    bar.set_postfix(loss=f"{result.last_loss:.4f}", tok_s=f"{result.tokens / max(clock.seconds(), 1e-9):.0f}")
