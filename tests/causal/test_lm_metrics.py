"""Label accuracy by likelihood, answer loss, perplexity and the general-text loss, checked by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from bench.tasks.causal.encode import IGNORE, EvalSet, encode_pair, pick_format
from bench.tasks.causal.general import general_paragraphs, general_rows, source_name
from bench.tasks.causal.metrics import answer_metrics, evaluate_sft, general_loss, score_rows

CPU = torch.device("cpu")


class BigramModel(torch.nn.Module):
    """A hand-made LM: the logits after token t are row t of a fixed table, whatever came before."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.config = SimpleNamespace(vocab_size=table.shape[1])

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, use_cache=None):
        logits = self.table[input_ids]
        if isinstance(logits_to_keep, torch.Tensor):  # as transformers does: positions to keep
            return SimpleNamespace(logits=logits[:, logits_to_keep])
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


def _row(prompt: list[int], answer: list[int]) -> dict[str, list[int]]:
    return {"input_ids": prompt + answer, "attention_mask": [1] * (len(prompt) + len(answer)),
            "labels": [IGNORE] * len(prompt) + answer}


def test_label_likelihood_accuracy_on_a_hand_made_case() -> None:
    """Vocabulary: 0 pad, 1 'good', 2 'bad', 3 'pos', 4 'neg', 5 end. After 'good' the model expects 'pos',
    after 'bad' 'neg'; both answers then end with 5. Example 0 ('good', gold pos) is right; example 1
    ('bad', gold pos) is wrong: the model answers neg."""
    table = torch.full((6, 6), -4.0)
    table[1, 3], table[2, 4], table[3, 5], table[4, 5] = 2.0, 2.0, 3.0, 3.0
    answers = [[3, 5], [4, 5]]  # label 0 = pos, label 1 = neg
    rows, example, candidate, gold = [], [], [], []
    for index, (prompt, reference) in enumerate([([1], 0), ([2], 0)]):
        for label, answer in enumerate(answers):
            rows.append(_row(prompt, answer))
            example.append(index)
            candidate.append(label)
            gold.append(label == reference)
    data = EvalSet(rows, example, candidate, gold, references=[0, 0], pad_id=0)
    metrics = evaluate_sft(BigramModel(table), data, device=CPU, autocast_dtype=torch.float32, batch_size=3)
    logp = torch.log_softmax(table, -1)
    # eval/loss: mean NLL of the gold answers' 4 tokens: pos after good, end after pos, pos after bad, end after pos.
    expected = -float(logp[1, 3] + logp[3, 5] + logp[2, 3] + logp[3, 5]) / 4
    assert metrics["eval/accuracy"] == 0.5
    assert metrics["eval/loss"] == pytest.approx(expected)
    assert metrics["eval/perplexity"] == pytest.approx(math.exp(expected))
    assert metrics["eval/f1"] == pytest.approx((2 / 3 + 0) / 2)  # pos: P=1, R=1/2; neg: never right


def test_answer_metrics_without_labels_give_loss_and_perplexity_only() -> None:
    data = EvalSet(rows=[{}, {}], example=[0, 1], candidate=[None, None], gold=[True, True],
                   references=[None, None], pad_id=0)
    metrics = answer_metrics([-2.0, -6.0], [1, 3], data)
    assert metrics == {"eval/loss": 2.0, "eval/perplexity": pytest.approx(math.exp(2.0))}  # token-weighted: 8/4


def test_batched_left_padded_scores_equal_one_row_at_a_time(minilm_tokenizer) -> None:
    """The scorer's batching, left padding, position ids and kept-logits window change nothing."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=len(minilm_tokenizer), hidden_size=32,
                                                         num_hidden_layers=2, num_attention_heads=2,
                                                         intermediate_size=64)).eval()
    fmt = pick_format(minilm_tokenizer, "plain")
    texts = [("short", " positive"), ("a much longer prompt with many more words in it", " negative"),
             ("mid length prompt", " neutral and more")]
    rows = [encode_pair(minilm_tokenizer, fmt, p, a, max_length=64) for p, a in texts]
    sums, counts = score_rows(model, rows, batch_size=8, device=CPU, autocast_dtype=torch.float32,
                              pad_id=minilm_tokenizer.pad_token_id)
    for row, total, count in zip(rows, sums, counts, strict=True):
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]])).loss
        assert count == sum(label != IGNORE for label in row["labels"])
        assert total == pytest.approx(-float(loss) * count, rel=1e-4)


def test_general_text_is_english_prose_from_cpython(minilm_tokenizer) -> None:
    paragraphs = general_paragraphs()
    assert len(paragraphs) > 300
    assert all("::=" not in p and len(p.split()) >= 20 for p in paragraphs)
    assert "pydoc_data/topics.py" in source_name()
    rows = general_rows(minilm_tokenizer, chunks=5, length=32)
    assert len(rows) == 5 and all(len(r["input_ids"]) == 32 and r["labels"] == r["input_ids"] for r in rows)
    assert rows == general_rows(minilm_tokenizer, chunks=5, length=32)  # the same chunks every time
    assert len({tuple(r["input_ids"]) for r in rows}) == 5
    assert general_rows(minilm_tokenizer, chunks=0, length=32) == []


def test_general_loss_is_token_weighted_next_token_loss() -> None:
    table = torch.zeros((4, 4))
    table[1, 2] = 5.0
    rows = [_row([], [1, 2, 3]), _row([], [1, 2])]  # every token scored; the first one cannot be predicted
    for row in rows:
        row["labels"] = list(row["input_ids"])
    logp = torch.log_softmax(table, -1)
    expected = -float(logp[1, 2] + logp[2, 3] + logp[1, 2]) / 3
    loss = general_loss(BigramModel(table), rows, device=CPU, autocast_dtype=torch.float32, batch_size=4, pad_id=0)
    assert loss == pytest.approx(expected)
