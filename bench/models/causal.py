"""What a causal LM needs before its weights load: a check that the model has a causal-LM head."""

from __future__ import annotations

from bench.config import ConfigError, ModelConfig
from bench.models.load import ModelLocation, model_config

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def _decoder_only(model_type: str) -> bool:
    """A type transformers can build as a causal LM that is not an encoder or encoder-decoder: BERT and
    RoBERTa have a causal-LM class too (`BertLMHeadModel`), but no pretrained next-token head."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def check_causal_head(spec: ModelConfig, location: ModelLocation) -> None:
    """Fail in seconds, from the config alone, when the model cannot be fine-tuned as a causal LM: its
    checkpoint names no `*ForCausalLM` class (MiniLM is a `BertModel`), or its type is not decoder-only."""
    if location.is_tiny:
        model_type, architectures = spec.architecture.get("model_type", "?"), []
    else:
        config = model_config(spec, location)
        model_type, architectures = config.model_type, list(getattr(config, "architectures", None) or [])
    has_head = (any(name.endswith(_CAUSAL_SUFFIXES) for name in architectures) if architectures
                else _decoder_only(model_type))
    if not has_head:
        found = ", ".join(architectures) or model_type
        raise ConfigError(f"model={spec.name} ({found}) has no causal-LM head, so task=causal_lm cannot train it; "
                          "choose a decoder such as model=smollm2-135m, qwen2.5-0.5b, tiny-llama or a Llama-style "
                          "model.hub_id, or use task=classification")
