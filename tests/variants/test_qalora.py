"""QA-LoRA on an HQQ INT4 base: analytic adapter size, a merge that only moves zero points, exact unmerge,
one-line errors for a bad group size, and the storage figures of the 4-bit base."""

from __future__ import annotations

import pytest
import torch
from hqq.core.quantize import HQQLinear
from peft import LoraConfig, TaskType, get_peft_model

from bench.config import ConfigError
from bench.models.footprint import base_weight_bits_per_param, parameter_counts, weights_bytes
from bench.techniques.impl.qalora import (
    QALoraHqqLinear,
    adapted_linear_names,
    check_group_size,
    merge_qalora,
    quantize_linears_hqq,
    register_qalora,
)

HIDDEN, INTERMEDIATE, LAYERS, LABELS, VOCAB = 128, 256, 2, 3, 100
GROUP, RANK = 32, 4
HEAD = ["classifier"]
# Merged vs unmerged logits, as a share of the largest logit. fp32: only float rounding is left, measured
# 1.1e-7 here and <= 1e-6 on MiniLM (g=64, 30 steps); 1e-5 leaves headroom. bf16 (hqq keeps scales and zero
# points in the compute dtype): measured 7e-3 here and 5e-3 on MiniLM, one bf16 step of the logits; 2**-6
# is two steps. The adapters move the logits several times more than that (checked), so a wrong fold fails.
MERGE_RTOL = {torch.float32: 1e-5, torch.bfloat16: 2**-6}


def _tiny_bert(seed: int = 0) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
                        intermediate_size=INTERMEDIATE, max_position_embeddings=64, num_labels=LABELS)
    return BertForSequenceClassification(config)


def _qalora(model: torch.nn.Module, targets: str | list[str], dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    names = adapted_linear_names(model, targets=targets, skip=HEAD)
    check_group_size(model, targets=names, group_size=GROUP, skip=HEAD)
    model.to(dtype)
    quantize_linears_hqq(model, group_size=GROUP, skip=HEAD, compute_dtype=dtype)
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=RANK, lora_alpha=2 * RANK, lora_dropout=0.0,
                        target_modules=names, modules_to_save=list(HEAD))
    register_qalora(config, group_size=GROUP)
    model = get_peft_model(model, config)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()  # adapters and head train in fp32, as bench.models.build does
    return model


def _autocast(dtype: torch.dtype) -> torch.autocast:
    return torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(0, VOCAB, (8, 16), generator=generator),
            "labels": torch.randint(0, LABELS, (8,), generator=generator)}


def _train(model: torch.nn.Module, dtype: torch.dtype, steps: int = 5) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    batch, losses = _batch(), []
    model.train()
    for _ in range(steps):
        with _autocast(dtype):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def _adapted(model: torch.nn.Module) -> dict[str, QALoraHqqLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, QALoraHqqLinear)}


