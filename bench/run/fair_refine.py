"""The fair comparison's finer rates: after the grid, rounds of new rates around each technique's best on validation,
until the best rate's neighbours are within the noise of its validation accuracy, or a cap of rounds is reached.

A half-decade grid can miss a technique's best rate by as much as the differences the comparison judges: LoRA scored
62.6 % at 2e-3 and 62.0 % at 6e-3 on validation, and 64.8 % at 3.5e-3, between them. Each round tries, per
technique, the geometric midpoint between its best rate and each tried neighbour (where the best is the end of what
was tried, one step beyond it instead, as far as the neighbour on the other side), so the spacing around the best
halves in log-rate every round. The first round always runs: two neighbours within noise of the best do not show
that the curve is flat between them (LoRA's did not). A later round runs for a technique only while a neighbour's
validation accuracy differs from the best's by more than their noise: one standard error of the difference of two
binomial proportions on the validation rows, sqrt(p(1-p)/n + q(1-q)/m) (about 3 points at 60 % on 500 rows). It
measures the sampling of the validation rows, not seed-to-seed spread, which the tuning stage, one seed, cannot see.

Only validation accuracies are read (`bench.run.fair_select.TuneResult`): the test split decides nothing here either.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from bench.run.fair_select import TuneResult, choose_rates

DIGITS = 3  # significant digits of a new rate: 0.00346, not 0.0034641016151377548; finer than 5 rounds need


@dataclass(frozen=True)
class Point:
    """One tried rate of a technique: its mean validation accuracy and the validation rows (None: not logged)."""

    lr: float
    accuracy: float
    rows: int | None


@dataclass(frozen=True)
class Neighbourhood:
    """A technique's best tried rate and its tried neighbours on either side (None: the best is that end)."""

    best: Point
    below: Point | None
    above: Point | None

    @property
    def settled(self) -> bool:
        """Both neighbours were tried and each is within noise of the best: a finer rate could not be told apart."""
        return all(side is not None and abs(self.best.accuracy - side.accuracy) < noise(self.best, side)
                   for side in (self.below, self.above))

    @property
    def resolution(self) -> float | None:
        """The larger ratio between the best rate and a neighbour: the best rate on validation lies within this
        factor of the chosen one (if the curve has one peak); None at an end of what was tried."""
        if self.below is None or self.above is None:
            return None
        return max(self.best.lr / self.below.lr, self.above.lr / self.best.lr)


def noise(first: Point, second: Point) -> float:
    """One standard error of the difference between two validation accuracies, each a binomial proportion on its
    rows; 0 when a run did not log its rows (so no pair counts as within noise, and refining goes on to the cap)."""
    if not first.rows or not second.rows:
        return 0.0
    return math.sqrt(_variance(first.accuracy) / first.rows + _variance(second.accuracy) / second.rows)


def _variance(accuracy: float) -> float:
    share = min(max(accuracy, 0.0), 1.0)
    return share * (1 - share)


def neighbourhoods(results: Iterable[TuneResult]) -> dict[str, Neighbourhood]:
    """Per technique with a finished tuning run: its best rate (as `choose_rates` chooses it) and its neighbours."""
    results = list(results)
    chosen = choose_rates(results)
    grouped: dict[str, dict[float, list[TuneResult]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        grouped[result.technique][result.lr].append(result)
    found = {}
    for technique, best in chosen.items():
        points = [_point(lr, runs) for lr, runs in sorted(grouped[technique].items())]
        index = next(i for i, point in enumerate(points) if point.lr == best)
        found[technique] = Neighbourhood(best=points[index], below=points[index - 1] if index > 0 else None,
                                         above=points[index + 1] if index + 1 < len(points) else None)
    return found


def _point(lr: float, runs: list[TuneResult]) -> Point:
    rows = [run.rows for run in runs]
    return Point(lr=lr, accuracy=sum(run.score for run in runs) / len(runs),
                 rows=None if None in rows else min(rows))  # type: ignore[type-var]


def finer_rates(results: Iterable[TuneResult], *, techniques: list[str], first: bool) -> dict[str, list[float]]:
    """The next round: per technique that needs one, its two new rates (below and above its best), in the order of
    `techniques`. `first`: the round after the grid, which every technique gets; later, only an unsettled one.
    A technique with one tried rate has no step to halve, and one whose new rates round onto tried ones (finer than
    DIGITS) is as fine as this search goes: neither gets a round."""
    results = list(results)
    found = neighbourhoods(results)
    tried = defaultdict(set)
    for result in results:
        tried[result.technique].add(_rounded(result.lr))
    rounds = {}
    for technique in techniques:
        near = found.get(technique)
        if near is None or (near.below is None and near.above is None) or (near.settled and not first):
            continue
        best = near.best.lr
        low = math.sqrt(near.below.lr * best) if near.below else best * best / near.above.lr  # type: ignore[union-attr]
        high = math.sqrt(best * near.above.lr) if near.above else best * best / near.below.lr  # type: ignore[union-attr]
        new = [_rounded(low), _rounded(high)]
        if not tried[technique] & set(new) and new[0] != new[1]:
            rounds[technique] = new
    return rounds


def _rounded(lr: float) -> float:
    return float(f"{lr:.{DIGITS}g}")


def describe(near: Neighbourhood | None) -> str:
    """How finely a technique's rate was chosen, for the table between the stages: `resolution 1.73x, settled`."""
    if near is None:
        return ""
    if near.resolution is None:
        return "resolution unknown: the best is the end of the rates tried"
    state = "settled" if near.settled else "not settled: a neighbour differs by more than noise"
    return f"resolution {near.resolution:.3g}x, {state}"
