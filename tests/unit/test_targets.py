"""Target-module presets resolve per architecture; names that match nothing list the real ones."""

from __future__ import annotations

import re

import pytest
import torch

from bench.config import ConfigError
from bench.techniques.targets import check_targets_match, resolve_targets


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=2)
    return BertForSequenceClassification(config)


def test_presets_per_architecture() -> None:
    assert resolve_targets("qv", "bert") == ["query", "value"]
    assert resolve_targets("qv", "distilbert") == ["q_lin", "v_lin"]
    assert resolve_targets("attention", "llama") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert resolve_targets("all-linear", "bert") == "all-linear"
    assert resolve_targets(["query"], "bert") == ["query"]


def test_bert_mlp_preset_does_not_catch_attention_output() -> None:
    pattern = resolve_targets("mlp", "bert")
    names = [n for n, m in _tiny_bert().named_modules() if isinstance(m, torch.nn.Linear)]
    matched = sorted(n for n in names if re.fullmatch(pattern, n))
    assert matched == ["bert.encoder.layer.0.intermediate.dense", "bert.encoder.layer.0.output.dense"]
    check_targets_match(_tiny_bert(), pattern)


def test_unknown_preset_and_unmatched_names() -> None:
    with pytest.raises(ConfigError, match=r"qv, attention, mlp, attention\+mlp, all-linear"):
        resolve_targets("everything", "bert")
    with pytest.raises(ConfigError) as error:
        check_targets_match(_tiny_bert(), ["q_proj"])
    assert "q_proj" in str(error.value) and "query" in str(error.value) and "dense" in str(error.value)
