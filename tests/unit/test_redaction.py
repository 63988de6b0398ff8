"""What the store redacts: names that end in a secret word, not names that merely contain one (a model's
`num_key_value_heads` or `tokenizer` must reach the store as they are, or the run cannot be reproduced)."""

from __future__ import annotations

from bench.tracking.store import REDACTED, redact, redact_text


def test_secret_names_are_redacted_and_look_alikes_are_not() -> None:
    clean = redact({"model.token": "hf_abc", "x.api_key": "k", "x.hf_token": "t", "db.password": "p",
                    "model.tokenizer": "gt/model", "model.architecture.num_key_value_heads": 3, "x.monkey": "m"})
    assert [key for key, value in clean.items() if value == REDACTED] == ["model.token", "x.api_key", "x.hf_token",
                                                                         "db.password"]
    assert clean["model.architecture.num_key_value_heads"] == 3 and clean["model.tokenizer"] == "gt/model"


def test_overrides_in_free_text() -> None:
    text = redact_text("bench run model.token=hf_abc +model.hf_token=zz API_KEY=1 "
                       "model.architecture.num_key_value_heads=3 model.tokenizer=a/b")
    assert text == ("bench run model.token=*** +model.hf_token=*** API_KEY=*** "
                    "model.architecture.num_key_value_heads=3 model.tokenizer=a/b")
