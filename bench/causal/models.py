"""What a causal LM needs before its weights load: a check that the model has a causal-LM head, its context
limit, and the tiny random Llama for tests."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bench.config import ConfigError, ModelConfig
from bench.paths import cache_root

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def _decoder_only(model_type: str) -> bool:
    """A type transformers can build as a causal LM that is not an encoder or encoder-decoder: BERT and
    RoBERTa have a causal-LM class too (`BertLMHeadModel`), but no pretrained next-token head."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def check_causal_head(spec: ModelConfig, location: str) -> None:
    """Fail in seconds, from the config alone, when the model cannot be fine-tuned as a causal LM: its
    checkpoint names no `*ForCausalLM` class (MiniLM is a `BertModel`), or its type is not decoder-only."""
    if location.startswith("tiny:"):
        model_type, architectures = spec.architecture.get("model_type", "?"), []
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(location, revision=spec.revision, token=spec.token,
                                            trust_remote_code=spec.trust_remote_code)
        model_type, architectures = config.model_type, list(getattr(config, "architectures", None) or [])
    has_head = (any(name.endswith(_CAUSAL_SUFFIXES) for name in architectures) if architectures
                else _decoder_only(model_type))
    if not has_head:
        found = ", ".join(architectures) or model_type
        raise ConfigError(f"model={spec.name} ({found}) has no causal-LM head, so task=causal_lm cannot train it; "
                          "choose a decoder such as model=smollm2-135m, qwen2.5-0.5b, tiny-llama or a Llama-style "
                          "model.hub_id, or use task=classification")


def check_context(max_length: int, *, model_limit: int | None, tokenizer: Any, model_name: str) -> None:
    """`data.max_length` must fit the model's context (position embeddings) and its tokenizer's limit."""
    limits = [n for n in (model_limit, getattr(tokenizer, "model_max_length", None)) if n and n < 1_000_000]
    if limits and max_length > min(limits):
        raise ConfigError(f"data.max_length={max_length} exceeds model={model_name}'s context of {min(limits)} "
                          "tokens; lower data.max_length")


def materialize_tiny_causal(spec: ModelConfig, *, tokenizer: Any, seed: int) -> str:
    """Build the random-init causal LM once per (architecture, vocabulary, seed) and save it, so it loads
    through the same `from_pretrained` path as a real model (which 4-bit loading needs)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    recipe = {"architecture": spec.architecture, "vocab": len(tokenizer), "seed": seed, "head": "causal_lm",
              "pad": tokenizer.pad_token_id, "eos": end}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_root() / "tiny" / f"causal-{digest}"
    if (folder / "config.json").is_file():
        return str(folder)
    sizes = {k: v for k, v in spec.architecture.items() if k != "model_type"}
    config = AutoConfig.for_model(spec.architecture["model_type"], vocab_size=len(tokenizer),
                                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=end, **sizes)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return str(folder)
