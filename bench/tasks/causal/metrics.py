"""Causal-LM evaluation: answer loss and perplexity, label accuracy by likelihood, loss on general text.

Every number comes from one primitive, `score_rows`: the summed log-probability of each row's labelled
tokens. Rows are left-padded so that their answers line up at the end of the batch and the model computes
logits for those last positions only (`logits_to_keep`): the full logits of a 49k- or 150k-word vocabulary
would dwarf the model's activations.

- `eval/loss` is the token-weighted mean negative log-likelihood of the right answers (every answer token
  counts once, whatever its example's length) and `eval/perplexity` is its exponential.
- `eval/accuracy` and `eval/f1` (macro), with likelihood scoring (`data.scoring`), score every label's answer
  after the prompt and pick the likeliest (the summed log-probability of the answer, end-of-turn included, so a
  label that is a prefix of another is not favoured). No text is generated.
- With generation scoring, the answers are generated and read instead (`bench.tasks.causal.scoring`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from bench.tasks.causal.encode import IGNORE, EvalSet, Row, collate

if TYPE_CHECKING:
    import torch

LOGITS_BUDGET = 1 << 25  # floats of kept logits per batch (128 MiB in fp32): caps the batch for big vocabularies


def score_rows(model: torch.nn.Module, rows: list[Row], *, batch_size: int, device: torch.device,
               autocast_dtype: torch.dtype,
               pad_id: int) -> tuple[list[float], list[int]]:
    """Each row's summed log-probability of its labelled tokens, and how many there are."""
    import torch

    sums, counts = [0.0] * len(rows), [0] * len(rows)
    vocab = int(model.config.vocab_size)
    was_training = model.training
    model.eval()
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype != torch.float32)
    try:
        with torch.no_grad(), autocast:
            for indices in _batches(rows, batch_size=batch_size, vocab=vocab):
                batch = {k: v.to(device) for k, v in collate([rows[i] for i in indices], pad_id=pad_id,
                                                              left=True).items()}
                row_sums, row_counts = _score_batch(model, batch)
                for i, total, count in zip(indices, row_sums.tolist(), row_counts.tolist(), strict=True):
                    sums[i], counts[i] = total, int(count)
    finally:
        model.train(was_training)
    return sums, counts


def _scored_span(row: Row) -> int:
    """Positions from the first labelled token to the end, plus the one that predicts it."""
    first = next((i for i, label in enumerate(row["labels"]) if label != IGNORE), len(row["labels"]))
    return min(len(row["labels"]), len(row["labels"]) - first + 1)


def _batches(rows: list[Row], *, batch_size: int, vocab: int) -> list[list[int]]:
    """Rows sorted by length (little padding), cut where the batch or its kept logits would grow too big."""
    batches: list[list[int]] = [[]]
    span = 0  # the widest scored span in the current batch: every row keeps that many logits
    for i in sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"])):
        current, wider = batches[-1], max(span, _scored_span(rows[i]))
        if current and (len(current) >= batch_size or (len(current) + 1) * wider * vocab > LOGITS_BUDGET):
            batches.append([])
            wider = _scored_span(rows[i])
        batches[-1].append(i)
        span = wider
    return [batch for batch in batches if batch]


def _score_batch(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[Any, Any]:
    import torch

    labels = batch.pop("labels")
    width = labels.shape[1]
    scored = (labels != IGNORE).any(0).nonzero()
    if width < 2 or not len(scored):  # nothing to score: a row needs a token before the first scored one
        return torch.zeros(len(labels)), torch.zeros(len(labels), dtype=torch.long)
    keep = min(width, width - int(scored[0]) + 1)  # left padding: the answers all end at the last position
    # The last `keep` positions as an index tensor, not an int: an int makes the LM head read a strided slice
    # of the hidden states, and torch (2.13, CPU) multiplies a strided 3-D input by a frozen bf16 weight by
    # first copying the weight once per row (+1.7 GiB at batch 32 for SmolLM2); indexing gives a packed copy.
    positions = torch.arange(width - keep, width, device=labels.device)
    logits = model(**batch, logits_to_keep=positions, use_cache=False).logits[:, -keep:]
    targets = batch["input_ids"][:, 1 - keep:]
    # A token counts when it is labelled and the position predicting it is real: a left-padded row's first
    # token follows padding, not text, and cannot be predicted (as in an unpadded row).
    mask = (labels[:, 1 - keep:] != IGNORE) & batch["attention_mask"][:, -keep:-1].bool()
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, logp, 0.0).sum(-1), mask.sum(-1)


def answer_metrics(sums: list[float], counts: list[int], data: EvalSet) -> dict[str, float]:
    """eval/loss and eval/perplexity from the right answers; accuracy and F1 when there is a label set."""
    gold = [i for i, is_gold in enumerate(data.gold) if is_gold]
    tokens = sum(counts[i] for i in gold)
    loss = -sum(sums[i] for i in gold) / max(tokens, 1)
    metrics = {"eval/loss": loss, "eval/perplexity": math.exp(min(loss, 700.0))}
    if all(label is None for label in data.candidate):
        return metrics
    from bench.tasks.metrics import classification_scores

    best: dict[int, tuple[float, int]] = {}
    for i, (example, label) in enumerate(zip(data.example, data.candidate, strict=True)):
        if label is not None and (example not in best or sums[i] > best[example][0]):
            best[example] = (sums[i], label)
    predictions = [best[e][1] for e in range(len(data.references))]
    references = [int(r) for r in data.references if r is not None]
    return {**metrics, **classification_scores(predictions, references)}


def evaluate_sft(model: torch.nn.Module, data: EvalSet, *, device: torch.device, autocast_dtype: torch.dtype,
                 batch_size: int) -> dict[str, float]:
    """The eval metrics of a causal LM on its SFT eval set (the training loop's `evaluate` hook): the answers'
    likelihood, and with generation scoring what the model generates (`bench.tasks.causal.scoring`)."""
    sums, counts = score_rows(model, data.rows, batch_size=batch_size, device=device, autocast_dtype=autocast_dtype,
                              pad_id=data.pad_id)
    metrics = answer_metrics(sums, counts, data)
    if data.generation is not None:
        from bench.tasks.causal.scoring import generation_metrics

        metrics.update(generation_metrics(model, data.generation, device=device, autocast_dtype=autocast_dtype,
                                          batch_size=batch_size, pad_id=data.pad_id))
    return metrics


def general_loss(model: torch.nn.Module, rows: list[Row], *, device: torch.device, autocast_dtype: torch.dtype,
                 batch_size: int,
                 pad_id: int) -> float:
    """Token-weighted mean next-token loss on the general English chunks (NaN when there are none)."""
    sums, counts = score_rows(model, rows, batch_size=batch_size, device=device, autocast_dtype=autocast_dtype,
                              pad_id=pad_id)
    return -sum(sums) / sum(counts) if sum(counts) else math.nan
