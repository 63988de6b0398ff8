"""What the fair comparison (`bench.run.fair`) says on the terminal: what it will run, the tuning stage's table with
the resolution each rate was chosen at, and warnings (a best rate at an end, a technique left out, an experiment
that already holds another comparison)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from bench.config.fair import FairConfig

if TYPE_CHECKING:
    from bench.run.fair_refine import Neighbourhood


def plan_line(fair: FairConfig) -> str:
    """What the comparison will run, in one sentence."""
    techniques, total = len(fair.techniques), 3 if fair.retime else 2
    retime = (f", stage 3/3 re-times each chosen configuration alone, one cell at a time, seed {fair.seeds[0]} "
              f"({techniques} cells)") if fair.retime else ""
    return (f"{techniques} techniques, stage 1/{total} tunes each on validation over {fair.rates_per_technique} rates "
            f"with seed {fair.tune_seed} ({techniques * fair.rates_per_technique} cells), then up to "
            f"{fair.refine_rounds} rounds of 2 finer rates each (at most {2 * techniques * fair.refine_rounds} cells), "
            f"stage 2/{total} runs each at its best rate with seeds {fair.seeds} ({techniques * len(fair.seeds)} "
            f"cells){retime}")


def say_chosen(fair: FairConfig, results: list[Any], near: dict[str, Neighbourhood]) -> None:
    """The tuning stage's table, the resolution each rate was chosen at, a warning for a best rate at an end of the
    rates tried and for a technique left out."""
    from bench.run.fair_refine import describe
    from bench.run.fair_select import scores_table

    chosen = {technique: point.best.lr for technique, point in near.items()}
    notes = {technique: describe(point) for technique, point in near.items()}
    total = 3 if fair.retime else 2
    print(f"stage 1/{total} done: validation accuracy (eval/accuracy) by rate, * = chosen\n"
          f"{scores_table(results, chosen, fair.techniques, notes)}", flush=True)
    for technique, point in near.items():
        if point.below is None or point.above is None:
            side = "largest" if point.above is None else "smallest"
            print(f"warning: {technique}'s best rate, {point.best.lr:.3g}, is the {side} it tried; a better one may "
                  f"lie beyond it (widen fair.grid.{technique})", file=sys.stderr, flush=True)
    left_out = [technique for technique in fair.techniques if technique not in near]
    if left_out:
        print(f"warning: no finished tuning run for {', '.join(left_out)}: left out of stage 2/{total}",
              file=sys.stderr, flush=True)


def warn_if_shared(uri: str, experiment: str, fair_id: str) -> None:
    """The report covers the whole experiment: say so when it already holds another comparison's runs."""
    import mlflow

    from bench.tracking.store import check_reachable

    check_reachable(uri)
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return
    others = client.search_runs([found.experiment_id], f"tags.`fair/id` != '{fair_id}'", max_results=1)
    if others:
        print(f"warning: experiment '{experiment}' already holds runs of another fair comparison "
              f"({others[0].data.tags.get('fair/id')}), and the report covers the whole experiment; for a report of "
              "this comparison alone, give it an experiment of its own: tracker.experiment=<name>",
              file=sys.stderr, flush=True)
