"""Batched greedy decoding with the KV cache, for scoring what a causal LM generates.

Prompts are sorted by length (little padding) and left-padded, so every row's next token comes from the last
position; explicit position ids make a padded row read exactly as it would alone. One forward over the prompts
fills the cache, then one token per step is fed back until every row has produced a stop token (end of sequence,
end of turn) or `max_new_tokens`. Only the kept position's logits are computed (`logits_to_keep=1`): the full logits
of a 49k-word vocabulary over a prompt would dwarf the model.

The clock covers the decoding alone (the device synchronised where it runs asynchronously), so
`eval/generation_tokens_per_s` is the model's generation speed, apart from training and from decoding to text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class Generated:
    """Each prompt's new tokens (stop token included where one came), in prompt order, and what it cost."""

    tokens: list[list[int]]
    seconds: float  # wall time of the decoding
    count: int  # new tokens over all prompts

    @property
    def tokens_per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("nan")


def greedy_generate(model: torch.nn.Module, prompts: list[list[int]], *, max_new_tokens: int, stop_ids: set[int],
                    pad_id: int, batch_size: int, device: torch.device,
                    autocast_dtype: torch.dtype) -> Generated:
    """Greedy continuations of `prompts` (token ids), `batch_size` at a time."""
    import torch

    out: list[list[int]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    was_training = model.training
    model.eval()
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype != torch.float32)
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    _synchronize(device)
    start = time.perf_counter()
    try:
        with torch.no_grad(), autocast:
            for first in range(0, len(order), batch_size):
                indices = order[first:first + batch_size]
                rows = _decode_batch(model, [prompts[i] for i in indices], max_new_tokens=max_new_tokens,
                                     stops=stops, pad_id=pad_id, device=device)
                for i, row in zip(indices, rows, strict=True):
                    out[i] = row
        _synchronize(device)
    finally:
        model.train(was_training)
    return Generated(out, time.perf_counter() - start, sum(map(len, out)))


def _decode_batch(model: torch.nn.Module, prompts: list[list[int]], *, max_new_tokens: int, stops: torch.Tensor,
                  pad_id: int, device: torch.device) -> list[list[int]]:
    import torch

    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    output = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    steps = []
    for step in range(max_new_tokens):
        token = output.logits[:, -1].argmax(-1)
        steps.append(torch.where(done, -1, token))  # -1: the row had already stopped
        done |= torch.isin(token, stops)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        positions = positions[:, -1:] + 1
        output = model(input_ids=torch.where(done, pad_id, token)[:, None], attention_mask=mask,
                       position_ids=positions, use_cache=True, **_cache_of(output))
    table = torch.stack(steps, dim=1).tolist()
    return [[token for token in row if token >= 0] for row in table]


def _cache_of(output: object) -> dict[str, object]:
    """The KV cache to feed back, under the name this transformers gives it: `cache` (5.x; `past_key_values` is
    deprecated there) or `past_key_values` (4.x)."""
    name = "cache" if getattr(output, "cache", None) is not None else "past_key_values"
    return {name: getattr(output, name)}


def _synchronize(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
