"""The four contenders of `monitor_perf.py`, each timed by the same `StepClock`: bench with the monitor on,
bench with it off, a minimal hand-written PyTorch loop, and the Hugging Face Trainer."""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


class StepClock:
    """Wall time at each optimizer step's end; the same instrument for every variant."""

    def __init__(self, device: Any) -> None:
        self.device, self.ends = device, [time.perf_counter()]

    def tick(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
        self.ends.append(time.perf_counter())

    def median_after(self, warmup: int) -> float:
        durations = [b - a for a, b in itertools.pairwise(self.ends)]
        return statistics.median(durations[warmup:])


def build(ctx: Any) -> Any:
    """A fresh model, seeded, exactly as `bench run` builds it."""
    from transformers import set_seed

    from bench.models.build import build_model

    set_seed(ctx.cfg.seed)
    return build_model(method=ctx.cfg.method, spec=ctx.cfg.model, location=ctx.location, model_type=ctx.model_type,
                       labels=ctx.labels, device=ctx.device)


class _Timed:
    """The monitor's hooks, plus the shared step clock."""

    def __init__(self, monitor: Any, clock: StepClock) -> None:
        self.monitor, self.clock = monitor, clock

    def on_step(self, step: int) -> None:
        self.clock.tick()
        self.monitor.on_step(step)

    def on_flush(self, step: int) -> dict[str, float]:
        return self.monitor.on_flush(step)


def run_bench(ctx: Any, *, monitor_on: bool) -> float:
    """bench's path: tracker, monitor from before the model loads, the one training loop."""
    from bench.config import TrackerConfig
    from bench.measure.monitor import Monitor
    from bench.tasks.metrics import evaluate_classifier
    from bench.tracking.tracker import Tracker
    from bench.training.loop import train

    spec = dataclasses.replace(ctx.cfg.monitor, enabled=monitor_on)
    with tempfile.TemporaryDirectory() as folder, \
            Tracker(TrackerConfig(uri=ctx.store, experiment="perf"), run_name=f"monitor-{monitor_on}") as tracker, \
            Monitor.for_device(ctx.device, spec, timeline_dir=Path(folder)) as monitor:
        built = build(ctx)
        monitor.mark_training()
        clock = StepClock(ctx.device)
        train(model=built.model, train_loader=ctx.batches, eval_loader=ctx.eval_batches, trainer=ctx.cfg.trainer,
              device=ctx.device, autocast_dtype=built.compute_dtype, log=tracker.log, desc="bench",
              hooks=_Timed(monitor, clock), warmup_steps=ctx.warmup, evaluate=evaluate_classifier)
    return clock.median_after(ctx.warmup)


def run_hand(ctx: Any) -> float:
    """What one would write by hand: torch AdamW, autocast, clip, step. No logging, no progress bar."""
    import torch

    built = build(ctx)
    model, device = built.model, ctx.device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=ctx.cfg.trainer.lr)
    autocast = torch.autocast(device.type, dtype=built.compute_dtype, enabled=built.compute_dtype != torch.float32)
    model.train()
    clock = StepClock(device)
    for batch in ctx.batches:
        with autocast:
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), ctx.cfg.trainer.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.tick()
    return clock.median_after(ctx.warmup)


def run_trainer(ctx: Any, folder: Path) -> float:
    """The Hugging Face Trainer with its defaults (fused AdamW, linear schedule), fed the same batches."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    built = build(ctx)
    clock = StepClock(ctx.device)

    class Tick(TrainerCallback):
        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            clock.tick()

    class SameBatches(Trainer):
        def get_train_dataloader(self) -> Any:
            return torch.utils.data.DataLoader(ctx.batches, batch_size=None, shuffle=False)

    trainer_cfg = ctx.cfg.trainer
    arguments = TrainingArguments(
        output_dir=str(folder / "trainer"), max_steps=len(ctx.batches),
        per_device_train_batch_size=trainer_cfg.batch_size, learning_rate=trainer_cfg.lr,
        warmup_steps=int(trainer_cfg.warmup_ratio * len(ctx.batches)),
        max_grad_norm=trainer_cfg.max_grad_norm, weight_decay=trainer_cfg.weight_decay,
        bf16=built.compute_dtype == torch.bfloat16, fp16=built.compute_dtype == torch.float16,
        use_cpu=ctx.device.type == "cpu", logging_steps=trainer_cfg.log_every, report_to="none",
        save_strategy="no", eval_strategy="no", disable_tqdm=True, seed=ctx.cfg.seed)
    SameBatches(model=built.model, args=arguments, train_dataset=ctx.batches, callbacks=[Tick()]).train()
    return clock.median_after(ctx.warmup)


def fixed_costs(device: Any, steps: int = 300) -> dict[str, float]:
    """Median step of each loop on a model that costs almost nothing (one 8x3 linear map): what the loop's
    own machinery costs per step, in microseconds, free of the model's and the machine's noise."""
    import torch

    from bench.config import MonitorConfig, TrainerConfig
    from bench.measure.monitor import Monitor
    from bench.tasks.metrics import evaluate_classifier
    from bench.training.loop import train

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(8, 3, device=device)

        def forward(self, input_ids: Any, attention_mask: Any, labels: Any) -> Any:
            logits = self.head(input_ids[:, :8].float())
            return type("Output", (), {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits})

    batch = {"input_ids": torch.zeros(4, 16, dtype=torch.long), "attention_mask": torch.ones(4, 16, dtype=torch.long),
             "labels": torch.zeros(4, dtype=torch.long)}
    trainer = TrainerConfig(lr=1e-3, epochs=1)

    def bench(monitor_on: bool) -> float:
        with Monitor.for_device(device, MonitorConfig(enabled=monitor_on)) as monitor:
            clock = StepClock(device)
            train(model=Tiny(), train_loader=[batch] * steps, eval_loader=[batch], trainer=trainer, device=device,
                  autocast_dtype=torch.float32, log=lambda metrics, step: None, desc="fixed cost",
                  hooks=_Timed(monitor, clock), evaluate=evaluate_classifier)
        return clock.median_after(10)

    def hand() -> float:
        model = Tiny()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        clock = StepClock(device)
        for _ in range(steps):
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            clock.tick()
        return clock.median_after(10)

    bench(False)  # warm-up
    return {"bench_monitor_on_us": round(bench(True) * 1e6, 1), "bench_monitor_off_us": round(bench(False) * 1e6, 1),
            "hand_loop_us": round(hand() * 1e6, 1)}
