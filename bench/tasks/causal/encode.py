"""Prompt/response pairs -> token ids with the loss on the answer only -> dynamically padded batches.

A row is `input_ids = prompt + answer` and `labels = [-100] * len(prompt) + answer`: the model reads the
prompt but is trained (and scored) only on the answer. The prompt goes through the tokenizer's chat
template where it has one (`data.prompt_format=auto`); the answer is then whatever the template puts after
the generation prompt (e.g. `positive<|im_end|>`), so the model also learns to end its turn. Without a
template the answer gets the tokenizer's end token (EOS, or SEP for a BERT vocabulary).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from bench.config import ConfigError
from bench.tasks.causal.sft import Pair, Prompt

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE = -100  # label of a token the loss skips (torch's cross-entropy ignore_index)
Row = dict[str, list[int]]


@dataclass(frozen=True)
class PromptFormat:
    """How pairs become text and ids, decided once per run from the tokenizer."""

    chat: bool  # wrap prompts in the tokenizer's chat template
    bos: tuple[int, ...] = ()  # put before a plain prompt, where the tokenizer itself would (Llama-2 style)
    eos: tuple[int, ...] = ()  # put after a plain answer, so the model learns where an answer ends


def pick_format(tokenizer: PreTrainedTokenizerBase, requested: str) -> PromptFormat:
    """`auto` uses the chat template where the tokenizer has one; `chat` insists on it; `plain` never."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if requested == "chat" and not has_template:
        raise ConfigError("data.prompt_format=chat needs a tokenizer with a chat template and this model's has "
                          "none; use data.prompt_format=auto or plain")
    bos_id = tokenizer.bos_token_id
    wants_bos = bos_id is not None and tokenizer("a").input_ids[:1] == [bos_id]
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    return PromptFormat(chat=requested == "chat" or (requested == "auto" and has_template),
                        bos=(bos_id,) if wants_bos else (), eos=(end,) if end is not None else ())


def render(tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, prompt: Prompt, response: str) -> tuple[str, str,
           bool]:
    """(prompt text, answer text, whether the answer still needs the end token)."""
    if not fmt.chat:
        if isinstance(prompt, list):  # chat turns without a template: one "role: content" line each
            prompt = "".join(f"{turn['role']}: {turn['content']}\n" for turn in prompt) + "assistant:"
            response = " " + response.strip()
        return prompt, response, True
    turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    prompt_text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*turns, {"role": "assistant", "content": response.strip()}],
                                         tokenize=False)
    if full.startswith(prompt_text):  # the answer is exactly what the template adds, end-of-turn included
        return prompt_text, full[len(prompt_text):].rstrip(), False
    return prompt_text, response.strip(), True  # a template that rewrites earlier turns: fall back


def encode_pair(tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, prompt: Prompt, response: str, *,
                max_length: int) -> Row:
    """One row of at most `max_length` tokens. Too long: the answer is kept (up to half the room when the
    prompt needs it) and the prompt loses its beginning, since its end (the question) matters most."""
    prompt_text, answer_text, needs_end = render(tokenizer, fmt, prompt, response)
    prompt_ids = ([] if fmt.chat else list(fmt.bos)) + _ids(tokenizer, prompt_text)
    answer_ids = _ids(tokenizer, answer_text) + (list(fmt.eos) if needs_end else [])
    answer_ids = answer_ids[:max_length - min(len(prompt_ids), max_length // 2)]
    keep = max(0, min(len(prompt_ids), max_length - len(answer_ids)))
    prompt_ids = prompt_ids[len(prompt_ids) - keep:]
    ids = prompt_ids + answer_ids
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [IGNORE] * len(prompt_ids) + answer_ids}


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # Special tokens written in the text (a chat template's <|im_start|>) are still recognised.
    return list(tokenizer(text, add_special_tokens=False).input_ids) if text else []


def collate(rows: list[Row], *, pad_id: int, left: bool = False) -> dict[str, Any]:
    """Pad to the longest row of the batch (dynamic padding): pad id, mask 0, label -100. Left padding lines
    the answers up at the end (for scoring only their logits); it then needs explicit position ids."""
    import torch

    width = max(len(row["input_ids"]) for row in rows)
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": IGNORE}
    batch = {}
    for key, value in fill.items():
        pads = [[value] * (width - len(row[key])) for row in rows]
        padded = [pad + row[key] if left else row[key] + pad for pad, row in zip(pads, rows, strict=True)]
        batch[key] = torch.tensor(padded, dtype=torch.long)
    if left:
        batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    return batch


def train_loader(pairs: list[Pair], *, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, max_length: int,
                 batch_size: int,
                 seed: int) -> Any:
    """Tokenize once; shuffled by the run seed; each batch padded to its own longest row."""
    import torch
    from torch.utils.data import DataLoader

    rows = [encode_pair(tokenizer, fmt, p.prompt, p.response, max_length=max_length) for p in pairs]
    shuffle = torch.Generator().manual_seed(seed)
    return DataLoader(rows, batch_size=batch_size, shuffle=True, generator=shuffle,
                      collate_fn=partial(collate, pad_id=tokenizer.pad_token_id))


@dataclass
class EvalSet:
    """Rows to score for evaluation: with a label set, one row per (example, label) answer; else one per
    example with its own answer."""

    rows: list[Row]
    example: list[int]  # the eval example each row belongs to
    candidate: list[int | None]  # the label each row answers with (None: the example's own answer)
    gold: list[bool]  # the row whose answer is the right one: its loss is eval/loss
    references: list[int | None]  # each example's label
    pad_id: int
    generation: Any = None  # data.scoring=generation: the split's `bench.tasks.causal.scoring.GenerationSet`


def eval_set(pairs: list[Pair], answers: list[str] | None, *, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat,
             max_length: int) -> EvalSet:
    """Encode every answer the evaluation scores, once, before the model loads."""
    built = EvalSet([], [], [], [], [p.label for p in pairs], tokenizer.pad_token_id)
    for index, pair in enumerate(pairs):
        options: list[tuple[int | None, str]] = list(enumerate(answers)) if answers else [(None, pair.response)]
        for label, answer in options:
            built.rows.append(encode_pair(tokenizer, fmt, pair.prompt, answer, max_length=max_length))
            built.example.append(index)
            built.candidate.append(label)
            built.gold.append(label is None or label == pair.label)
    return built
