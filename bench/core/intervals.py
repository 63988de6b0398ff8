"""95 % intervals: of a mean over seeds (Student t), and of the difference between two sets of runs.

Runs of two techniques that share a seed share a batch order (the seed fixes the shuffle), so the luck of that
order is common to both: the difference is then the mean of per-seed differences, with a paired Student-t interval
(n - 1 degrees of freedom), much narrower than treating the two sets as independent. Where the seeds do not match
one to one the runs cannot be paired, and the interval is Welch's for two independent samples. Plain Python and
pandas: scipy's import alone would cost the report half a second.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import pandas as pd

PAIRED, WELCH = "paired t", "Welch"


@functools.cache  # a report asks for the same few sample sizes hundreds of times
def t_value(n: int) -> float:
    """Student's t for a two-sided 95 % interval from n samples (n - 1 degrees of freedom), by bisection on the
    exact distribution function until the midpoint no longer moves (full double precision)."""
    df = n - 1
    low, high = 0.0, 16.0
    while _two_sided(high, df) < 0.95:
        high *= 2
    while True:
        middle = (low + high) / 2
        if middle in (low, high):
            return middle
        low, high = (middle, high) if _two_sided(middle, df) < 0.95 else (low, middle)


def _two_sided(t: float, df: int) -> float:
    """P(|T| < t) for integer degrees of freedom: Abramowitz & Stegun 26.7.3 (odd) and 26.7.4 (even)."""
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df == 1:
        return 2 * theta / math.pi
    term = math.cos(theta) if df % 2 else 1.0
    total = term
    for k in range(3 if df % 2 else 2, df - 1, 2):
        term *= cos2 * (k - 1) / k
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * total) if df % 2 else math.sin(theta) * total


@dataclass(frozen=True)
class Difference:
    """A minus B: the estimate, its 95 % interval (NaN when the runs cannot give one) and how it was computed,
    e.g. `paired t, 3 seeds` or `Welch, 3 and 2 runs`."""

    delta: float
    low: float
    high: float
    method: str


NONE = Difference(math.nan, math.nan, math.nan, "")


def difference(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> Difference:
    """`metric` of runs `a` minus runs `b` (frames with a `seed` column): paired when their seeds match one to
    one, Welch otherwise. Runs without the metric are left out before pairing."""
    a, b = a.dropna(subset=[metric]), b.dropna(subset=[metric])
    if a.empty or b.empty:
        return NONE
    if _pairable(a["seed"], b["seed"]):
        per_seed = a.set_index("seed")[metric] - b.set_index("seed")[metric]
        return paired(per_seed)
    return welch(a[metric], b[metric])


def _pairable(a: pd.Series, b: pd.Series) -> bool:
    """Every run has exactly one partner of the same seed on the other side."""
    known = a.notna().all() and b.notna().all()
    return bool(known and a.is_unique and b.is_unique and set(a) == set(b))


def paired(per_seed: pd.Series) -> Difference:
    """The mean of per-seed differences with a Student-t interval on them (none from a single seed)."""
    n, mean = len(per_seed), float(per_seed.mean())
    method = f"{PAIRED}, {n} seed{'s' if n != 1 else ''}"
    if n < 2:
        return Difference(mean, math.nan, math.nan, method)
    half = t_value(n) * float(per_seed.std(ddof=1)) / math.sqrt(n)
    return Difference(mean, mean - half, mean + half, method)


def welch(a: pd.Series, b: pd.Series) -> Difference:
    """The difference of two independent means with Welch's interval (degrees of freedom rounded down, so it
    errs wide); none unless both sides have two runs or more and some spread."""
    delta = float(a.mean() - b.mean())
    method = f"{WELCH}, {len(a)} and {len(b)} runs"
    if len(a) < 2 or len(b) < 2:
        return Difference(delta, math.nan, math.nan, method)
    va, vb = float(a.var(ddof=1)) / len(a), float(b.var(ddof=1)) / len(b)
    if va + vb == 0:
        return Difference(delta, math.nan, math.nan, method)
    freedom = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_value(int(freedom) + 1) * math.sqrt(va + vb)
    return Difference(delta, delta - half, delta + half, method)


def mean_interval(values: pd.core.groupby.SeriesGroupBy) -> pd.DataFrame:
    """Per group: n, mean, standard deviation and the 95 % Student-t half-width, low and high (blank from a
    single run)."""
    out = pd.DataFrame({"n": values.count(), "mean": values.mean(), "std": values.std(ddof=1)})
    t = out["n"].map(lambda n: t_value(n) if n > 1 else math.nan)
    out["ci95"] = t * out["std"] / out["n"] ** 0.5
    return out.assign(low=out["mean"] - out["ci95"], high=out["mean"] + out["ci95"])


def wilson(share: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion `share` of `n` trials (an accuracy over its rows): unlike the
    normal one it stays inside [0, 1] and is not empty at 0 or n successes. NaN for no trials."""
    if not n or n <= 0:
        return math.nan, math.nan
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
