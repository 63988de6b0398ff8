"""Truth tests for the tensor accounting: tensors of known size, allocated inside a real training step (the one
loop, the real monitor), are found in the right category, exact to the byte; the policy watches the steps it
promises and keeps them out of the throughput."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from bench.config import MonitorConfig, TrainerConfig
from bench.measure.monitor import Monitor
from bench.models.footprint import training_state_bytes
from bench.training.loop import build_optimizer, train

CPU = torch.device("cpu")
PARAMS = 1024  # fp32 weights of the toy model: 4 KiB


class _KnownStep(torch.autograd.Function):
    """Forward keeps an activation of `act` floats for backward; backward allocates a temporary of `temp`
    floats before it computes the weight's gradient. Nothing else of any size is allocated."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, act: int, temp: int) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(torch.empty(act))
        ctx.temp = temp
        return weight.sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:  # noqa: ANN001
        temporary = torch.empty(ctx.temp)
        weight_grad = grad.expand(PARAMS).clone()
        del temporary
        return weight_grad, None, None


class _Toy(torch.nn.Module):
    def __init__(self, act: int, temp: int, eval_only: int = 0) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(PARAMS))
        self.act, self.temp, self.eval_only = act, temp, eval_only

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> Any:
        # a transformers output, as a real model returns: torch's module tracker sees the tensors inside it
        from transformers.modeling_outputs import SequenceClassifierOutput

        if not self.training:
            torch.empty(self.eval_only)  # evaluation's own allocation, freed at once
        return SequenceClassifierOutput(loss=_KnownStep.apply(self.weight, self.act, self.temp))


def _batches(sizes: list[int]) -> list[dict[str, torch.Tensor]]:
    """One batch per entry, of 2 rows of `size` tokens."""
    return [{"input_ids": torch.zeros(2, size, dtype=torch.long),
             "attention_mask": torch.ones(2, size, dtype=torch.long), "labels": torch.zeros(2, dtype=torch.long)}
            for size in sizes]


def _evaluate(model, loader, *, device, autocast_dtype) -> dict[str, float]:  # noqa: ANN001
    model.eval()
    with torch.no_grad():
        for batch in loader:
            model(**batch)
    model.train()
    return {"eval/accuracy": 0.5}


def _run(model: torch.nn.Module, sizes: list[int], policy: str = "largest", warmup: int = 0):
    trainer = TrainerConfig(lr=1e-3, epochs=1, log_every=100, max_grad_norm=0.0)
    with Monitor.for_device(CPU, MonitorConfig(enabled=False, tensors=policy)) as monitor:
        monitor.mark_training()
        result = train(model=model, train_loader=_batches(sizes), eval_loader=_batches([8]), trainer=trainer,
                       device=CPU, autocast_dtype=torch.float32, log=lambda metrics, step: None, desc="truth",
                       hooks=monitor, warmup_steps=warmup, evaluate=_evaluate)
    return monitor.summary(), monitor.tags(), result


def test_known_tensors_land_in_their_categories_exact_to_the_byte() -> None:
    """Two toy models that differ only in the size of the activation and of the backward's temporary: the
    peak's activation and temporary bytes differ by exactly those sizes, and nothing else moves."""
    small, tags, result = _run(_Toy(act=2**20, temp=2**19), [8, 8])
    large, _, _ = _run(_Toy(act=3 * 2**20, temp=2**20), [8, 8])
    assert large["mem/at_peak/activations_bytes"] - small["mem/at_peak/activations_bytes"] == 4 * 2 * 2**20
    assert large["mem/at_peak/temporaries_bytes"] - small["mem/at_peak/temporaries_bytes"] == 4 * 2**19
    assert large["mem/tensor_peak_bytes"] - small["mem/tensor_peak_bytes"] == 4 * (2 * 2**20 + 2**19)
    for figures in (small, large):
        assert figures["mem/at_peak/params_bytes"] == 4 * PARAMS
        # step 2 runs its backward with AdamW's state alive: two fp32 moments per weight, as the optimizer holds
        assert figures["mem/at_peak/optimizer_bytes"] == result.state_bytes["mem/optimizer_bytes"] == 2 * 4 * PARAMS
        assert figures["mem/at_peak/grads_bytes"] == 0  # set_to_none: step 2's gradient is not there yet
        batch = _batches([8])[0]  # the inputs: ids and mask [2, 8] and labels [2], int64
        assert figures["mem/at_peak/other_bytes"] == sum(t.numel() * t.element_size() for t in batch.values())
        categories = [key for key in figures if key.startswith("mem/at_peak/")]
        assert sum(figures[key] for key in categories) == figures["mem/tensor_peak_bytes"]
    assert tags["mem/peak_phase"] == "backward" and tags["mem/peak_module"] == "_Toy"


