"""The one training loop, the same for every technique: AdamW, linear warm-up then linear or cosine decay, autocast,
clipping.

An optimizer step runs over `trainer.grad_accum_steps` micro-batches of `trainer.batch_size` (one by default):
each micro-batch's loss is scaled by the group's size before backward, so the gradients add up to those of
the whole group, and everything that counts steps (the schedule, `max_steps`, the loss curve, step times)
counts optimizer steps. The memory levers (`bench.training.levers`) are applied here, before the first step.

Step losses stay on the device and are read in bulk every `trainer.log_every` steps, so the loop does not
synchronise with the GPU on every step. The clock covers optimizer steps only: evaluation between epochs
is paused out of `train/time_s`. Each step is also timed on its own (`bench.measure.monitor.StepTimer`) for the
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
from typing import TYPE_CHECKING, Any, Protocol

from bench.config import TrainerConfig
from bench.core.errors import NonFiniteLoss
from bench.core.ranges import scope
from bench.distributed.wrap import unwrapped
from bench.measure.monitor.throughput import StepTimer
from bench.measure.profile.scopes import fetched
from bench.models.footprint import training_state_bytes
from bench.tasks.base import batch_counts
from bench.training.levers import apply_levers, micro_batch_groups, optimizer_class, optimizer_steps_per_epoch

if TYPE_CHECKING:
    import torch

LogFn = Callable[[dict[str, float], int], None]
EvalFn = Callable[..., dict[str, float]]  # (model, eval_loader, *, device, autocast_dtype) -> eval/* metrics


class StepHooks(Protocol):
    """What the loop tells the outside world: `bench.measure.monitor.Monitor` implements it."""

    def on_train_start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Once, before the first step: what a step's memory accounting must know about."""

    def step(self, step: int, batch: dict[str, Any]) -> AbstractContextManager[str]:
        """Around one micro-batch of optimizer step `step` (batch already on the device): its forward and
        backward, and for the last micro-batch of the step the optimizer's update. Yields why the step's time
        must stay out of the throughput ("watched" by the memory accounting, "profiled"), or "" when it counts."""

    def evaluation(self) -> AbstractContextManager[None]:
        """Around each evaluation between epochs: not training, for the memory and energy figures."""

    def on_step(self, step: int) -> None:
        """After each optimizer step; must cost next to nothing."""

    def on_flush(self, step: int) -> dict[str, float]:
        """Every `trainer.log_every` steps: metrics to log at this step."""


