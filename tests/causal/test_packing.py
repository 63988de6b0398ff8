"""Packing (`data.packing=true`): a packed batch gives every example the loss it has unpacked, rows are filled
and never overfilled, and the training loop counts the same real tokens and examples for packed and padded."""

from __future__ import annotations

import pytest
import torch

from bench.tasks.base import PACKED_COUNTS, batch_counts
from bench.tasks.causal.encode import IGNORE, collate, encode_pair, pick_format
from bench.tasks.causal.pack import collate_packed, join, pack_rows, packed_loader
from bench.tasks.causal.sft import Pair

PAIRS = [("Review: short\nSentiment:", " negative"), ("Review: a longer one, with more words here\nSentiment:",
                                                     " neutral answer"),
         ("Question: what is 2 + 3?\nAnswer:", " 2 + 3 = 5. The answer is: 5"), ("Q: hi\nA:", " hello there"),
         ("Translate: chat\n", " cat"), ("Review: the plot drags and the jokes fall flat\nSentiment:", " negative")]


def _tiny_llama(vocab: int, attn: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, max_position_embeddings=128,
                         initializer_range=0.5)  # sharp attention: a leak between examples shows
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()
    model.config.use_cache = False  # as CausalTask.after_build sets it: with a cache, the restarts are not read
    return model


def _example_losses(logits: torch.Tensor, labels: torch.Tensor, starts: list[tuple[int, int, int]]) -> list[float]:
    """Summed NLL of each example's labelled tokens: (row, first position, length) per example."""
    logp = torch.log_softmax(logits.float(), -1)
    losses = []
    for row, start, length in starts:
        total = 0.0
        for position in range(start + 1, start + length):
            label = int(labels[row, position])
            if label != IGNORE:
                total -= float(logp[row, position - 1, label])
        losses.append(total)
    return losses


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_and_unpacked_give_each_example_the_same_loss(minilm_tokenizer, attn: str) -> None:
    """The model reads the restarting positions: attention stays inside each example (no leak from the example
    before it) and positions are the example's own, so every example's answer loss is what it is unpacked."""
    fmt = pick_format(minilm_tokenizer, "plain")
    rows = [encode_pair(minilm_tokenizer, fmt, p, a, max_length=48) for p, a in PAIRS]
    model = _tiny_llama(len(minilm_tokenizer), attn)
    groups = pack_rows(rows, max_length=48)
    assert len(groups) < len(rows)  # several examples share a row, or the test proves nothing
    batch = collate_packed([join(g) for g in groups], pad_id=minilm_tokenizer.pad_token_id)
    inputs, examples, tokens = batch_counts(batch)
    assert "attention_mask" not in inputs and examples == len(rows)
    assert tokens == sum(len(r["input_ids"]) for r in rows)
    starts, packed_order = [], []
    for index, group in enumerate(groups):
        offset = 0
        for example in group:
            starts.append((index, offset, len(example["input_ids"])))
            packed_order.append(next(i for i, r in enumerate(rows) if r is example))
            offset += len(example["input_ids"])
    padded = collate(rows, pad_id=minilm_tokenizer.pad_token_id)
    with torch.no_grad():
        packed = _example_losses(model(**{k: v for k, v in inputs.items() if k != "labels"}).logits,
                                 inputs["labels"], starts)
        alone = _example_losses(model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits,
                                padded["labels"], [(i, 0, len(r["input_ids"])) for i, r in enumerate(rows)])
    assert all(loss > 0 for loss in alone)
    assert packed == pytest.approx([alone[i] for i in packed_order], rel=1e-5, abs=1e-4)
    # and the model's own batch loss is the token-weighted mean of the same answer tokens, packed or not
    with torch.no_grad():
        assert float(model(**inputs).loss) == pytest.approx(float(model(**padded).loss), rel=1e-4)


def test_a_packed_row_without_restarts_would_leak(minilm_tokenizer) -> None:
    """The check above can fail: the same packed ids read with plain positions (one long sequence) change the
    second example's loss, because it then attends to the first."""
    fmt = pick_format(minilm_tokenizer, "plain")
    rows = [encode_pair(minilm_tokenizer, fmt, p, a, max_length=48) for p, a in PAIRS[:2]]
    model = _tiny_llama(len(minilm_tokenizer), "sdpa")
    batch = collate_packed([join(rows)], pad_id=minilm_tokenizer.pad_token_id)
    first = len(rows[0]["input_ids"])
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        leaking = model(input_ids=batch["input_ids"]).logits
    span = [(0, first, len(rows[1]["input_ids"]))]
    assert _example_losses(packed, batch["labels"], span) != pytest.approx(
        _example_losses(leaking, batch["labels"], span), rel=1e-2)


