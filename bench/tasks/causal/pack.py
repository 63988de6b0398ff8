"""Packing (`data.packing=true`): several examples per row, up to `data.max_length` tokens, each attending only
to itself.

Padding every batch to its longest row spends compute on pad tokens; packing fills rows instead, as torchtune
and TRL do. A packed row is its examples' ids one after another with `position_ids` restarting at 0 for each
example and no attention mask: transformers reads the restarts (`masking_utils.find_packed_sequence_indices`)
and keeps attention inside each example, with a block-diagonal causal mask on SDPA and eager attention and
the variable-length kernel on flash attention (`attn_implementation=flash_attention_2`). transformers reads them
only without a KV cache, which `CausalTask.after_build` turns off for every causal run (`use_cache=False`). The
loss stays on the answer tokens only; each example's first label is ignored too, so no example is trained to
predict the first token of the next one (unpacked, that label is never read either: nothing comes before it).

Rows are filled best-fit decreasing (each example, longest first, goes into the open row it fills best), then
shuffled by the run seed. The tail of a row that is not full is padding, given its own position run so it is a
block of its own; a packed batch says how many real tokens and examples it holds (`PACKED_COUNTS`), so
`train/tokens_per_s` counts the same tokens for packed and padded runs. Only the training batches are packed:
evaluation scores every example on its own, as before.
"""

from __future__ import annotations

import bisect
from functools import partial
from typing import TYPE_CHECKING, Any

from bench.tasks.base import PACKED_COUNTS
from bench.tasks.causal.encode import IGNORE, Row

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from bench.tasks.causal.encode import PromptFormat
    from bench.tasks.causal.sft import Pair


def pack_rows(rows: list[Row], *, max_length: int) -> list[list[Row]]:
    """The examples grouped into rows of at most `max_length` tokens, best-fit decreasing: a row is chosen by
    its free room (the smallest that still takes the example), found by bisection over the rooms that exist."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))  # stable: ties keep their order
    packed: list[list[Row]] = []
    rooms: list[int] = []  # the free rooms that some open row has, sorted
    by_room: dict[int, list[int]] = {}  # free room -> the rows with that much left
    for index in order:
        need = len(rows[index]["input_ids"])
        at = bisect.bisect_left(rooms, need)
        if at == len(rooms):  # no open row takes it: a new one
            packed.append([])
            target, room = len(packed) - 1, max_length
        else:
            room = rooms[at]
            target = by_room[room].pop()
            if not by_room[room]:
                del by_room[room], rooms[at]
        packed[target].append(rows[index])
        left = room - need
        if left > 0:
            if left not in by_room:
                bisect.insort(rooms, left)
            by_room.setdefault(left, []).append(target)
    return packed


def join(examples: list[Row]) -> dict[str, list[int]]:
    """One packed row: ids and labels one example after another, positions restarting, each first label ignored."""
    row: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
    for example in examples:
        row["input_ids"] += example["input_ids"]
        row["labels"] += [IGNORE] + example["labels"][1:]
        row["position_ids"] += list(range(len(example["input_ids"])))
    row["examples"] = [len(examples)]
    return row


def collate_packed(rows: list[dict[str, list[int]]], *, pad_id: int) -> dict[str, Any]:
    """Pad packed rows to the longest of the batch: pad id, label -100, and positions 0, 1, ... of their own (a
    block that no real token attends to). No attention mask: the positions say where each example starts."""
    import torch

    width = max(len(row["input_ids"]) for row in rows)
    batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
    for row in rows:
        pad = width - len(row["input_ids"])
        batch["input_ids"].append(row["input_ids"] + [pad_id] * pad)
        batch["labels"].append(row["labels"] + [IGNORE] * pad)
        batch["position_ids"].append(row["position_ids"] + list(range(pad)))
    out = {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}
    real = sum(len(row["input_ids"]) for row in rows)
    out[PACKED_COUNTS] = torch.tensor([sum(row["examples"][0] for row in rows), real], dtype=torch.long)
    return out


def packed_loader(pairs: list[Pair], *, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, max_length: int,
                  batch_size: int, seed: int) -> Any:
    """Tokenize once, pack into rows of `max_length`, shuffle the rows by the run seed, `batch_size` rows a batch."""
    import torch
    from torch.utils.data import DataLoader

    from bench.tasks.causal.encode import encode_pair

    rows = [encode_pair(tokenizer, fmt, p.prompt, p.response, max_length=max_length) for p in pairs]
    packed = [join(examples) for examples in pack_rows(rows, max_length=max_length)]
    shuffle = torch.Generator().manual_seed(seed)
    return DataLoader(packed, batch_size=batch_size, shuffle=True, generator=shuffle,
                      collate_fn=partial(collate_packed, pad_id=tokenizer.pad_token_id))
