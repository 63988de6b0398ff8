"""Named profiler ranges: where a profiled step's time is attributed. Code in any layer marks its own work with
`scope("<category>")` (LongLoRA's shift, the training loop's data and optimizer); `bench.measure.profile` reads the
ranges back. Outside a profile a scope costs one flag check."""

from __future__ import annotations

import contextlib
from typing import Any

RANGE_PREFIX = "bench::"  # the profiler ranges bench opens are named bench::<category>
_NOTHING = contextlib.nullcontext()


def range_name(category: str) -> str:
    """The profiler range that marks time spent in `category`."""
    return f"{RANGE_PREFIX}{category}"


def scope(category: str) -> contextlib.AbstractContextManager[Any]:
    """A `bench::<category>` profiler range while torch's profiler records; a shared no-op otherwise."""
    import torch

    if not torch.autograd._profiler_enabled():
        return _NOTHING
    return torch.profiler.record_function(range_name(category))
