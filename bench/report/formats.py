"""How a value reads in the report's tables: a raw figure → the text a reader sees. Callers keep missing values
blank before they get here; `render` escapes what comes out."""

from __future__ import annotations

from typing import Any

import pandas as pd

MIB, GIB = 2 ** 20, 2 ** 30  # sizes read in binary units, as memory tools report them


def size(v: float) -> str:
    if v >= GIB:
        return f"{v / GIB:.2f} GiB"
    return f"{v / MIB:.1f} MiB" if v >= MIB else f"{v / 1024:.1f} KiB"


def mib(v: float) -> str:  # the breakdown's unit: one unit down a column reads at a glance
    return f"{v / MIB:,.1f}"


def percent(v: float) -> str:  # accuracy is logged as a fraction, shown in percent
    return f"{v * 100:.2f}"


def count(v: float) -> str:
    return f"{v:,.0f}"


def seconds(v: float) -> str:
    return f"{v:,.1f} s"


def decimal(v: float) -> str:
    return f"{v:.2f}"


def points(v: float) -> str:  # a difference of two accuracies, in percentage points
    return f"{v * 100:+.2f} pp"


def ratio(v: float) -> str:
    return f"{v:.2f}×"


def when(v: Any) -> str:
    return pd.Timestamp(v).strftime("%Y-%m-%d %H:%M:%S UTC")


def plain(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
