"""The finer rates after the grid, on synthetic validation results: midpoints around the best, one step beyond an end,
every technique in the first round, later only one whose neighbours differ by more than their binomial noise."""

from __future__ import annotations

import math

import pytest

from bench.run.fair_refine import Point, describe, finer_rates, neighbourhoods, noise
from bench.run.fair_select import TuneResult

ROWS = 500  # validation rows, as in experiment=fair-minilm


def _results(technique: str, scores: dict[float, float], rows: int | None = ROWS) -> list[TuneResult]:
    return [TuneResult(technique, lr, score, rows) for lr, score in scores.items()]


def test_noise_is_the_standard_error_of_a_difference_of_two_binomial_accuracies() -> None:
    assert noise(Point(1e-3, 0.6, 500), Point(2e-3, 0.6, 500)) == pytest.approx(math.sqrt(2 * 0.24 / 500))
    assert noise(Point(1e-3, 0.6, 500), Point(2e-3, 0.6, 500)) == pytest.approx(0.03098, abs=1e-5)  # ~3 points
    assert noise(Point(1e-3, 0.9, 2000), Point(2e-3, 0.5, 500)) == pytest.approx(math.sqrt(0.09 / 2000 + 0.25 / 500))
    assert noise(Point(1e-3, 0.6, None), Point(2e-3, 0.6, 500)) == 0.0  # rows unknown: no noise to hide behind


def test_the_first_round_halves_the_log_step_around_the_best_even_when_its_neighbours_are_within_noise() -> None:
    """LoRA's grid on validation (README): 2e-3 and 6e-3 within noise of each other, yet 3.5e-3 beat both."""
    results = _results("lora", {6e-4: 0.540, 2e-3: 0.626, 6e-3: 0.620})
    near = neighbourhoods(results)["lora"]
    assert near.best.lr == 2e-3 and (near.below.lr, near.above.lr) == (6e-4, 6e-3)
    assert not near.settled  # 6e-4 is 8.6 points below, more than the noise
    assert finer_rates(results, techniques=["lora"], first=True) == {"lora": [0.0011, 0.00346]}
    settled = _results("lora", {6e-4: 0.610, 2e-3: 0.626, 6e-3: 0.620})
    assert neighbourhoods(settled)["lora"].settled
    assert finer_rates(settled, techniques=["lora"], first=True) == {"lora": [0.0011, 0.00346]}
    assert finer_rates(settled, techniques=["lora"], first=False) == {}  # a later round: settled means done


def test_a_later_round_refines_only_a_technique_whose_neighbour_differs_by_more_than_noise() -> None:
    results = [*_results("lora", {2e-3: 0.626, 3.46e-3: 0.648, 6e-3: 0.620}),  # within 3 points on both sides
               *_results("dora", {6e-3: 0.601, 1.1e-2: 0.697, 2e-2: 0.519})]  # 9.6 and 17.8 points down
    assert finer_rates(results, techniques=["lora", "dora"], first=False) == {"dora": [0.00812, 0.0148]}
    near = neighbourhoods(results)
    assert near["lora"].resolution == pytest.approx(6e-3 / 3.46e-3) and near["lora"].settled
    assert describe(near["lora"]) == "resolution 1.73x, settled"
    assert describe(near["dora"]).startswith("resolution 1.83x, not settled")


def test_a_best_at_an_end_gets_a_rate_one_step_beyond_it() -> None:
    results = _results("qalora", {6e-3: 0.50, 2e-2: 0.58, 6e-2: 0.63})
    near = neighbourhoods(results)["qalora"]
    assert near.above is None and near.resolution is None and not near.settled
    assert describe(near) == "resolution unknown: the best is the end of the rates tried"
    low, high = finer_rates(results, techniques=["qalora"], first=False)["qalora"]
    assert (low, high) == (0.0346, 0.18)  # the midpoint below, and 6e-2 * 3 above


def test_without_rows_a_technique_is_never_settled() -> None:
    results = _results("lora", {2e-3: 0.626, 3.46e-3: 0.627, 6e-3: 0.626}, rows=None)
    assert not neighbourhoods(results)["lora"].settled
    assert finer_rates(results, techniques=["lora"], first=False) == {"lora": [0.00263, 0.00456]}


def test_nothing_to_halve_or_already_as_fine_as_the_digits_go() -> None:
    assert finer_rates(_results("lora", {2e-3: 0.6}), techniques=["lora"], first=True) == {}
    tight = _results("lora", {1e-3: 0.5, 1.001e-3: 0.7, 1.002e-3: 0.5})  # midpoints round onto tried rates
    assert finer_rates(tight, techniques=["lora"], first=True) == {}
    assert finer_rates([], techniques=["lora"], first=True) == {}


def test_the_rounds_follow_the_order_of_techniques_and_skip_unknown_ones() -> None:
    results = [*_results("dora", {2e-3: 0.5, 6e-3: 0.6, 2e-2: 0.5}), *_results("lora", {2e-3: 0.5, 6e-3: 0.6})]
    assert list(finer_rates(results, techniques=["lora", "full", "dora"], first=True)) == ["lora", "dora"]


def test_repeated_runs_at_a_rate_are_averaged_and_the_fewest_rows_count() -> None:
    results = [TuneResult("lora", 2e-3, 0.60, 500), TuneResult("lora", 2e-3, 0.64, 400),
               TuneResult("lora", 6e-3, 0.61, 500)]
    best = neighbourhoods(results)["lora"].best
    assert best == Point(2e-3, pytest.approx(0.62), 400)
