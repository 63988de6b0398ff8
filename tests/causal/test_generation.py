"""Batched greedy decoding with the KV cache (`bench.tasks.causal.generate`) gives, for every prompt, exactly the
tokens transformers' own greedy `generate` gives that prompt alone: left padding, position ids, the cache and the
stop tokens change nothing."""

from __future__ import annotations

import pytest
import torch

from bench.tasks.causal.generate import greedy_generate

CPU = torch.device("cpu")
PAD = 0


@pytest.fixture(scope="module")
def tiny_llama():
    """A 2-layer random Llama (the shape of model=tiny-llama, a 300-word vocabulary)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128,
                         tie_word_embeddings=True, pad_token_id=PAD, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # sharper logits than the init's, so greedy choices are far from ties
        model.lm_head.weight.mul_(20)
    return model


def _alone(model, prompt: list[int], *, new: int, stop: int) -> list[int]:
    """transformers' greedy generate on one prompt, no padding: the new tokens, the stop token included."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=new, do_sample=False, eos_token_id=stop, pad_token_id=PAD,
                             temperature=None, top_p=None, top_k=None)
    return out[0, len(prompt):].tolist()


def test_batched_greedy_equals_greedy_alone(tiny_llama) -> None:
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 300, (int(n),), generator=generator).tolist() for n in (3, 11, 5, 8, 2, 13, 7)]
    free = greedy_generate(tiny_llama, prompts, max_new_tokens=10, stop_ids={299_999}, pad_id=PAD, batch_size=7,
                           device=CPU, autocast_dtype=torch.float32)
    stop = free.tokens[3][4]  # a token the model does produce: some rows stop early, others run to the limit
    expected = [_alone(tiny_llama, p, new=10, stop=stop) for p in prompts]
    assert any(len(row) < 10 for row in expected) and any(len(row) == 10 for row in expected)
    for batch_size in (1, 3, 7):
        got = greedy_generate(tiny_llama, prompts, max_new_tokens=10, stop_ids={stop}, pad_id=PAD,
                              batch_size=batch_size, device=CPU, autocast_dtype=torch.float32)
        assert got.tokens == expected, f"batch_size={batch_size}"
        assert got.count == sum(map(len, expected)) and got.seconds > 0
    assert tiny_llama.training is False


def test_generation_restores_training_mode(tiny_llama) -> None:
    tiny_llama.train()
    try:
        greedy_generate(tiny_llama, [[5, 6, 7]], max_new_tokens=2, stop_ids={2}, pad_id=PAD, batch_size=4,
                        device=CPU, autocast_dtype=torch.float32)
        assert tiny_llama.training
    finally:
        tiny_llama.eval()
