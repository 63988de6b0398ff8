"""The fair comparison chooses each technique's learning rate on validation: poisoned test figures change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.run.fair_refine import finer_rates
from bench.run.fair_select import TuneResult, _as_result, choose_rates, scores_table, tune_results

EXPERIMENT, FAIR_ID = "fair", "cmp1"
# technique -> [(lr, validation accuracy)]; the best validation rate is 2e-3 for LoRA and 5e-5 for full FT.
TUNING = {"lora": [(6e-4, 0.52), (2e-3, 0.61), (6e-3, 0.58)],
          "full": [(1.5e-5, 0.49), (5e-5, 0.57), (1.5e-4, 0.55)]}
EXPECTED = {"lora": 2e-3, "full": 5e-5}


def _log_run(client, experiment_id: str, *, technique: str, lr: float, metrics: dict[str, float],
             status: str = "FINISHED", fair_id: str = FAIR_ID, stage: str = "tune") -> None:
    from mlflow.entities import Metric, Param, RunTag

    tags = {"technique": technique, "fair/id": fair_id, "fair/stage": stage}
    run = client.create_run(experiment_id, tags=tags).info.run_id
    client.log_batch(run, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                     params=[Param("trainer.lr", str(lr))], tags=[RunTag("config_hash", f"{technique}{lr}")])
    client.set_terminated(run, status)


def _poisoned_store(folder: Path, *, poison: str) -> str:
    """The tuning runs of TUNING, with test figures that point elsewhere. `worst`: the rate with the worst
    validation accuracy has the best test accuracy (and the best on test is never the best on validation);
    `inverse`: test accuracy is one minus validation accuracy. Beside them, runs that must not count: a FAILED
    run, a final-stage run and another comparison's run, each with the best validation accuracy of all."""
    import mlflow

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    for technique, rows in TUNING.items():
        worst = min(rows, key=lambda row: row[1])[0]
        for lr, accuracy in rows:
            test = (0.99 if lr == worst else 0.10) if poison == "worst" else 1 - accuracy
            _log_run(client, experiment_id, technique=technique, lr=lr,
                     metrics={"eval/accuracy": accuracy, "test/accuracy": test, "test/f1": test, "test/loss": 1 - test})
        _log_run(client, experiment_id, technique=technique, lr=1e-1, metrics={"eval/accuracy": 0.99},
                 status="FAILED")
        _log_run(client, experiment_id, technique=technique, lr=1e-2, metrics={"eval/accuracy": 0.99}, stage="final")
        _log_run(client, experiment_id, technique=technique, lr=1e-3, metrics={"eval/accuracy": 0.99},
                 fair_id="other")
        # a run that logged no validation accuracy (it crashed before evaluating) cannot be chosen
        _log_run(client, experiment_id, technique=technique, lr=3e-2, metrics={"test/accuracy": 1.0})
    return uri


@pytest.mark.parametrize("poison", ["worst", "inverse"])
def test_choices_follow_validation_whatever_the_test_split_says(tmp_path: Path, poison: str) -> None:
    uri = _poisoned_store(tmp_path, poison=poison)
    results = tune_results(uri, EXPERIMENT, FAIR_ID)
    assert sorted((r.technique, r.lr) for r in results) == sorted((t, lr) for t, rows in TUNING.items()
                                                                   for lr, _ in rows)
    assert choose_rates(results) == EXPECTED


@pytest.mark.parametrize("poison", ["worst", "inverse"])
def test_finer_rates_are_placed_around_the_best_on_validation_whatever_the_test_split_says(tmp_path: Path,
                                                                                          poison: str) -> None:
    results = tune_results(_poisoned_store(tmp_path, poison=poison), EXPERIMENT, FAIR_ID)
    assert finer_rates(results, techniques=["lora", "full"], first=True) == {
        "lora": [0.0011, 0.00346], "full": [2.74e-5, 8.66e-5]}  # the midpoints around 2e-3 and 5e-5


def test_selection_never_reads_a_test_metric() -> None:
    """A run whose metrics raise on any `test/` key still yields its result: the choice cannot have read one."""

    class NoTest(dict):
        def _guard(self, key):
            if str(key).startswith("test/"):
                raise AssertionError(f"selection read {key}")

        def __getitem__(self, key):
            self._guard(key)
            return super().__getitem__(key)

        def get(self, key, default=None):
            self._guard(key)
            return super().get(key, default)

        def __iter__(self):
            raise AssertionError("selection iterated over all metrics, test/* among them")

        items = values = keys = __iter__

    class Data:
        metrics = NoTest({"eval/accuracy": 0.6, "data/eval_rows": 500.0, "test/accuracy": 0.9})
        params = {"trainer.lr": "0.002"}
        tags = {"technique": "lora"}

    class Run:
        data = Data()

    assert _as_result(Run()) == TuneResult("lora", 0.002, 0.6, 500)


def test_ties_go_to_the_smaller_rate_and_repeats_are_averaged() -> None:
    results = [TuneResult("lora", 6e-3, 0.6), TuneResult("lora", 2e-3, 0.6), TuneResult("lora", 6e-4, 0.5),
               TuneResult("dora", 2e-3, 0.7), TuneResult("dora", 2e-3, 0.5), TuneResult("dora", 6e-3, 0.65)]
    assert choose_rates(results) == {"lora": 2e-3, "dora": 6e-3}  # dora at 2e-3 averages 0.6 < 0.65


def test_scores_table_stars_the_chosen_rate() -> None:
    results = [TuneResult("lora", 2e-3, 0.61), TuneResult("lora", 6e-4, 0.52)]
    assert scores_table(results, {"lora": 2e-3}, ["lora", "full"]).splitlines() == [
        "  lora  lr 0.0006: 0.5200  lr 0.002: 0.6100 *", "  full  no finished run"]
    assert scores_table(results, {"lora": 2e-3}, ["lora"], {"lora": "resolution 3.33x"}) == (
        "  lora  lr 0.0006: 0.5200  lr 0.002: 0.6100 * | resolution 3.33x")


def test_an_empty_or_missing_experiment_gives_no_results(tmp_path: Path) -> None:
    assert tune_results(f"sqlite:///{tmp_path / 'mlflow.db'}", "nowhere", FAIR_ID) == []
    assert choose_rates([]) == {}
