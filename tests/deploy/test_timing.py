"""bench.measure.deploy.timing: the interval math against exact and scipy computations, and the stopping rules of
`time_calls` under a clock the test drives (plus one real sleep)."""

from __future__ import annotations

import math
import time
from fractions import Fraction

import pytest

from bench.measure.deploy import timing
from bench.measure.deploy.timing import Timing, quantile_ranks, time_calls

SIZES = (1, 5, 6, 10, 20, 35, 36, 50, 99, 200)
QUANTILES = (0.1, 0.5, 0.9, 0.95)


class Clock:
    """A perf_counter that only moves when the fake calls say they took time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(timing, "perf_counter", fake)
    return fake


def _exact_ranks(n: int, q: float) -> tuple[int, int, bool]:
    """The ranks by brute force in exact rational arithmetic: P(B < l) and P(B >= u) summed term by term."""
    p, tail = Fraction(q), Fraction(1, 40)  # 2.5 % each side
    below = [Fraction(0)]  # below[rank] = P(B < rank)
    for k in range(n):
        below.append(below[-1] + math.comb(n, k) * p ** k * (1 - p) ** (n - k))
    low = max((rank for rank in range(1, n + 1) if below[rank] <= tail), default=0)
    high = min((rank for rank in range(1, n + 1) if 1 - below[rank] <= tail), default=n + 1)
    return max(low, 1), min(high, n), low >= 1 and high <= n


@pytest.mark.parametrize("q", QUANTILES)
def test_quantile_ranks_match_an_exact_brute_force(q: float) -> None:
    assert [quantile_ranks(n, q) for n in SIZES] == [_exact_ranks(n, q) for n in SIZES]


@pytest.mark.parametrize("q", QUANTILES)
def test_quantile_ranks_agree_with_scipy_and_cover_95_percent(q: float) -> None:
    binom = pytest.importorskip("scipy.stats").binom
    for n in SIZES:
        low, high, exact = quantile_ranks(n, q)
        assert exact == (binom.cdf(0, n, q) <= 0.025 and binom.sf(n - 1, n, q) <= 0.025), n
        if not exact:
            continue
        coverage = binom.cdf(high - 1, n, q) - binom.cdf(low - 1, n, q)  # P(low <= B < high)
        assert coverage >= 0.95, (n, low, high, coverage)
        # Neither end can move inward without its tail passing 2.5 %.
        assert binom.cdf(low, n, q) > 0.025 and binom.sf(high - 2, n, q) > 0.025, (n, low, high)


def test_the_textbook_median_interval_and_the_smallest_exact_samples() -> None:
    """Of 10 samples the 2nd and 9th bracket the median with 97.9 % (Conover's table); p50 needs 6 samples
    (0.5^6 < 2.5 %), p90 36 (0.9^35 is just above 2.5 %)."""
    assert quantile_ranks(10, 0.5) == (2, 9, True)
    assert [quantile_ranks(n, 0.5)[2] for n in (5, 6)] == [False, True]
    assert [quantile_ranks(n, 0.9)[2] for n in (35, 36)] == [False, True]


def test_timing_reads_its_intervals_off_the_sorted_samples() -> None:
    samples = (7.0, 1.0, 9.0, 3.0, 10.0, 2.0, 5.0, 8.0, 4.0, 6.0)
    result = Timing(samples)
    assert (result.n, result.p50.value, result.p50.low, result.p50.high, result.p50.exact) == (10, 5.5, 2.0, 9.0, True)
    # Too few samples for p90's upper end: it stops at the largest sample and says so; the lower end is the 7th.
    assert (result.p90.value, result.p90.low, result.p90.high, result.p90.exact) == (pytest.approx(9.1), 7.0, 10.0,
                                                                                     False)


def test_the_mean_interval_is_student_t() -> None:
    stats = pytest.importorskip("scipy.stats")
    samples = (0.011, 0.012, 0.0105, 0.013, 0.0118, 0.0121)
    mean = Timing(samples).mean
    low, high = stats.t.interval(0.95, len(samples) - 1, loc=stats.tmean(samples), scale=stats.sem(samples))
    assert (mean.value, mean.low, mean.high) == pytest.approx((sum(samples) / 6, low, high), rel=1e-12)
    assert math.isnan(Timing((0.01,)).mean.low)


# The fake clock's durations are powers of two, so its sums and differences are exact; its time budget is out of
# reach unless a test is about it.
FOREVER = 1e9


def test_warm_up_calls_are_not_among_the_samples(clock: Clock) -> None:
    durations = iter([1.0, 1.0, 1.0] + [0.125] * 100)  # slow while warming up, fast after
    result = time_calls(lambda: clock.advance(next(durations)), warmup=3, min_repeats=10, max_seconds=FOREVER)
    assert result.samples == (0.125,) * 10  # steady samples: the median is known after min_repeats


def test_noisy_samples_run_to_max_repeats(clock: Clock) -> None:
    durations = iter([0.125, 0.25] * 100)  # the median's interval spans both values: never within ±5 %
    result = time_calls(lambda: clock.advance(next(durations)), warmup=0, min_repeats=10, max_repeats=40,
                        max_seconds=FOREVER)
    assert result.n == 40


def test_max_seconds_stops_measuring(clock: Clock) -> None:
    """Ten one-second calls do not fit into five seconds: five samples; a call longer than the whole budget
    still gets three, the fewest that say anything."""
    assert time_calls(lambda: clock.advance(1.0), warmup=2, min_repeats=10, max_seconds=5.0).n == 5
    assert time_calls(lambda: clock.advance(2.5), warmup=0, min_repeats=10, max_seconds=1.0).n == 3


def test_sync_runs_before_each_timed_call_and_inside_its_span(clock: Clock) -> None:
    """Each sync costs half a second: a sample holds the call and the sync after it, not the one before."""
    synced = []

    def sync() -> None:
        synced.append(clock.now)
        clock.advance(0.5)

    result = time_calls(lambda: clock.advance(1.0), sync=sync, warmup=1, min_repeats=10, max_seconds=FOREVER)
    assert result.samples == (1.5,) * 10
    assert len(synced) == 2 * result.n


def test_a_real_sleep_is_timed_at_its_length() -> None:
    """A 20 ms sleep measures 20 ms at the median: never less (sleep does not wake early), and at most 8 ms more,
    room for wake-up latency on a loaded 2-core machine (about 0.1 ms typical here, 1 ms seen at worst)."""
    result = time_calls(lambda: time.sleep(0.02), warmup=1, min_repeats=10, max_repeats=20, max_seconds=1.0)
    assert 0.020 <= result.p50.value <= 0.028, result.samples
    assert 10 <= result.n <= 20


@pytest.mark.parametrize("options", [{"min_repeats": 0}, {"min_repeats": 5, "max_repeats": 4}, {"warmup": -1},
                                     {"max_seconds": 0.0}, {"target": 0.0}])
def test_impossible_options_are_refused(options: dict) -> None:
    with pytest.raises(ValueError, match="bad timing options"):
        time_calls(lambda: None, **options)
