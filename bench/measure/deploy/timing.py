"""Wall-clock timing of a call, repeated until its median is known well enough, with 95 % intervals.

`time_calls` warms a call up, then times it again and again with `time.perf_counter` until the 95 % interval
of the median lies within ±target of the median, or a repeat or time budget runs out. `Timing` holds the samples
and states what is known from them:

- p50, p90: distribution-free intervals from order statistics. Of n samples, the number B that fall below the
  true q-quantile is Binomial(n, q) whatever the distribution of the times, so the sorted samples x_(l) and
  x_(u) bracket that quantile with probability P(l <= B < u) = F(u-1) - F(l-1). Each tail gets at most 2.5 %.
  Times are skewed (a rare stall costs many times the usual call), which is why the headline is a quantile.
- mean: Student t, which leans on the mean of n samples being about normal; a long right tail makes it
  optimistic for a handful of samples. Throughput (work / mean time) needs the mean, not a quantile.

Torch-free: the caller passes the synchronisation its device needs (`bench.measure.deploy.speed.device_sync`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter  # a module global, so tests can swap in a clock they drive

CONFIDENCE = 0.95
FEWEST_SAMPLES = 3  # what a time budget still waits for when min_repeats would not fit into it


@dataclass(frozen=True)
class Interval:
    """An estimate and its 95 % interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Quantile(Interval):
    """A quantile of the samples with its order-statistic 95 % interval. `exact=False`: too few samples for
    one side (or both) of that interval, which then stops at the smallest or largest sample and covers the
    quantile with less than 95 %; p90 needs 36 samples, p50 six."""

    exact: bool = True


def quantile_ranks(n: int, q: float, confidence: float = CONFIDENCE) -> tuple[int, int, bool]:
    """1-based ranks (l, u) of the sorted samples whose values bracket the q-quantile with at least
    `confidence`, and whether both tails are within (1 - confidence) / 2.

    With B ~ Binomial(n, q) and F its distribution function: l is the largest rank with P(B < l) = F(l-1) at
    most the tail, u the smallest with P(B >= u) = 1 - F(u-1) at most the tail. A rank that does not exist
    (even the smallest or largest sample misses more often than the tail allows) is clamped to 1 or n."""
    if n < 1 or not 0 < q < 1:
        raise ValueError(f"need n >= 1 and 0 < q < 1, got n={n}, q={q}")
    tail = (1 - confidence) / 2
    cdf = _binomial_cdf(n, q)  # cdf[k] = F(k) for k = 0..n
    low = max((rank for rank in range(1, n + 1) if cdf[rank - 1] <= tail), default=0)
    high = min((rank for rank in range(1, n + 1) if 1 - cdf[rank - 1] <= tail), default=n + 1)
    return max(low, 1), min(high, n), low >= 1 and high <= n


def _binomial_cdf(n: int, q: float) -> list[float]:
    """F(0..n) of Binomial(n, q), summed from probabilities computed in logs so that no binomial coefficient
    overflows a float. Plain Python: scipy is a test-only dependency of bench (and slow to import)."""
    log_q, log_rest = math.log(q), math.log1p(-q)
    total, cdf = 0.0, []
    for k in range(n + 1):
        log_choose = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        total += math.exp(log_choose + k * log_q + (n - k) * log_rest)
        cdf.append(min(total, 1.0))
    return cdf


def _interpolated(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values by linear interpolation between ranks (numpy's default)."""
    position = (len(ordered) - 1) * q
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


@dataclass(frozen=True)
class Timing:
    """Seconds per call, one sample per timed call (warm-up calls are not among them); see the module's
    docstring for what each interval is."""

    samples: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a Timing needs at least one sample")

    @property
    def n(self) -> int:
        return len(self.samples)

    def quantile(self, q: float) -> Quantile:
        """The q-quantile of the samples with its distribution-free 95 % interval."""
        ordered = sorted(self.samples)
        low, high, exact = quantile_ranks(len(ordered), q)
        return Quantile(_interpolated(ordered, q), ordered[low - 1], ordered[high - 1], exact)

    @property
    def p50(self) -> Quantile:
        return self.quantile(0.5)

    @property
    def p90(self) -> Quantile:
        return self.quantile(0.9)

    @property
    def mean(self) -> Interval:
        """The mean with a Student-t 95 % interval; NaN bounds from a single sample."""
        mean = math.fsum(self.samples) / self.n
        if self.n < 2:
            return Interval(mean, math.nan, math.nan)
        from bench.core.intervals import t_value  # the one exact t quantile in bench, without scipy

        variance = math.fsum((sample - mean) ** 2 for sample in self.samples) / (self.n - 1)
        half = t_value(self.n) * math.sqrt(variance / self.n)
        return Interval(mean, mean - half, mean + half)


def time_calls(call: Callable[[], object], *, sync: Callable[[], object] | None = None, warmup: int = 3,
               min_repeats: int = 10, max_repeats: int = 200, max_seconds: float = 5.0,
               target: float = 0.05) -> Timing:
    """Time `call()` until the 95 % interval of the median is within ±`target` of it (relative), after at least
    `min_repeats` samples; or `max_repeats` samples; or `max_seconds` of measuring (warm-up not counted), which
    still waits for `min_repeats` samples when they fit, else for at least three.

    `warmup` calls run first, untimed: the first calls pay for allocation, kernel selection and caches. `sync`
    (e.g. `torch.cuda.synchronize`) runs before each timed call, so work queued earlier is not counted, and
    inside the timed span after it, so work the call only queued is."""
    if warmup < 0 or not 1 <= min_repeats <= max_repeats or max_seconds <= 0 or target <= 0:
        raise ValueError(f"bad timing options: warmup={warmup}, min_repeats={min_repeats}, "
                         f"max_repeats={max_repeats}, max_seconds={max_seconds}, target={target}")
    for _ in range(warmup):
        call()
    samples: list[float] = []
    started = perf_counter()
    while not _enough(samples, perf_counter() - started, min_repeats=min_repeats, max_repeats=max_repeats,
                      max_seconds=max_seconds, target=target):
        samples.append(_time_once(call, sync))
    return Timing(tuple(samples))


def _time_once(call: Callable[[], object], sync: Callable[[], object] | None) -> float:
    if sync is not None:
        sync()
    start = perf_counter()
    call()
    if sync is not None:
        sync()
    return perf_counter() - start


def _enough(samples: list[float], elapsed: float, *, min_repeats: int, max_repeats: int, max_seconds: float,
            target: float) -> bool:
    """Whether `time_calls` may stop: see its docstring for the order of the rules."""
    n = len(samples)
    if n >= max_repeats:
        return True
    if elapsed >= max_seconds and n >= min(min_repeats, FEWEST_SAMPLES):
        return True  # below min_repeats only when min_repeats did not fit into the budget
    if n < min_repeats:
        return False
    median = Timing(tuple(samples)).p50
    return median.exact and median.value * (1 - target) <= median.low <= median.high <= median.value * (1 + target)
