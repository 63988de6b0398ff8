"""Runs as `mlflow.search_runs` returns them (one dict per run, `metrics.*`, `params.*`, `tags.*` columns), for the
report's pure-pandas tests: the recommendation, the known-results checks, timing and forgetting. The figures are the
ground truth each test recomputes by hand."""

from __future__ import annotations

import itertools

import pandas as pd

from bench.report import analyse, tuned

H100 = "NVIDIA H100 80GB HBM3"
_ids = itertools.count()


def run(technique: str, seed: int, accuracy: float, *, test: float | None = None, r: int | None = 8,
        targets: str = "qv", model: str = "minilm", device: str = "cpu", timing: str | None = "false",
        metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None,
        params: dict[str, str] | None = None) -> dict:
    """One finished run; `device` is `cpu` or a GPU's name (hw/gpu, on cuda:0); `timing` its timing/shared tag."""
    i = next(_ids)
    start = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(minutes=i)
    gpu = device != "cpu"
    row = {"run_id": f"id{i}", "status": "FINISHED", "experiment_id": "1", "start_time": start,
           "end_time": start + pd.Timedelta(seconds=30), "tags.technique": technique, "tags.model": model,
           "tags.dataset": "tweets", "tags.hw/device": "cuda:0" if gpu else "cpu", "params.seed": str(seed),
           "metrics.eval/accuracy": accuracy}
    if gpu:
        row["tags.hw/gpu"] = device
    if technique != "full":
        row.update({"params.method.r": str(r), "params.method.target_modules": targets})
    if test is not None:
        row["metrics.test/accuracy"] = test
    if timing is not None:
        row["tags.timing/shared"] = timing
    row.update({f"metrics.{k}": v for k, v in (metrics or {}).items()})
    row.update({f"tags.{k}": v for k, v in (tags or {}).items()})
    row.update({f"params.{k}": v for k, v in (params or {}).items()})
    return row


def timed(seconds_per_step: float, tokens_per_s: float, steps: int = 100) -> dict[str, float]:
    """The speed metrics of a run that took `seconds_per_step` per optimizer step."""
    return {"train/time_s": seconds_per_step * steps, "train/steps": steps, "train/tokens_per_s": tokens_per_s}


def analysed(rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(headline table, runs), as `bench.report.build` makes them."""
    runs = analyse.tidy(pd.DataFrame(rows))
    return analyse.headline(runs[runs["stage"] != tuned.TUNE]), runs
