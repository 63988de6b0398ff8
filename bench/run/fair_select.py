"""The fair comparison's choice: per technique, the learning rate with the best validation accuracy.

Only `eval/accuracy`, the validation split's figure, is read from the tuning runs; the test split's figures
(`test/*`) are never looked at, so the test accuracy the report headlines is not selected on the test split.
tests/fair/test_selection.py poisons `test/*` in a store to show the choices do not move.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bench.core.metrics import EVAL_ACCURACY

SELECTION_METRIC = EVAL_ACCURACY  # validation; `test/*` must never decide anything
ROWS_METRIC = "data/eval_rows"  # the validation rows the accuracy is a share of: what its noise depends on


@dataclass(frozen=True)
class TuneResult:
    """One finished tuning run, as the choice sees it: nothing of the test split is in it."""

    technique: str
    lr: float
    score: float  # the run's SELECTION_METRIC
    rows: int | None = None  # the validation rows it was measured on (ROWS_METRIC); None: not logged


def choose_rates(results: Iterable[TuneResult]) -> dict[str, float]:
    """Per technique, the rate with the highest validation score (the mean where a rate ran more than once).
    A tie goes to the smaller rate: the gentler update is the safer one to carry over to other seeds."""
    scores: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        scores[result.technique][result.lr].append(result.score)
    chosen = {}
    for technique, by_rate in scores.items():
        means = {lr: sum(values) / len(values) for lr, values in by_rate.items()}
        chosen[technique] = max(means, key=lambda lr: (means[lr], -lr))
    return chosen


def tune_results(uri: str, experiment: str, fair_id: str) -> list[TuneResult]:
    """The FINISHED tuning runs of comparison `fair_id`; a run without a finite validation accuracy is left out."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    query = (f"tags.`fair/id` = '{fair_id}' and tags.`fair/stage` = 'tune' "
             "and attributes.status = 'FINISHED'")
    runs = client.search_runs([found.experiment_id], query, max_results=50_000)
    return [result for result in map(_as_result, runs) if result is not None]


def _as_result(run: Any) -> TuneResult | None:
    """The technique, the rate the run trained with, its validation score and rows: the only fields read."""
    score = run.data.metrics.get(SELECTION_METRIC)
    rows = run.data.metrics.get(ROWS_METRIC)
    lr = run.data.params.get("trainer.lr")
    technique = run.data.tags.get("technique")
    if score is None or lr is None or technique is None or not math.isfinite(score):
        return None
    return TuneResult(technique=technique, lr=float(lr), score=float(score),
                      rows=int(rows) if rows is not None and math.isfinite(rows) and rows > 0 else None)


def scores_table(results: Iterable[TuneResult], chosen: dict[str, float], techniques: list[str],
                 notes: dict[str, str] | None = None) -> str:
    """The tuning stage as lines in the order of `techniques`, `lora  lr 0.0006: 0.5433  lr 0.002: 0.5800 *`,
    the chosen rate starred, then the technique's `notes` (how finely its rate was chosen) after ` | `; a technique
    without a finished tuning run says so."""
    by_technique: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        by_technique[result.technique][result.lr].append(result.score)
    width = max(map(len, techniques), default=0)
    lines = []
    for technique in techniques:
        cells = [f"lr {lr:.3g}: {sum(v) / len(v):.4f}{' *' if chosen.get(technique) == lr else ''}"
                 for lr, v in sorted(by_technique[technique].items())]
        note = (notes or {}).get(technique)
        lines.append(f"  {technique:<{width}}  " + ("  ".join(cells) or "no finished run") + (f" | {note}" if note
                                                                                           else ""))
    return "\n".join(lines)
