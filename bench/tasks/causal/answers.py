"""Reading the final answer out of a generated text (`data.answer_rule`), and comparing two answers.

- `final_number`: the last number in the text, or the first one after GSM8K's `#### ` marker where the text has it
  (a worked solution ends `#### 72`; the numbers of the working before it are not the answer). Thousands commas are
  dropped and `72.0` reads as `72`, so the same quantity written two ways matches. A minus sign counts only where
  it does not follow a digit, a letter or a bracket: `10-5` ends in 5, `is -5` in -5.
- `label_word`: the label of the label set that the text names first (whole words, case ignored), so
  "Positive, not negative" reads as `positive`.
- `text`: the whole text, stripped, its runs of white space made one space.

Every rule gives None when the text holds no answer: the caller counts those (`eval/no_answer`), never crashes.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# An optional sign (not after a word character or a bracket: then it is a subtraction), digits with or without
# thousands commas, an optional decimal part.
NUMBER = re.compile(r"(?:(?<![\w)\]])-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")
GSM8K_MARK = "####"


def extract(rule: str, text: str, labels: list[str] | None = None) -> str | None:
    """The answer `text` gives under `rule`, normalised for comparison; None when it holds none."""
    if rule == "final_number":
        return final_number(text)
    if rule == "label_word":
        return label_word(text, labels or [])
    if rule == "text":
        return " ".join(text.split()) or None
    raise ValueError(f"unknown answer rule {rule!r}")


def final_number(text: str) -> str | None:
    """The number after the last `####`, else the last number in the text; as a plain decimal string."""
    if GSM8K_MARK in text:
        marked = NUMBER.search(text.rsplit(GSM8K_MARK, 1)[1])
        if marked:
            return _plain(marked.group())
    numbers = NUMBER.findall(text)
    return _plain(numbers[-1]) if numbers else None


def _plain(number: str) -> str | None:
    """`1,234.50` -> `1234.5`, `-0.0` -> `0`: one spelling per quantity."""
    try:
        value = Decimal(number.replace(",", ""))
    except InvalidOperation:
        return None
    plain = format(value.normalize(), "f")
    return "0" if plain in ("-0", "0") else plain


def label_word(text: str, labels: list[str]) -> str | None:
    """The label named earliest in `text` (whole words, any case); at one position the longer label wins."""
    found: list[tuple[int, int, str]] = []
    for label in labels:
        match = re.search(rf"(?<!\w){re.escape(label)}(?!\w)", text, flags=re.IGNORECASE)
        if match:
            found.append((match.start(), -len(label), label))
    return min(found)[2] if found else None
