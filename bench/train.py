"""The one training loop, the same for every technique: AdamW, linear warm-up/decay, autocast, clipping.

Step losses stay on the device and are read in bulk every `trainer.log_every` steps, so the loop does not
synchronise with the GPU on every step. The clock covers optimizer steps only: evaluation between epochs
is paused out of `train/time_s`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.config import TrainerConfig
from bench.metrics import evaluate_classifier

LogFn = Callable[[dict[str, float], int], None]


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


def build_optimizer(model: Any, trainer: TrainerConfig) -> Any:
    """AdamW from torch-optimi: identical to torch's AdamW on fp32 weights, and with Kahan summation on
    16-bit weights, where plain AdamW would round most small updates away (pure bf16 full fine-tuning)."""
    import optimi

    trainable = [p for p in model.parameters() if p.requires_grad]
    return optimi.AdamW(trainable, lr=trainer.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=trainer.weight_decay)


def train(*, model: Any, train_loader: Any, eval_loader: Any, trainer: TrainerConfig, device: Any,
          autocast_dtype: Any, log: LogFn, desc: str) -> TrainResult:
    """Train for `trainer.epochs` (or `trainer.max_steps`), evaluating after each epoch and at the end."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    total_steps = min(trainer.epochs * len(train_loader), trainer.max_steps or math.inf)
    optimizer = build_optimizer(model, trainer)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(trainer.warmup_ratio * total_steps), total_steps)
    result, clock, pending = TrainResult(), _Clock(device), []
    bar = tqdm(total=total_steps, desc=desc, unit="step", dynamic_ncols=True)
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype != torch.float32)
    model.train()
    clock.start()
    for _epoch in range(trainer.epochs):
        for batch in train_loader:
            result.tokens += int(batch["attention_mask"].sum())  # counted on the host copy: no device sync
            result.samples += len(batch["labels"])
            with autocast:
                loss = model(**{k: v.to(device, non_blocking=True) for k, v in batch.items()}).loss
            loss.backward()
            if trainer.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            result.steps += 1
            pending.append((result.steps, loss.detach()))
            if result.steps % trainer.log_every == 0 or result.steps == total_steps:
                _flush(pending, result, log, bar, clock)
            if result.steps >= total_steps:
                break
        clock.pause()
        result.final_eval = evaluate_classifier(model, eval_loader, device=device, autocast_dtype=autocast_dtype)
        log(result.final_eval, result.steps)
        bar.set_postfix(loss=f"{result.last_loss:.4f}", acc=f"{result.final_eval['eval/accuracy']:.3f}")
        if result.steps >= total_steps:
            break
        clock.start()
    bar.close()
    result.time_s = clock.elapsed
    return result


def _flush(pending: list[tuple[int, Any]], result: TrainResult, log: LogFn, bar: Any, clock: _Clock) -> None:
    """Read buffered losses in one transfer, log them, stop on NaN/inf, refresh the progress bar."""
    import torch

    values = torch.stack([loss for _, loss in pending]).float().cpu().tolist()
    for (step, _), value in zip(pending, values, strict=True):
        log({"train/loss": value}, step)
    bar.update(len(pending))
    pending.clear()
    result.last_loss = values[-1]
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise NonFiniteLoss(f"training loss became {bad[0]} at or before step {result.steps}")
    bar.set_postfix(loss=f"{result.last_loss:.4f}", tok_s=f"{result.tokens / max(clock.seconds(), 1e-9):.0f}")