@pytest.mark.parametrize("targets", [["query", "value"], "all-linear"])
def test_trainable_count_is_r_times_pooled_d_in_plus_d_out(targets: str | list[str]) -> None:
    model = _qalora(_tiny_bert(), targets)
    layers = _adapted(model)
    assert layers and all(isinstance(m.get_base_layer(), HQQLinear) for m in layers.values())
    # QA-LoRA's A sees d_in / g pooled features: r * (d_in / g + d_out) per layer, then the head in full.
    expected = sum(RANK * (m.in_features // GROUP + m.out_features) for m in layers.values())
    expected += HIDDEN * LABELS + LABELS
    assert parameter_counts(model)["params/trainable"] == expected
    if targets == "all-linear":  # every body linear and the pooler: q, k, v, out, intermediate, output
        assert len(layers) == LAYERS * 6 + 1


def _logits(model: torch.nn.Module, dtype: torch.dtype) -> torch.Tensor:
    with torch.no_grad(), _autocast(dtype):
        return model(input_ids=_batch()["input_ids"]).logits.float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_merge_moves_only_zero_points_and_keeps_the_logits(dtype: torch.dtype) -> None:
    model = _qalora(_tiny_bert(), ["query", "value", "intermediate.dense"], dtype)
    losses = _train(model, dtype)
    assert losses[-1] < losses[0]
    layers = _adapted(model)
    before = {name: {**m.get_base_layer().meta, "W_q": m.get_base_layer().W_q.clone()} for name, m in layers.items()}
    reference = _logits(model, dtype)
    tolerance = MERGE_RTOL[dtype] * reference.abs().max().item()
    for layer in layers.values():
        layer.scale_layer(0.0)
    assert (_logits(model, dtype) - reference).abs().max().item() > 5 * tolerance  # the adapters matter
    for layer in layers.values():
        layer.unscale_layer()
    model.merge_adapter()
    assert all(m.merged for m in layers.values())
    assert (_logits(model, dtype) - reference).abs().max().item() <= tolerance
    for name, layer in layers.items():
        base = layer.get_base_layer()
        assert isinstance(base, HQQLinear) and base.W_q.dtype == torch.uint8
        assert torch.equal(base.W_q, before[name]["W_q"])
        assert base.meta["scale"] is before[name]["scale"]
        assert not torch.equal(base.meta["zero"], before[name]["zero"])
    model.unmerge_adapter()
    for name, layer in layers.items():
        assert torch.equal(layer.get_base_layer().meta["zero"], before[name]["zero"])  # exactly, not nearly
    assert torch.equal(_logits(model, dtype), reference)
    unloaded = merge_qalora(model)
    assert not any(isinstance(m, QALoraHqqLinear) for m in unloaded.modules())
    for name in layers:
        base = unloaded.get_submodule(name.removeprefix("base_model.model."))
        assert isinstance(base, HQQLinear) and torch.equal(base.W_q, before[name]["W_q"])
    assert (_logits(unloaded, dtype) - reference).abs().max().item() <= tolerance


def test_dense_delta_weight_equals_the_forward_delta() -> None:
    model = _qalora(_tiny_bert(), ["query", "intermediate.dense", "output.dense"])
    generator = torch.Generator().manual_seed(2)
    for layer in _adapted(model).values():
        torch.nn.init.normal_(layer.lora_B["default"].weight, generator=generator)
        x = torch.randn(3, 5, layer.in_features, generator=generator)
        with torch.no_grad():
            forward_delta = layer(x) - layer.get_base_layer()(x)
            dense_delta = x @ layer.get_delta_weight("default").T
        assert forward_delta.abs().max() > 1e-2  # the adapter does something
        torch.testing.assert_close(dense_delta, forward_delta, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("group_size", "needles"), [
    (48, ["method.group_size=48", "d_in=128", "8, 16, 32, 64, 128"]),
    (512, ["method.group_size=512", "d_in=128", "8, 16, 32, 64, 128"]),
    (4, ["method.group_size=4", "multiple of 8", "8, 16, 32, 64, 128"]),
])
def test_bad_group_size_is_one_line_naming_d_in_and_choices(group_size: int, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        check_group_size(_tiny_bert(), targets=["query", "value"], group_size=group_size, skip=HEAD)
    message = str(error.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_targets_that_stay_in_float_are_refused() -> None:
    with pytest.raises(ConfigError, match="classifier"):
        check_group_size(_tiny_bert(), targets=["query", "classifier"], group_size=GROUP, skip=HEAD)
    with pytest.raises(ValueError, match="all-linear"):
        register_qalora(LoraConfig(target_modules="all-linear"), group_size=GROUP)


def test_plain_lora_on_hqq_keeps_peft_requantizing_merge() -> None:
    model = _tiny_bert()
    quantize_linears_hqq(model, group_size=GROUP, skip=HEAD, compute_dtype=torch.float32)
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=RANK, target_modules=["query"], modules_to_save=list(HEAD))
    config._register_custom_module({HQQLinear: QALoraHqqLinear})  # registered, but no use_qalora
    model = get_peft_model(model, config)
    layer = next(iter(_adapted(model).values()))
    assert "default" not in layer.lora_variant and layer.lora_A["default"].in_features == HIDDEN
    base = layer.get_base_layer()
    layer.merge()
    assert layer.get_base_layer() is not base  # peft re-quantized into a new HQQLinear


def test_footprint_counts_hqq_weights_as_stored() -> None:
    float_model = _tiny_bert()
    float_counts, float_bytes = parameter_counts(float_model), weights_bytes(float_model)
    linears = [m for n, m in float_model.named_modules() if isinstance(m, torch.nn.Linear) and n not in HEAD]
    weights = sum(m.weight.numel() for m in linears)
    model = _tiny_bert()
    assert quantize_linears_hqq(model, group_size=GROUP, skip=HEAD, compute_dtype=torch.float32) == len(linears)
    # Same logical size (weights and biases); bytes: 4 bits per weight plus an fp32 scale and zero per group.
    assert parameter_counts(model)["params/total"] == float_counts["params/total"]
    assert weights_bytes(model) == float_bytes - 4 * weights + weights // 2 + 2 * 4 * weights // GROUP
    # Bits per base weight leave out the adapters and the float head, which peft wraps.
    assert base_weight_bits_per_param(_qalora(_tiny_bert(), ["query", "value"])) == pytest.approx(4 + 2 * 32 / GROUP)
