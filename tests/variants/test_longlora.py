"""LongLoRA S²-Attn against an independent full-mask reference, on tiny random Llama-style models."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from bench.config import ConfigError
from bench.techniques.impl.longlora import (
    ATTENTION_NAME,
    enable_s2_attention,
    group_size,
    longlora_peft_options,
    longlora_trainable_modules,
    s2_attention_forward,
)
from bench.techniques.longlora import SUPPORTED_MODEL_TYPES, check_longlora_supported

REFERENCE_NAME = "test_s2_reference"
VOCAB = 96


def tiny_model(model_type: str = "llama", *, tie: bool = False, seed: int = 0) -> Any:
    """hidden 64, 4 heads, 2 kv heads, 2 layers, random weights; sdpa attention."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  tie_word_embeddings=tie, attn_implementation="sdpa")
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


class FakeAttention(torch.nn.Module):
    """What the attention function reads from the module transformers passes it."""

    def __init__(self, *, kv_groups: int, ratio: float) -> None:
        super().__init__()
        self.num_key_value_groups = kv_groups
        self.longlora_group_ratio = ratio
        self.is_causal = True


def reference_s2(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
                 *, size: int, scaling: float | None = None) -> torch.Tensor:
    """S²-Attn written as one full [T, T] mask per head, from the paper's definition: a token at position p
    is in group (p - shift) mod T // G, shift 0 for heads [0, H/2) and G/2 for the rest; it attends to
    earlier-or-same positions of its own group that the model's mask allows (and always to itself)."""
    batch, heads, seq_len, _ = query.shape
    key = key.repeat_interleave(heads // key.shape[1], dim=1)
    value = value.repeat_interleave(heads // value.shape[1], dim=1)
    pos = torch.arange(seq_len)
    causal = pos[None, :] <= pos[:, None]
    model_mask = torch.ones(batch, seq_len, seq_len, dtype=torch.bool) if attention_mask is None \
        else attention_mask[:, 0]
    outputs = []
    for head in range(heads):
        shift = size // 2 if head >= heads // 2 else 0
        group = ((pos - shift) % seq_len) // size
        allowed = (group[:, None] == group[None, :]) & causal & model_mask | torch.eye(seq_len, dtype=torch.bool)
        outputs.append(F.scaled_dot_product_attention(query[:, head:head + 1], key[:, head:head + 1],
                                                      value[:, head:head + 1], attn_mask=allowed[:, None],
                                                      scale=scaling))
    return torch.cat(outputs, dim=1).transpose(1, 2)


def reference_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, scaling: float | None = None,
                        **_: Any) -> tuple[torch.Tensor, None]:
    """The reference as a transformers attention function (training mode only: that is what we compare)."""
    size = group_size(query.shape[2], module.longlora_group_ratio)
    return reference_s2(query, key, value, attention_mask, size=size, scaling=scaling), None


def use_reference(model: Any, ratio: float) -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(REFERENCE_NAME, reference_attention)
    AttentionMaskInterface.register(REFERENCE_NAME, sdpa_mask)
    for module in model.modules():
        if hasattr(module, "num_key_value_groups"):
            module.longlora_group_ratio = ratio
    model.set_attn_implementation(REFERENCE_NAME)


def right_padded_batch(seq_len: int, lengths: list[int], seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB, (len(lengths), seq_len), generator=generator)
    attention_mask = (torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": input_ids * attention_mask, "attention_mask": attention_mask}


def random_qkv(batch: int, heads: int, kv_heads: int, seq_len: int, head_dim: int = 8) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seq_len)
    return (torch.randn(batch, heads, seq_len, head_dim, generator=generator),
            torch.randn(batch, kv_heads, seq_len, head_dim, generator=generator),
            torch.randn(batch, kv_heads, seq_len, head_dim, generator=generator))


def sdpa_logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.set_attn_implementation("sdpa")
    return model(**batch).logits


# (a) one group is exactly standard causal attention


@pytest.mark.parametrize("model_type", SUPPORTED_MODEL_TYPES)
def test_one_group_model_equals_sdpa(model_type: str) -> None:
    model = tiny_model(model_type).train()
    batch = right_padded_batch(24, [24, 17])
    expected = sdpa_logits(model, batch)
    enable_s2_attention(model, group_ratio=1.0)
    assert model.config._attn_implementation == ATTENTION_NAME
    torch.testing.assert_close(model(**batch).logits, expected, rtol=0, atol=0)


def test_one_group_function_equals_causal_sdpa() -> None:
    query, key, value = random_qkv(2, 4, 2, 16)
    module = FakeAttention(kv_groups=2, ratio=1.0).train()
    output, _ = s2_attention_forward(module, query, key, value, None, scaling=0.3)
    expected = F.scaled_dot_product_attention(query, key.repeat_interleave(2, 1), value.repeat_interleave(2, 1),
                                              is_causal=True, scale=0.3).transpose(1, 2)
    torch.testing.assert_close(output, expected)


# (b) several groups equal the full-mask reference


@pytest.mark.parametrize(("seq_len", "ratio", "size"), [(4096, 0.25, 1024), (100, 0.1, 10), (30, 0.25, 8),
                                                         (3, 0.25, 2), (64, 1.0, 64)])
def test_group_size(seq_len: int, ratio: float, size: int) -> None:
    assert group_size(seq_len, ratio) == size


@pytest.mark.parametrize(("heads", "kv_heads", "seq_len", "ratio"), [
    (4, 2, 32, 0.25),  # 4 groups of 8, GQA
    (9, 3, 30, 0.25),  # SmolLM2's head layout; 30 is no multiple of the group size 8: internal padding
    (3, 3, 20, 0.5),  # odd head count: 1 plain head, 2 shifted
    (4, 1, 13, 0.2),  # groups of 3 (odd): shift 1
])
def test_function_matches_reference(heads: int, kv_heads: int, seq_len: int, ratio: float) -> None:
    from transformers.masking_utils import sdpa_mask

    query, key, value = random_qkv(2, heads, kv_heads, seq_len)
    module = FakeAttention(kv_groups=heads // kv_heads, ratio=ratio).train()
    size = group_size(seq_len, ratio)
    assert size < seq_len
    inputs = [tensor.clone().requires_grad_() for tensor in (query, key, value)]
    output, _ = s2_attention_forward(module, *inputs, None, scaling=0.5)
    expected = reference_s2(query, key, value, None, size=size, scaling=0.5)
    torch.testing.assert_close(output, expected)
    weights = torch.randn_like(output)
    grads = torch.autograd.grad((output * weights).sum(), inputs)
    reference_inputs = [tensor.clone().requires_grad_() for tensor in (query, key, value)]
    expected = reference_s2(*reference_inputs, None, size=size, scaling=0.5)
    for grad, expected_grad in zip(grads, torch.autograd.grad((expected * weights).sum(), reference_inputs),
                                   strict=True):
        torch.testing.assert_close(grad, expected_grad)

    # Right padding (bench's SFT collator) hides only later keys, which causality hides anyway; left padding
    # hides earlier ones, so only an honoured mask passes it.
    paddings = (_padding(seq_len, [seq_len, seq_len - 7], left=False), _padding(seq_len, [seq_len - 5, 7], left=True))
    for padding in paddings:
        mask = sdpa_mask(batch_size=2, q_length=seq_len, kv_length=seq_len, attention_mask=padding)
        output, _ = s2_attention_forward(module, query, key, value, mask, scaling=0.5)
        expected = reference_s2(query, key, value, mask, size=size, scaling=0.5)
        assert torch.isfinite(output).all()
        real = padding[:, :, None, None].expand_as(output)
        torch.testing.assert_close(output[real], expected[real])


def _padding(seq_len: int, lengths: list[int], *, left: bool) -> torch.Tensor:
    real = torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]
    return real.flip(1) if left else real


@pytest.mark.parametrize("model_type", SUPPORTED_MODEL_TYPES)
def test_model_matches_reference_with_right_padding(model_type: str) -> None:
    model = tiny_model(model_type).train()
    batch = right_padded_batch(32, [32, 21])
    use_reference(model, 0.25)
    expected = model(**batch).logits
    enable_s2_attention(model, group_ratio=0.25)
    output = model(**batch).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(output[real], expected[real])
    assert torch.isfinite(output).all()
    assert not torch.allclose(output[real], sdpa_logits(model, batch)[real], atol=1e-3)  # really grouped


@pytest.mark.parametrize("layout", ["left_padded", "packed"])
def test_model_honours_the_mask(layout: str) -> None:
    """Left padding and packed sequences (position ids restarting, no attention mask) both reach the
    attention function as a 4-D mask that hides earlier keys."""
    model = tiny_model().train()
    if layout == "left_padded":
        batch = right_padded_batch(32, [32, 21])
        batch = {name: tensor.flip(1) for name, tensor in batch.items()}
        real = batch["attention_mask"].bool()
    else:
        batch = {"input_ids": right_padded_batch(32, [32])["input_ids"],
                 "position_ids": torch.cat([torch.arange(13), torch.arange(19)])[None],
                 "use_cache": False}  # transformers looks for packed sequences only without a cache
        real = torch.ones(1, 32, dtype=torch.bool)
    use_reference(model, 0.25)
    expected = model(**batch).logits
    enable_s2_attention(model, group_ratio=0.25)
    torch.testing.assert_close(model(**batch).logits[real], expected[real])


# (c) no future leak, also through the last shifted group (tail followed by head)


@pytest.mark.parametrize("cut", [1, 3, 9, 20, 30])
def test_no_future_leak(cut: int) -> None:
    model = tiny_model().train()
    enable_s2_attention(model, group_ratio=0.25)  # T=32: groups of 8; the last shifted one holds 28-31, 0-3
    tokens = right_padded_batch(32, [32])["input_ids"]
    changed = tokens.clone()
    changed[:, cut + 1:] = (changed[:, cut + 1:] + 1) % VOCAB
    before, after = model(input_ids=tokens).logits, model(input_ids=changed).logits
    torch.testing.assert_close(before[:, :cut + 1], after[:, :cut + 1], rtol=0, atol=0)
    assert not torch.allclose(before[:, cut + 1:], after[:, cut + 1:])


# (d) evaluation uses full attention


def test_eval_mode_is_standard_attention() -> None:
    model = tiny_model().eval()
    batch = right_padded_batch(32, [32, 19])
    expected = sdpa_logits(model, batch)
    enable_s2_attention(model, group_ratio=0.25)
    torch.testing.assert_close(model(**batch).logits, expected, rtol=0, atol=0)


# (e) training: LoRA + trainable embedding and norms through peft, tied embeddings kept tied


def test_lora_plus_training_lowers_loss_and_keeps_tying() -> None:
    from peft import LoraConfig, get_peft_model

    base = tiny_model(tie=True)
    options = longlora_peft_options(base)
    norms = [name for name in options["modules_to_save"] if name != "model.embed_tokens"]
    assert options["modules_to_save"][0] == "model.embed_tokens" and len(norms) == 2 * 2 + 1
    assert options["ensure_weight_tying"] is True
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM", **options))
    enable_s2_attention(model, group_ratio=0.25)
    model.train()
    inner = model.get_base_model()
    embedding = inner.model.embed_tokens.modules_to_save["default"].weight
    assert inner.lm_head.modules_to_save["default"].weight is embedding  # one trainable copy, still tied

    batch = right_padded_batch(32, [32, 26])
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = model(**batch, labels=labels).loss
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
    named = dict(model.named_parameters())
    for name in ("lora_B", "embed_tokens.modules_to_save", "input_layernorm.modules_to_save", "model.norm."):
        grads = [p.grad for n, p in named.items() if name in n and p.requires_grad]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), name
    assert losses[-1] < losses[0] - 0.5, losses


def test_trainable_modules_are_exact_names() -> None:
    model = tiny_model()
    names = longlora_trainable_modules(model)
    assert names == ["model.embed_tokens", "model.layers.0.input_layernorm", "model.layers.0.post_attention_layernorm",
                     "model.layers.1.input_layernorm", "model.layers.1.post_attention_layernorm", "model.norm"]
    assert longlora_peft_options(model)["ensure_weight_tying"] is False


# (f) only causal LMs of a verified Llama-style type


@pytest.mark.parametrize(("model_type", "task", "needles"), [
    ("bert", "classification", ["task='classification'", "causal_lm"]),
    ("bert", "causal_lm", ["'bert'", "llama"]),
    ("gpt2", "causal_lm", ["'gpt2'", "llama, mistral, qwen2"]),
])
def test_unsupported_raise_one_line(model_type: str, task: str, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        check_longlora_supported(model_type, task)
    message = str(error.value)
    assert "\n" not in message
    assert all(needle in message for needle in needles), message


def test_supported_and_bad_ratio() -> None:
    check_longlora_supported("llama", "causal_lm")
    with pytest.raises(ConfigError, match=r"method.attn_group_ratio=0 .*\(0, 1\]"):
        enable_s2_attention(tiny_model(), group_ratio=0)