def test_gradients_and_optimizer_state_are_counted_where_they_are() -> None:
    """With a tiny activation and temporary, the peak is step 1's optimizer step: the gradient and the state
    AdamW creates both exist then, each exact."""
    figures, tags, result = _run(_Toy(act=1, temp=1), [8, 8])
    assert tags["mem/peak_phase"] == "optimizer" and tags["mem/peak_module"] == "optimizer.step"
    assert figures["mem/at_peak/grads_bytes"] == 4 * PARAMS
    assert figures["mem/at_peak/optimizer_bytes"] >= result.state_bytes["mem/optimizer_bytes"]  # plus its work


def test_largest_policy_watches_steps_one_two_and_each_larger_batch() -> None:
    figures, tags, result = _run(_Toy(act=1, temp=1), [8, 8, 8, 16, 8, 12, 24, 8])
    assert figures["mem/watched_steps"] == 4  # steps 1, 2, 4 (16 > 8) and 7 (24 > 16)
    assert result.timing["train/watched_steps_excluded"] == 4 and result.timing["train/timed_steps"] == 4
    assert tags["mem/tensor_policy"] == "largest"
    every, _, result = _run(_Toy(act=1, temp=1), [8, 8, 8], policy="every")
    assert every["mem/watched_steps"] == 3
    off, off_tags, result = _run(_Toy(act=1, temp=1), [8, 8], policy="off")
    assert "mem/tensor_peak_bytes" not in off and "mem/peak_module" not in off_tags
    assert result.timing["train/watched_steps_excluded"] == 0


def test_evaluation_has_its_own_peak() -> None:
    """An allocation only evaluation makes shows in evaluation's peak (with the weights and AdamW's state, alive
    then too) and never in training's."""
    figures, _, result = _run(_Toy(act=1, temp=1, eval_only=4 * 2**20), [8, 8])
    state, eval_only = result.state_bytes["mem/optimizer_bytes"], 4 * 4 * 2**20
    assert 0 <= figures["mem/eval_tensor_peak_bytes"] - (4 * PARAMS + state + eval_only) < 1024  # + scalars
    assert figures["mem/tensor_peak_bytes"] < eval_only / 100


def test_a_peft_model_with_frozen_weights_is_tracked() -> None:
    """peft freezes the base: torch's tracker would try to hook those weights' gradients and fail."""
    peft = pytest.importorskip("peft")
    base = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Linear(32, 3))
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["0"]))
    optimizer = build_optimizer(model, TrainerConfig(lr=1e-3))
    with Monitor.for_device(CPU, MonitorConfig(enabled=False)) as monitor:
        monitor.mark_training()
        monitor.on_train_start(model, optimizer)
        for step in (1, 2):
            with monitor.step(step, {"x": torch.ones(4, 32)}):
                model(torch.ones(4, 32)).sum().backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    figures = monitor.summary()
    frozen = sum(p.numel() * 4 for p in model.parameters())
    assert figures["mem/at_peak/params_bytes"] == frozen
    assert figures["mem/at_peak/optimizer_bytes"] == training_state_bytes(model, optimizer)["mem/optimizer_bytes"]


def test_largest_policy_with_accumulation_watches_micro_batches() -> None:
    """With two micro-batches an optimizer step, every micro-batch of steps 1 and 2 is watched, then a batch
    larger than all before it of its kind: the first of its step (no gradients alive) or a later one (its
    forward runs on the gradients accumulated so far, a peak the same batch never shows as a first); an
    optimizer step with a watched micro-batch stays out of the throughput."""
    trainer = TrainerConfig(lr=1e-3, epochs=1, log_every=100, max_grad_norm=0.0, grad_accum_steps=2)
    sizes = [8, 8, 8, 8, 16, 8, 8, 16, 8, 8]  # steps 1 and 2 in full; 16 as a first (step 3), as a second (step 4)
    # policy -> watched micro-batches, optimizer steps left out of the throughput, steps timed
    for policy, watched, excluded, timed in (("largest", 6, 4, 1), ("every", 10, 0, 5)):  # every: all are timed
        with Monitor.for_device(CPU, MonitorConfig(enabled=False, tensors=policy)) as monitor:
            monitor.mark_training()
            result = train(model=_Toy(act=1, temp=1), train_loader=_batches(sizes), eval_loader=[], trainer=trainer,
                           device=CPU, autocast_dtype=torch.float32, log=lambda metrics, step: None, desc="truth",
                           hooks=monitor, evaluate=_evaluate)
        assert result.steps == 5 and monitor.summary()["mem/watched_steps"] == watched
        assert (result.timing["train/watched_steps_excluded"], result.timing["train/timed_steps"]) == (excluded, timed)
