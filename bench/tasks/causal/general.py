"""Held-out general English text for measuring forgetting: the prose of CPython's own `pydoc_data/topics.py`.

That file ships with every CPython (it is the Python Language Reference text behind `help("for")`), so it
is on every machine that runs bench, needs no download and is not from any training domain we use (tweets,
reviews, chat). We keep only its prose paragraphs: code samples and grammar rules are indented or contain
`::=`, headings are underlined, and anything with fewer than 20 words or much punctuation is dropped. That
leaves about 600 paragraphs (~190k characters on 3.11). The text changes a little between Python versions,
so compare forgetting within one Python minor version (logged as the `forgetting/text` tag).

The text is tokenized as one stream and cut into `data.general_eval_chunks` chunks of `data.max_length`
tokens, spread evenly over the whole stream: a few thousand tokens, so each measurement takes seconds.
"""

from __future__ import annotations

import platform
from functools import cache
from typing import TYPE_CHECKING

from bench.tasks.causal.encode import Row

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MIN_WORDS = 20
MIN_LETTER_SHARE = 0.85  # letters and spaces; code and tables fall below it


def source_name() -> str:
    """Where the text comes from, for the run's tags."""
    return f"pydoc_data/topics.py prose (CPython {platform.python_version()})"


@cache
def general_paragraphs() -> tuple[str, ...]:
    """The prose paragraphs, in a fixed order (topics sorted by name), each joined onto one line."""
    from pydoc_data.topics import topics

    kept = []
    for key in sorted(topics):
        for block in topics[key].split("\n\n"):
            if _is_prose(block):
                kept.append(" ".join(line.strip() for line in block.split("\n")))
    return tuple(kept)


def _is_prose(block: str) -> bool:
    if not block or block[0].isspace():  # indented: a code sample or a grammar rule
        return False
    lines = block.split("\n")
    if len(lines) > 1 and set(lines[-1].strip()) <= set("*=-~^"):  # a heading and its underline
        return False
    text = " ".join(lines)
    letters = sum(c.isalpha() or c.isspace() for c in text) / len(text)
    return len(text.split()) >= MIN_WORDS and "::=" not in text and letters >= MIN_LETTER_SHARE


def general_rows(tokenizer: PreTrainedTokenizerBase, *, chunks: int, length: int, bos: tuple[int,
                 ...] = ()) -> list[Row]:
    """`chunks` rows of `length` tokens (BOS first where the model expects one), every token scored."""
    if chunks <= 0:
        return []
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "longer than the model's maximum" is expected: we cut it ourselves
    try:
        paragraphs = list(general_paragraphs())
        encoded = tokenizer(paragraphs[:1] + [f"\n\n{p}" for p in paragraphs[1:]], add_special_tokens=False)
    finally:
        hf_logging.set_verbosity(verbosity)
    stream = [token for ids in encoded.input_ids for token in ids]
    body = length - len(bos)
    available = len(stream) // body
    picks = sorted({round(i * (available - 1) / max(1, chunks - 1)) for i in range(min(chunks, available))})
    rows = []
    for pick in picks:
        ids = list(bos) + stream[pick * body:(pick + 1) * body]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})
    return rows
