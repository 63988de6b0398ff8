"""Two training steps of a technique's model on fake tensors, with the tensor accounting `bench run` uses.

The model comes from `bench.models.build.assemble` on a `SkeletonWeights` (meta tensors: shapes, no storage). Its
parameters, buffers and 4-bit quantization state become fake tensors on the CPU device (`FakeTensorMode`: every
op computes shapes and dtypes, allocates nothing, and dispatches as on a real CPU tensor, so autocast, dropout
and the attention kernel choose as they would), then the steps run under `bench.measure.monitor.tensors`' tracker.
Two optimizer steps, as a run's accounting watches two (each of `trainer.grad_accum_steps` micro-batches): the
first creates the optimizer's state while the gradients exist, the second runs its forward and backward with
that state alive. They run through the training loop's own step (`bench.training.loop.OptimizerStep`), so the levers
(checkpointing, the optimizer's state format, accumulation) act as in a run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from bench.models.build import BuiltModel


def fake_model(model: torch.nn.Module, mode: Any, device: torch.device) -> None:
    """Every parameter and buffer of `model` (meta tensors), and the tensors 4-bit layers hold outside them, as
    fake tensors on `device`; shared tensors (tied embeddings, code tables) stay shared."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensor

    memo: dict[int, tuple[Any, Any]] = {}  # id -> (the original, kept alive so its id is not reused; its fake)

    def fake(tensor: torch.Tensor) -> Any:
        if id(tensor) not in memo:
            made = FakeTensor(mode, tensor, device) if tensor.device.type == "meta" else tensor
            memo[id(tensor)] = (tensor, made)
        return memo[id(tensor)][1]

    def fake_parameter(parameter: Any) -> Any:
        if id(parameter) not in memo:
            new = torch.nn.Parameter(FakeTensor(mode, parameter.data, device), requires_grad=parameter.requires_grad)
            new.__dict__.update(parameter.__dict__)  # bitsandbytes' quant_state, quant_type, ...
            memo[id(parameter)] = (parameter, new)
        return memo[id(parameter)][1]

    for module in model.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is not None:
                module._parameters[name] = fake_parameter(parameter)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None:
                module._buffers[name] = fake(buffer)
        _fake_held_state(module, fake)


def _fake_held_state(module: torch.nn.Module, fake: Any) -> None:
    """bitsandbytes' QuantState (and its nested state) and hqq's meta dict and plain bias, made fake in place."""
    weight = module._parameters.get("weight")
    states = [getattr(weight, "quant_state", None)]
    while states[-1] is not None:
        state = states[-1]
        for key, value in vars(state).items():
            if hasattr(value, "untyped_storage"):
                setattr(state, key, fake(value))
        states.append(getattr(state, "state2", None))
    if isinstance(getattr(module, "meta", None), dict) and getattr(module, "W_q", None) is not None:
        module.meta = {k: fake(v) if hasattr(v, "untyped_storage") else v for k, v in module.meta.items()}
        if hasattr(getattr(module, "bias", None), "untyped_storage") and "bias" not in module._parameters:
            module.bias = fake(module.bias)


def host_batch(*, batch_size: int, seq_len: int, causal: bool, packed: bool = False) -> dict[str, Any]:
    """A batch of `batch_size` sequences of `seq_len` tokens, every token real but the last one of the last row:
    the worst case of dynamic padding, the batch `bench run`'s accounting would find largest. One padded position
    because a batch padded anywhere makes the model expand its attention mask to batch x 1 x length x length (a
    batch with no padding skips it: on MiniLM-sized rows that was 3 KiB a row the plan missed). Real (tiny) host
    tensors, as a data loader gives them: the loop counts their tokens, and the fake mode takes them in as
    inputs. `packed` (data.packing): every row full, of two examples (positions restarting halfway), as a packed
    run's batches nearly all are; no padding mask, so the model builds the block-diagonal one from the positions."""
    import torch

    shape = (batch_size, seq_len)
    if packed:
        from bench.tasks.base import PACKED_COUNTS

        half = seq_len // 2
        positions = torch.cat([torch.arange(half), torch.arange(seq_len - half)]).repeat(batch_size, 1)
        return {"input_ids": torch.zeros(shape, dtype=torch.long), "labels": torch.zeros(shape, dtype=torch.long),
                "position_ids": positions, PACKED_COUNTS: torch.tensor([2 * batch_size, batch_size * seq_len])}
    labels = torch.zeros(shape if causal else (batch_size,), dtype=torch.long)
    mask = torch.ones(shape, dtype=torch.long)
    mask[-1, -1] = 0
    return {"input_ids": torch.zeros(shape, dtype=torch.long), "attention_mask": mask, "labels": labels}


class _Watched:
    """The training loop's hooks for a trace: every micro-batch watched by the tensor accounting, and with
    `scratch` (bench.plan.scratch.OpScratch) library ops' own scratch traced on top of it."""

    def __init__(self, accounting: Any, scratch: Any = None) -> None:
        self.accounting, self.scratch = accounting, scratch

    @contextlib.contextmanager
    def step(self, step: int, batch: dict[str, Any]) -> Iterator[str]:
        with self.accounting.step(step, batch), self.scratch or contextlib.nullcontext():
            yield "watched"


@dataclass
class Traced:
    """What a trace found: the tensor accounting with its peak, and per phase the largest live bytes plus an op's
    own scratch (bench.plan.scratch), with the ops whose scratch could not be traced."""

    accounting: Any
    scratch: dict[str, int] = field(default_factory=dict)
    untraced: set[str] = field(default_factory=set)


def trace_steps(built: BuiltModel, trainer: Any, *, batch: dict[str, Any], device: torch.device, steps: int = 2,
                op_scratch: bool = False) -> Traced:
    """Run `steps` optimizer steps of `built.model` (already fake) with the training loop's own step
    (`bench.training.loop.OptimizerStep`: the levers applied, `trainer.grad_accum_steps` micro-batches a step), every
    micro-batch watched as a run watches the first two steps; returns the `TensorAccounting` with the peak and, with
    `op_scratch` (a CPU plan), what library ops allocate beyond their outputs."""
    import torch

    from bench.measure.monitor.tensors import TensorAccounting
    from bench.models.footprint import held_outside_parameters
    from bench.training.levers import apply_levers
    from bench.training.loop import OptimizerStep, TrainResult, build_optimizer

    model = built.model
    apply_levers(model, trainer)
    model.train()
    optimizer = build_optimizer(model, trainer, built.rates(trainer.lr))
    accounting = TensorAccounting(device, "every", held_outside_parameters)
    accounting.start(model, optimizer)
    scratch = None
    if op_scratch:
        from bench.plan.scratch import OpScratch

        scratch = OpScratch(lambda: accounting.tracker.now())
    autocast = torch.autocast(device.type, dtype=built.compute_dtype, enabled=built.compute_dtype != torch.float32)
    stepper = OptimizerStep(model=model, optimizer=optimizer, scheduler=SimpleNamespace(step=lambda: None),
                            hooks=_Watched(accounting, scratch), device=device, max_grad_norm=trainer.max_grad_norm,
                            autocast=autocast)
    result = TrainResult(steps=1)  # counted from 1: the loop's one-off read of the real state sizes is skipped
    for _ in range(steps):
        stepper.step([batch] * trainer.grad_accum_steps, result)
        result.steps += 1
    return Traced(accounting, scratch.peaks, scratch.untraced) if scratch is not None else Traced(accounting)
