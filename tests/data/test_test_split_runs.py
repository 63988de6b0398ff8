"""Every run evaluates its test split once, after training, and logs `test/*` beside the `data/*` counts: a tiny
classifier on the default tweets, one on pre-split local files, and a tiny causal LM."""

from __future__ import annotations

import math

import mlflow
import pandas as pd
import pytest
from support import TINY, TINY_CAUSAL, finished_runs, run_cli_here

TEST_METRICS = ("test/accuracy", "test/f1", "test/loss", "test/majority_baseline")
DATA_METRICS = ("data/train_rows", "data/eval_rows", "data/test_rows", "data/near_duplicates_dropped",
                "data/near_duplicates_dropped_train", "data/near_duplicates_dropped_eval",
                "data/near_duplicates_dropped_test")


def _rows(run: pd.Series) -> tuple[int, int, int]:
    return tuple(int(run[f"metrics.data/{name}_rows"]) for name in ("train", "eval", "test"))


def _finished_run(result, store: str) -> pd.Series:
    assert result.returncode == 0, result.stderr[-3000:]
    runs = finished_runs(store)
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    return runs.iloc[0]


def _logged_once(store: str, run_id: str, name: str) -> None:
    assert len(mlflow.MlflowClient(store).get_metric_history(run_id, name)) == 1, name


def test_a_run_logs_its_test_figures_once(store: str, tmp_path) -> None:
    result = run_cli_here(*TINY, "data.max_test_samples=40", f"tracker.uri={store}",
                          f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    run = _finished_run(result, store)
    missing = [m for m in (*TEST_METRICS, *DATA_METRICS) if not math.isfinite(run.get(f"metrics.{m}", math.nan))]
    assert not missing, f"missing metrics: {missing}"
    assert _rows(run) == (48, 24, 40)
    # the default tweets repeat themselves across a split (re-posts, retweets): the copies are dropped and counted
    assert run["metrics.data/near_duplicates_dropped"] == run["metrics.data/near_duplicates_dropped_train"] + \
        run["metrics.data/near_duplicates_dropped_eval"] > 0
    assert run["metrics.data/near_duplicates_dropped_test"] == 0
    assert 0 <= run["metrics.test/accuracy"] <= 1 and run["metrics.test/loss"] > 0
    for name in TEST_METRICS:
        _logged_once(store, run["run_id"], name)
    results = [line for line in result.stdout.splitlines() if line.startswith("results: run ")]
    assert len(results) == 1 and "test/accuracy" in results[0]  # the line that says where the results are


def test_pre_split_files_through_the_cli(store: str, tmp_path) -> None:
    """The test file's rows are the test split: its size and its majority baseline (3 of 4 `good`, while the
    validation file is half and half) show that `test/*` read that file, not validation."""
    files = {"train": ([f"a training review {i}" for i in range(40)], ["bad", "good"] * 20),
             "eval": ([f"a validation review {i}" for i in range(6)], ["good", "bad"] * 3),
             "test": ([f"a test review {i}" for i in range(3)] + ["A training review 0!"], ["good"] * 3 + ["bad"])}
    for name, (texts, labels) in files.items():
        pd.DataFrame({"body": texts, "stars": labels}).to_csv(tmp_path / f"{name}.csv", index=False)
    result = run_cli_here(*TINY, "data=local", f"data.path={tmp_path / 'train.csv'}",
                          f"data.eval_path={tmp_path / 'eval.csv'}", f"data.test_path={tmp_path / 'test.csv'}",
                          "data.text_column=body", "data.label_column=stars", f"tracker.uri={store}",
                          f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    run = _finished_run(result, store)
    assert _rows(run) == (39, 6, 4)
    assert run["metrics.data/near_duplicates_dropped_train"] == 1  # "a training review 0" is in test: 20 good, 19 bad
    assert run["metrics.eval/majority_baseline"] == pytest.approx(0.5)
    assert run["metrics.test/majority_baseline"] == pytest.approx(0.75)
    assert run["params.data.test_path"] == str(tmp_path / "test.csv")


def test_a_causal_lm_run_logs_test_perplexity(store: str, tmp_path) -> None:
    result = run_cli_here(*TINY_CAUSAL, "data.max_test_samples=10", f"tracker.uri={store}",
                          f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    run = _finished_run(result, store)
    figures = (*TEST_METRICS, "test/perplexity", *DATA_METRICS)
    missing = [m for m in figures if not math.isfinite(run.get(f"metrics.{m}", math.nan))]
    assert not missing, f"missing metrics: {missing}"
    assert run["metrics.data/test_rows"] == 10
    assert run["metrics.test/perplexity"] == pytest.approx(math.exp(run["metrics.test/loss"]))
    _logged_once(store, run["run_id"], "test/perplexity")
