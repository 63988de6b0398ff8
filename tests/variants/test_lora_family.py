"""DoRA, rsLoRA, PiSSA, OLoRA and LoftQ build what their papers describe, checked on a tiny BERT."""

from __future__ import annotations

import pytest
import torch
from support import TINY_BERT_HIDDEN, TINY_BERT_LABELS, TINY_BERT_LAYERS, tiny_bert_location, tiny_bert_spec

from bench.config import MethodConfig
from bench.models.build import build_model
from bench.models.footprint import parameter_counts
from bench.models.load import ModelLocation, load_classifier

LABELS = TINY_BERT_LABELS
HIDDEN, LAYERS, R = TINY_BERT_HIDDEN, TINY_BERT_LAYERS, 4
SPEC = tiny_bert_spec()
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def location() -> ModelLocation:
    return tiny_bert_location(SPEC)


def _build(location: ModelLocation, name: str, **knobs):
    method = MethodConfig(name=name, r=R, alpha=16, dropout=0.0, target_modules="qv", dtype="fp32",
                          compute_dtype="fp32", **knobs)
    return build_model(method=method, spec=SPEC, location=location, model_type="bert", labels=LABELS, device=CPU)


def _lora_layers(model) -> dict[str, torch.nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def _logits(model, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (3, 16), generator=generator)
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def _original(location: ModelLocation):
    return load_classifier(location=location, spec=SPEC, labels=LABELS, dtype=torch.float32, device=CPU)


def _plain_lora_trainable() -> int:
    return LAYERS * 2 * R * (HIDDEN + HIDDEN) + HIDDEN * len(LABELS) + len(LABELS)


def test_dora_adds_one_magnitude_per_output_and_starts_at_the_weight_norm(location: ModelLocation) -> None:
    built = _build(location, "dora")
    layers = _lora_layers(built.model)
    assert len(layers) == LAYERS * 2
    for layer in layers.values():
        magnitude = layer.lora_magnitude_vector["default"].weight
        assert magnitude.requires_grad and magnitude.shape == (HIDDEN,)
        # DoRA's m starts at the column norm of W (peft stores W as out x in: the norm over inputs)
        assert torch.allclose(magnitude, layer.get_base_layer().weight.norm(dim=1), rtol=1e-5)
    assert parameter_counts(built.model)["params/trainable"] == _plain_lora_trainable() + LAYERS * 2 * HIDDEN
    # m = ||W|| and B = 0: DoRA starts as the pretrained model
    assert torch.allclose(_logits(built.model), _logits(_original(location)), atol=1e-5)


def test_rslora_scales_by_alpha_over_root_r(location: ModelLocation) -> None:
    rs, plain = _build(location, "rslora"), _build(location, "lora")
    for layer in _lora_layers(rs.model).values():
        assert layer.scaling["default"] == pytest.approx(16 / R ** 0.5)
    for layer in _lora_layers(plain.model).values():
        assert layer.scaling["default"] == pytest.approx(16 / R)
    assert parameter_counts(rs.model)["params/trainable"] == _plain_lora_trainable()


@pytest.mark.parametrize("svd_iters", [0, 4])
def test_pissa_adapter_holds_the_top_singular_directions_and_the_model_is_unchanged(location: ModelLocation,
                                                                                    svd_iters: int) -> None:
    original = _original(location)
    built = _build(location, "pissa", svd_iters=svd_iters)
    weights = {name: module.weight for name, module in original.named_modules() if isinstance(module, torch.nn.Linear)}
    for name, layer in _lora_layers(built.model).items():
        w = weights[name.removeprefix("base_model.model.")]
        delta = layer.get_delta_weight("default")
        top, values = torch.linalg.svdvals(w)[:R], torch.linalg.svdvals(delta)
        assert values[R:].max() < 1e-5  # rank r
        if svd_iters == 0:  # the adapter is W's best rank-r part: its singular values are W's top r
            assert torch.allclose(values[:R], top, rtol=1e-4)
        else:  # randomized SVD, and random-init weights have a flat spectrum: most of the top-r energy
            assert values[:R].sum() > 0.9 * top.sum()
        assert not torch.allclose(layer.get_base_layer().weight, w)  # the base keeps only the residual
        assert torch.allclose(layer.get_base_layer().weight + delta, w, atol=1e-5)
    assert torch.allclose(_logits(built.model), _logits(original), atol=1e-4)


def test_olora_adapter_is_an_orthonormal_basis_and_the_model_is_unchanged(location: ModelLocation) -> None:
    original = _original(location)
    built = _build(location, "olora")
    for layer in _lora_layers(built.model).values():
        lora_b = layer.lora_B["default"].weight  # Q of W's QR decomposition, first r columns
        assert torch.allclose(lora_b.T @ lora_b, torch.eye(R), atol=1e-5)
    assert torch.allclose(_logits(built.model), _logits(original), atol=1e-4)


@torch.no_grad()
def _weight_error(built, original) -> float:
    """Mean over adapted layers of ||W - (dequantized base + scaling·BA)|| / ||W||."""
    from bitsandbytes.functional import dequantize_4bit

    weights = {name: module.weight for name, module in original.named_modules() if isinstance(module, torch.nn.Linear)}
    errors = []
    for name, layer in _lora_layers(built.model).items():
        w = weights[name.removeprefix("base_model.model.")]
        base = layer.get_base_layer().weight
        effective = dequantize_4bit(base.data, base.quant_state).float() + layer.get_delta_weight("default")
        errors.append(float((w - effective).norm() / w.norm()))
    return sum(errors) / len(errors)


def test_loftq_starts_closer_to_the_float_weights_than_qlora(location: ModelLocation) -> None:
    from bitsandbytes.nn import Linear4bit

    original = _original(location)
    qlora, loftq = _build(location, "qlora"), _build(location, "loftq", loftq_iter=3)
    for layer in _lora_layers(loftq.model).values():
        base = layer.get_base_layer()
        assert isinstance(base, Linear4bit) and base.weight.quant_state.quant_type == "nf4"
        assert base.weight.quant_state.nested  # double quantization kept
        assert layer.lora_B["default"].weight.abs().sum() > 0  # not LoRA's zero start
    qlora_error, loftq_error = _weight_error(qlora, original), _weight_error(loftq, original)
    assert loftq_error < 0.95 * qlora_error
    metrics = loftq.init_metrics
    assert metrics["loftq/weight_error_nf4"] == pytest.approx(qlora_error, rel=1e-3)
    assert metrics["loftq/weight_error_loftq"] == pytest.approx(loftq_error, rel=1e-3)
    reference = _logits(original)
    assert (_logits(loftq.model) - reference).abs().mean() < (_logits(qlora.model) - reference).abs().mean()
    assert parameter_counts(loftq.model)["params/trainable"] == parameter_counts(qlora.model)["params/trainable"]


def test_loftq_trains(location: ModelLocation) -> None:
    built = _build(location, "loftq")
    model = built.model
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    ids = torch.randint(5, 1000, (8, 12), generator=torch.Generator().manual_seed(1))
    labels = torch.arange(8) % 3
    losses = []
    for _ in range(6):
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