def test_rows_are_filled_best_fit_and_never_overfilled() -> None:
    rows = [{"input_ids": [1] * n, "labels": [1] * n, "attention_mask": [1] * n} for n in (7, 5, 3, 3, 2, 6, 4, 10)]
    groups = pack_rows(rows, max_length=10)
    sizes = sorted(sum(len(r["input_ids"]) for r in g) for g in groups)
    assert sizes == [10, 10, 10, 10]  # 40 tokens in four full rows: 10 | 7+3 | 6+4 | 5+3+2
    assert sorted(id(r) for g in groups for r in g) == sorted(id(r) for r in rows)  # each example exactly once


def test_packed_batch_labels_positions_and_padding(minilm_tokenizer) -> None:
    a = {"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7], "attention_mask": [1, 1, 1]}
    b = {"input_ids": [8, 9], "labels": [8, 9], "attention_mask": [1, 1]}  # a prompt truncated away: all labelled
    batch = collate_packed([join([a, b]), join([b])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [8, 9, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    # b's first label is dropped: it would be predicted from a's last token
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9], [IGNORE, 9, IGNORE, IGNORE, IGNORE]]
    assert batch[PACKED_COUNTS].tolist() == [3, 7]  # examples, real tokens (padding left out)


def test_packed_loader_counts_the_tokens_a_padded_run_counts(minilm_tokenizer) -> None:
    """tokens/s compares packed and padded runs: over an epoch both count every example's real tokens once."""
    from bench.tasks.causal.encode import train_loader

    fmt = pick_format(minilm_tokenizer, "plain")
    pairs = [Pair(p, a) for p, a in PAIRS * 3]
    counts = {}
    for name, make in (("packed", packed_loader), ("padded", train_loader)):
        loader = make(pairs, tokenizer=minilm_tokenizer, fmt=fmt, max_length=64, batch_size=2, seed=0)
        totals = [batch_counts(batch)[1:] for batch in loader]
        counts[name] = (sum(t[0] for t in totals), sum(t[1] for t in totals), len(totals))
    assert counts["packed"][:2] == counts["padded"][:2]
    assert counts["packed"][0] == len(pairs)
    assert counts["packed"][2] < counts["padded"][2]  # fewer batches: the point of packing


@pytest.mark.parametrize(("overrides", "needles"), [
    (["data.packing=true"], ("data.packing=true", "task=classification", "data.packing=false")),
    (["model=tiny-llama", "method=longlora", "data.packing=true"],
     ("data.packing=true with method=longlora", "crosses the examples", "data.packing=false")),
    (["model=tiny-llama", "data.packing=maybe"], ("data.packing=maybe", "true or false")),
    (["model=tiny-llama", "model.attn_implementation=flash"],
     ("model.attn_implementation='flash'", "eager", "sdpa", "flash_attention_2")),
])
def test_packing_refused_where_it_cannot_hold(overrides: list[str], needles: tuple[str, ...], tmp_path) -> None:
    from support import assert_one_error_line, run_cli_here

    result = run_cli_here(*overrides, f"tracker.uri=sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path)
    assert_one_error_line(result, *needles)


def test_the_attention_kernel_chosen_is_the_one_the_model_loads_with(tmp_path) -> None:
    """`model.attn_implementation` reaches transformers (flash_attention_2, CUDA only, takes a packed batch through its
    variable-length kernel); unset, the model keeps transformers' default, and the config hash stays as it was."""
    import torch
    from omegaconf import OmegaConf

    from bench.cli import compose
    from bench.config import RunConfig
    from bench.models.load import load_causal_lm, load_tokenizer, materialize_tiny, resolve_location

    def config(*overrides: str) -> RunConfig:
        return RunConfig.from_dict(OmegaConf.to_container(compose(["model=tiny-llama", *overrides, "output_dir=x"]),
                                                          resolve=True))

    chosen, default = config("model.attn_implementation=eager"), config()
    tokenizer = load_tokenizer(chosen.model, resolve_location(chosen.model))
    location = materialize_tiny(chosen.model, tokenizer=tokenizer, labels=None, seed=0)
    loaded = {cfg.model.attn_implementation: load_causal_lm(location=location, spec=cfg.model, dtype=torch.float32,
                                                            device=torch.device("cpu"))
              for cfg in (chosen, default)}
    assert loaded["eager"].config._attn_implementation == "eager"
    assert loaded[None].config._attn_implementation == "sdpa"
    assert "attn_implementation" not in default.effective()["model"]
    assert chosen.effective()["model"]["attn_implementation"] == "eager"
