"""The sizes `bench plan --gpu-memory` and `--headroom` take; the cards themselves are `bench.core.cards` (the
report reads them too). The headroom covers the gap between the memory sold and the memory CUDA reports, and
whatever the predicted process (tensors, the allocator's scratch, its cache and the CUDA context,
`bench.plan.overhead`) did not see.
"""

from __future__ import annotations

from bench.core.cards import CARDS, GIB, MIB, Card, SizeError, card, parse_size

__all__ = ["CARDS", "DEFAULT_HEADROOM", "GIB", "MIB", "Card", "SizeError", "card", "parse_headroom", "parse_size"]

# Kept free by default beyond the predicted process: the gap between the memory sold and the memory CUDA reports,
# and what the terms beyond the tensors (taken from stored runs, or zero where none measured them) did not see.
# `--headroom` sets another share or a fixed size.
DEFAULT_HEADROOM = "10%"


def parse_headroom(text: str, memory_bytes: int) -> int:
    """Bytes kept free: `10%` of `memory_bytes`, or a size such as `2GiB`."""
    stripped = text.strip()
    if stripped.endswith("%"):
        try:
            share = float(stripped[:-1])
        except ValueError:
            share = -1.0
        if not 0 <= share < 100:
            raise SizeError(f"--headroom={text!r} is not valid; give a percentage in [0, 100) such as 10% "
                            "or a size such as 2GiB")
        return int(memory_bytes * share / 100)
    headroom = parse_size(stripped, option="--headroom")
    if headroom >= memory_bytes:
        raise SizeError(f"--headroom={text!r} leaves nothing of {memory_bytes / GIB:.2f} GiB; keep it below that")
    return headroom