class _NoHooks:
    def on_train_start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        pass

    def step(self, step: int, batch: dict[str, Any]) -> AbstractContextManager[str]:
        return contextlib.nullcontext("")

    def evaluation(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def on_step(self, step: int) -> None:
        pass

    def on_flush(self, step: int) -> dict[str, float]:
        return {}


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

    def __init__(self, device: torch.device) -> None:
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


def build_optimizer(model: torch.nn.Module, trainer: TrainerConfig, lr_by_module: dict[str,
                    float] | None = None) -> Any:
    """The optimizer `trainer.optimizer` names, on the trainable parameters. `adamw` is torch-optimi's AdamW:
    identical to torch's AdamW on fp32 weights, and with Kahan summation on 16-bit weights, where plain AdamW
    would round most small updates away (pure bf16 full fine-tuning); the others are bitsandbytes' 8-bit and
    paged AdamW with the same hyper-parameters. `lr_by_module`: modules (dotted names in the base model) that
    train at their own rate."""
    groups: dict[float, list[Any]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            owner = next((m for m in (lr_by_module or {}) if f".{m}." in f".{name}"), None)
            groups.setdefault(lr_by_module[owner] if owner else trainer.lr, []).append(parameter)
    return optimizer_class(trainer.optimizer)([{"params": params, "lr": lr} for lr, params in groups.items()],
                                              lr=trainer.lr, betas=(0.9, 0.999), eps=1e-8,
                                              weight_decay=trainer.weight_decay)


def train(*, model: torch.nn.Module, train_loader: Any, eval_loader: Any, trainer: TrainerConfig, device: torch.device,
          autocast_dtype: torch.dtype, log: LogFn, desc: str, evaluate: EvalFn, hooks: StepHooks | None = None,
          warmup_steps: int = 0, lr_by_module: dict[str, float] | None = None) -> TrainResult:
    """Train for `trainer.epochs` (or `trainer.max_steps` optimizer steps), evaluating after each epoch and at
    the end."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    inner = unwrapped(model)  # the model a DDP wrapper wraps: what the levers and evaluation see
    apply_levers(inner, trainer)
    accumulate = trainer.grad_accum_steps
    total_steps = min(trainer.epochs * optimizer_steps_per_epoch(len(train_loader), accumulate),
                      trainer.max_steps or math.inf)
    optimizer = build_optimizer(model, trainer, lr_by_module)
    schedule = get_cosine_schedule_with_warmup if trainer.schedule == "cosine" else get_linear_schedule_with_warmup
    scheduler = schedule(optimizer, int(trainer.warmup_ratio * total_steps), total_steps)
    result, clock, timer, pending = TrainResult(), _Clock(device), StepTimer(device, warmup_steps=warmup_steps), []
    hooks = hooks or _NoHooks()
    hooks.on_train_start(model, optimizer)
    stepper = OptimizerStep(model=model, optimizer=optimizer, scheduler=scheduler, hooks=hooks, device=device,
                       max_grad_norm=trainer.max_grad_norm,
                       autocast=torch.autocast(device.type, dtype=autocast_dtype,
                                               enabled=autocast_dtype != torch.float32))
    bar = tqdm(total=total_steps, desc=desc, unit="step", dynamic_ncols=True)
    model.train()
    clock.start()
    timer.start()
    for _epoch in range(trainer.epochs):
        for group in fetched(micro_batch_groups(train_loader, accumulate)):
            loss, untimed, (samples, tokens) = stepper.step(group, result)
            result.steps += 1
            result.tokens, result.samples = result.tokens + tokens, result.samples + samples
            timer.step(samples, tokens, untimed=untimed)
            hooks.on_step(result.steps)
            pending.append((result.steps, loss))
            if result.steps % trainer.log_every == 0 or result.steps == total_steps:
                _flush(pending, result, log, bar, clock, allow_nan=trainer.allow_nan)
                timer.collect()  # the flush just waited for the GPU: reading step events is free now
                log(hooks.on_flush(result.steps), result.steps)
            if result.steps >= total_steps:
                break
        clock.pause()
        with hooks.evaluation():
            result.final_eval = evaluate(inner, eval_loader, device=device, autocast_dtype=autocast_dtype)
        log(result.final_eval, result.steps)
        bar.set_postfix(loss=f"{result.last_loss:.4f}", acc=f"{result.final_eval.get('eval/accuracy', math.nan):.3f}")
        if result.steps >= total_steps:
            break
        clock.start()
        timer.start()  # the next step is timed from here, so evaluation is not in it
    bar.close()
    result.time_s, result.timing = clock.elapsed, timer.summary()
    return result


@dataclass
class OptimizerStep:
    """One optimizer step over a group of micro-batches, each inside the hooks' `step` (what is watched). The
    training loop's, and the one `bench plan` traces on fake tensors."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    hooks: StepHooks
    device: torch.device
    max_grad_norm: float
    autocast: Any

    def step(self, group: list[dict[str, Any]], result: TrainResult) -> tuple[Any, str, tuple[int, int]]:
        """Forward and backward on each micro-batch of `group` (host batches), then one update. Returns the mean
        of the micro-batches' losses (still on the device), why the step is not timed ("" if it is), and the
        examples and non-padding tokens of them all (a packed row holds several examples: both count the same
        for packed and padded batches)."""
        losses, untimed, samples, tokens = [], "", 0, 0
        for index, packed_or_padded in enumerate(group):
            host_batch, examples, real_tokens = batch_counts(packed_or_padded)  # host copies: no sync
            samples, tokens = samples + examples, tokens + real_tokens
            with scope("data_host"):
                batch = {k: v.to(self.device, non_blocking=True) for k, v in host_batch.items()}
            with self.hooks.step(result.steps + 1, batch) as reason:
                with self.autocast:
                    loss = self.model(**batch).loss
                # every micro-batch weighs the same, a leftover partial group's too; unscaled alone (k=1 as ever)
                (loss / len(group) if len(group) > 1 else loss).backward()
                if index == len(group) - 1:
                    with scope("optimizer"):
                        self._update(result)
            losses.append(loss.detach())
            untimed = untimed or reason
        return _mean(losses), untimed, (samples, tokens)

    def _update(self, result: TrainResult) -> None:
        """Clip, step the optimizer and the schedule, clear the gradients."""
        import torch

        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        if not result.steps:  # gradients and optimizer state both exist only now, before they are cleared
            result.state_bytes = training_state_bytes(self.model, self.optimizer)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)


def _mean(losses: list[Any]) -> Any:
    """The mean of device scalars, without a new op when there is one (an optimizer step per batch)."""
    import torch

    return losses[0] if len(losses) == 1 else torch.stack([loss.float() for loss in losses]).mean()


def _flush(pending: list[tuple[int, Any]], result: TrainResult, log: LogFn, bar: Any, clock: _Clock, *,
           allow_nan: bool) -> None:
    """Read buffered losses in one transfer, log them, stop on NaN/inf, refresh the progress bar."""
    import torch

    from bench.distributed.context import mean_over_ranks

    # a distributed run logs every rank's loss averaged (one collective per flush): all ranks stop on a NaN together
    values = mean_over_ranks(torch.stack([loss for _, loss in pending]).float()).cpu().tolist()
    for (step, _), value in zip(pending, values, strict=True):
        log({"train/loss": value}, step)
    bar.update(len(pending))
    pending.clear()
    result.last_loss = values[-1]
    bad = [v for v in values if not math.isfinite(v)]
    if bad and not allow_nan:
        raise NonFiniteLoss(f"training loss became {bad[0]} at or before step {result.steps}")
    bar.set_postfix(loss=f"{result.last_loss:.4f}", tok_s=f"{result.tokens / max(clock.seconds(), 1e-9):.0f}")
