"""Instruction-style SFT data: every source becomes prompt/response pairs, split the same seeded way.

- A labelled text set with `data.prompt_template` (the sentiment tweets: "Review: {text}\\nSentiment:" ->
  " positive"): read, cleaned and split by `bench.tasks.data.load_splits`, so the SFT rows are exactly the rows the
  classification task trains and evaluates on.
- A local file (`.jsonl`, `.csv`, ...) or hub data set with `data.prompt_column` and `data.response_column`.
- A hub chat data set with `data.messages_column` (a list of `{role, content}` turns): the turns before the
  last assistant turn are the prompt, that turn is the response.

Every source is split three ways, train / validation / test, by `bench.tasks.splits` (stratified by label where there
is one, seeded, near-duplicate prompts removed across splits); a local data set may come split into files
(`data.eval_path`, `data.test_path`), a hub one into its official splits (`data.hub_eval_split`,
`data.hub_test_split`).

With a label set (the template's labels, or `data.labels` for the other sources) every answer is
`data.response_template` filled with its label, so training and label-likelihood scoring see the same text.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.config import ConfigError, DataConfig

if TYPE_CHECKING:
    from bench.tasks.incomplete import Incomplete

Prompt = str | list[dict[str, str]]  # plain text, or chat turns before the answer


@dataclass(frozen=True)
class Pair:
    """One SFT example."""

    prompt: Prompt
    response: str
    label: int | None = None  # index into `SftSplits.labels` when the answer is one of a label set


@dataclass
class SftSplits:
    """Train, validation (`eval`) and test pairs, and what label accuracy needs (None for free-form answers)."""

    train: list[Pair]
    eval: list[Pair]
    labels: list[str] | None = None
    answers: list[str] | None = None  # the response text of each label, in label order
    majority_baseline: float | None = None  # eval accuracy of always answering the most frequent train label
    test: list[Pair] = field(default_factory=list)  # evaluated once, after training
    test_baseline: float | None = None  # test accuracy of always answering the most frequent train label
    dropped: dict[str, int] = field(default_factory=dict)  # near-duplicate prompts dropped from each split
    incomplete: dict[str, float] = field(default_factory=dict)  # pairs without a prompt or an answer, dropped

    def metrics(self) -> dict[str, float]:
        """What every run logs about its data before training."""
        from bench.tasks.splits import split_metrics

        rows = {"train": len(self.train), "eval": len(self.eval), "test": len(self.test)}
        baseline = {} if self.majority_baseline is None else {"eval/majority_baseline": self.majority_baseline}
        return {**baseline, **split_metrics(rows, self.dropped), **self.incomplete}


def load_sft_splits(spec: DataConfig) -> SftSplits:
    """Read, clean, split and cap the pairs of any source."""
    if spec.prompt_template:
        return _templated(spec)
    from bench.tasks.data import read_frames  # one reader and one split for both tasks
    from bench.tasks.incomplete import report
    from bench.tasks.splits import three_splits

    read = {name: _pairs_frame(raw, spec, name) for name, raw in read_frames(spec).items() if raw is not None}
    frames = {name: read[name][0] if name in read else None for name in ("train", "eval", "test")}
    names = (("data.messages_column",) * 2 if spec.messages_column
             else ("data.prompt_column", "data.response_column"))
    incomplete = report(spec, {name: counts for name, (_, counts) in read.items()}, names=names)
    labels = _answer_labels([frame for frame in frames.values() if frame is not None], spec)
    for frame in frames.values():
        if labels is not None and frame is not None:
            frame["label"] = frame["response"].str.strip()
    parts = three_splits(frames, spec, key="prompt")
    if labels is not None:
        from bench.tasks.data import check_two_labels

        check_two_labels(parts.train, spec, column="response_column")
    answers = [spec.response_template.format(label=label) for label in labels] if labels else None
    decode = json.loads if spec.messages_column else str  # chat turns were stored as JSON text

    def pairs(part: Any) -> list[Pair]:
        if labels is None or answers is None:
            return [Pair(decode(p), r) for p, r in zip(part["prompt"], part["response"], strict=True)]
        index = {label: i for i, label in enumerate(labels)}
        return [Pair(decode(p), answers[index[y]], index[y]) for p, y in zip(part["prompt"], part["label"],
                                                                              strict=True)]

    return _with_baseline(SftSplits(pairs(parts.train), pairs(parts.eval), labels, answers, test=pairs(parts.test),
                                    dropped=parts.dropped, incomplete=incomplete))


def _templated(spec: DataConfig) -> SftSplits:
    from bench.tasks.data import load_splits

    splits = load_splits(spec)
    answers = [spec.response_template.format(label=label) for label in splits.labels]
    template = spec.prompt_template or "{text}"

    def pairs(part: Any) -> list[Pair]:
        return [Pair(template.format(text=text), answers[int(y)], int(y))
                for text, y in zip(part["text"], part["label_id"], strict=True)]

    return _with_baseline(SftSplits(pairs(splits.train), pairs(splits.eval), splits.labels, answers,
                                    test=pairs(splits.test), dropped=splits.dropped, incomplete=splits.incomplete))


def _with_baseline(splits: SftSplits) -> SftSplits:
    if splits.labels:
        majority = Counter(p.label for p in splits.train).most_common(1)[0][0]
        splits.majority_baseline = sum(p.label == majority for p in splits.eval) / len(splits.eval)
        splits.test_baseline = sum(p.label == majority for p in splits.test) / len(splits.test)
    return splits


def _pairs_frame(raw: Any, spec: DataConfig, split: str = "train") -> tuple[Any, Incomplete]:
    """`prompt` and `response` columns (a chat prompt kept as JSON text, so it can be deduplicated); pairs without
    a prompt or an answer dropped (counted: bench.tasks.incomplete), and duplicate prompts, which would leak between
    splits."""
    from bench.tasks.data import check_columns
    from bench.tasks.incomplete import Incomplete, complete_rows

    check_columns(raw, spec, split, {spec.messages_column: "data.messages_column"} if spec.messages_column
                  else {spec.prompt_column: "data.prompt_column", spec.response_column: "data.response_column"})
    if spec.messages_column:
        split_turns = [_split_chat(turns, row=row, column=spec.messages_column)
                       for row, turns in enumerate(raw[spec.messages_column])]
        rows = [(json.dumps(p), r) for p, r in split_turns if p is not None and str(r).strip()]
        counts = Incomplete(len(raw), 0, len(raw) - len(rows))  # a chat without an answer to train on
        if raw.shape[0] and not rows:
            raise ConfigError(f"data={spec.name}: none of the {len(raw)} chats of data.messages_column="
                              f"{spec.messages_column!r} ends in an assistant answer after a prompt")
    else:
        kept, counts = complete_rows(raw, text=spec.prompt_column, label=spec.response_column, spec=spec, split=split,
                                     names=("data.prompt_column", "data.response_column"))
        template = spec.prompt_column_template or "{prompt}"  # peft's "Question: {query} Think step by step..."
        rows = [(template.format(prompt=str(p).strip()), str(r))
                for p, r in zip(kept[spec.prompt_column], kept[spec.response_column], strict=True)]
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["prompt", "response"]).drop_duplicates("prompt").reset_index(drop=True)
    if frame.empty:
        raise ConfigError(f"data={spec.name}: no prompt/response pairs left after dropping empty ones")
    frame["label"] = ""  # one stratum unless a label set is given
    return frame, counts


def _split_chat(turns: Any, *, row: int, column: str) -> tuple[list[dict[str, str]] | None, str]:
    """(turns before the last assistant turn, its content); (None, '') when there is no assistant turn."""
    try:
        turns = [] if turns is None else list(turns)  # a hub data set's column arrives as a numpy array of dicts
        turns = [{"role": str(t["role"]), "content": str(t["content"])} for t in turns]
    except (TypeError, KeyError, IndexError):
        raise ConfigError(f"data.messages_column={column!r}: row {row} is not a list of {{role, content}} turns: "
                          f"{str(turns)[:80]!r}") from None
    last = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=None)
    if not last:  # None, or an assistant turn with nothing before it
        return None, ""
    return turns[:last], turns[last]["content"]


def _answer_labels(frames: list[Any], spec: DataConfig) -> list[str] | None:
    """`data.labels`, checked against the answers of every split (each must be one of them); None if unset."""
    if spec.labels is None:
        return None
    labels = [str(label) for label in spec.labels]
    unknown = sorted(set().union(*(frame["response"].str.strip() for frame in frames)) - set(labels))
    if unknown:
        raise ConfigError(f"data={spec.name}: answers {unknown[:5]} are not in data.labels={labels}")
    return labels
