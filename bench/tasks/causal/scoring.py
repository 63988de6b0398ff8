"""Generation-scored evaluation of a causal LM (`data.scoring`): greedy answers read by `data.answer_rule`.

Each example's prompt is encoded once, before the model loads, exactly as training encodes it (the chat template's
generation prompt included); the model then answers it greedily (`bench.tasks.causal.generate`) and the rule reads
the answer out of the decoded text and out of the reference answer alike. Figures:

- `eval/exact_match`: share of examples whose generated answer equals the reference's.
- `eval/no_answer`: share of generated texts the rule found no answer in (counted as misses, never an error);
  `eval/no_reference_answer`: share of reference answers the rule found none in (those examples cannot match).
- `eval/rouge_l`: with `answer_rule=text` (free-form answers), the mean ROUGE-L F-measure of the generated text
  against the reference, from the offline `evaluate` module `bench/tasks/evaluate_modules/rouge`.
- `eval/generation_s`, `eval/generated_tokens`, `eval/generation_tokens_per_s`: the decoding's own wall time, new
  tokens and speed; evaluation sits outside the training clock, so none of it is in `train/*`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.tasks.causal.answers import extract
from bench.tasks.causal.encode import PromptFormat, render

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from bench.config import DataConfig
    from bench.tasks.causal.sft import Pair


@dataclass
class GenerationSet:
    """What generation scoring needs of one split: the prompts, the reference answers, how to read and stop."""

    prompts: list[list[int]]  # each example's prompt ids, as training encodes them (at most data.max_length)
    references: list[str]  # each example's reference answer text
    expected: list[str | None]  # the answer `rule` reads out of each reference (None: it found none)
    rule: str  # data.answer_rule, resolved
    labels: list[str] | None  # the label set, for answer_rule=label_word
    stop_ids: set[int]  # tokens that end an answer: end of sequence, the chat template's end of turn
    max_new_tokens: int
    tokenizer: PreTrainedTokenizerBase  # decodes the new tokens into text


def generation_set(pairs: list[Pair], *, spec: DataConfig, labels: list[str] | None,
                   tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat) -> GenerationSet:
    """Encode every prompt of a split for generation; the answers the rule reads out of its references."""
    prompts = []
    for pair in pairs:
        prompt_text, _, _ = render(tokenizer, fmt, pair.prompt, pair.response)
        ids = ([] if fmt.chat else list(fmt.bos)) + list(tokenizer(prompt_text, add_special_tokens=False).input_ids)
        prompts.append(ids[-spec.max_length:])  # the question sits at the end: keep it
    references = [pair.response.strip() for pair in pairs]
    rule = spec.rule
    return GenerationSet(prompts, references, [extract(rule, text, labels) for text in references], rule, labels,
                         stop_ids(tokenizer, fmt), spec.max_new_tokens, tokenizer)


def stop_ids(tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat) -> set[int]:
    """End of sequence, the end token plain answers are trained with, and a chat template's end of turn."""
    found = {tokenizer.eos_token_id, *fmt.eos}
    if fmt.chat:  # the token the template closes an answer with (`<|im_end|>`), whatever the tokenizer calls EOS
        turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        closed = tokenizer.apply_chat_template(turns, tokenize=False)
        after = closed[closed.rfind("b") + 1:].strip()
        found.update(tokenizer(after, add_special_tokens=False).input_ids[:1] if after else [])
    return {token for token in found if token is not None}


def generation_metrics(model: torch.nn.Module, data: GenerationSet, *, device: torch.device,
                       autocast_dtype: torch.dtype, batch_size: int, pad_id: int) -> dict[str, float]:
    """Generate every answer of the split, read it by the rule and score it against the reference."""
    from bench.tasks.causal.generate import greedy_generate

    generated = greedy_generate(model, data.prompts, max_new_tokens=data.max_new_tokens, stop_ids=data.stop_ids,
                                pad_id=pad_id, batch_size=batch_size, device=device, autocast_dtype=autocast_dtype)
    texts = [data.tokenizer.decode([t for t in tokens if t not in data.stop_ids], skip_special_tokens=True)
             for tokens in generated.tokens]
    return {**answer_scores(texts, data), "eval/generation_s": generated.seconds,
            "eval/generated_tokens": float(generated.count), "eval/generation_tokens_per_s": generated.tokens_per_s}


def answer_scores(texts: list[str], data: GenerationSet) -> dict[str, float]:
    """Exact match and the shares without an answer (and ROUGE-L for free-form text) of generated `texts`."""
    answers = [extract(data.rule, text, data.labels) for text in texts]
    rows = max(len(texts), 1)
    matched = sum(a is not None and a == e for a, e in zip(answers, data.expected, strict=True))
    scores = {"eval/exact_match": matched / rows, "eval/no_answer": sum(a is None for a in answers) / rows,
              "eval/no_reference_answer": sum(e is None for e in data.expected) / rows}
    if data.rule == "text" and texts:
        scores["eval/rouge_l"] = rouge_l(texts, data.references)
    return scores


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F-measure (longest common subsequence of words), from the offline `evaluate` module."""
    from bench.tasks.metrics import metric

    scorer = metric("rouge")
    _absl_writes_to_the_process_stderr()
    return float(scorer.compute(predictions=predictions, references=references)["rougeL"])


def _absl_writes_to_the_process_stderr() -> None:
    """rouge_score imports absl, whose log handler keeps the `sys.stderr` of the moment it was made and closes it
    when logging is configured again (Hydra's next run, a redirect's end) unless it is the process's own: a
    redirected or captured stderr would be closed under its owner. Give the handler the process's stderr."""
    import sys

    from absl import logging as absl_logging

    absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__

