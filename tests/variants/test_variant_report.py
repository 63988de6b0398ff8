"""The report puts each variant beside its parent: QA-LoRA against QLoRA, DoRA against LoRA, with a Welch
interval (their seeds differ, so they cannot be paired) recomputed here with scipy."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from bench.report import analyse, columns, render
from bench.report.variants import variant_comparison


def _run(i: int, technique: str, seed: int, accuracy: float, peak: float, r: int = 8) -> dict:
    start = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(minutes=i)
    return {"run_id": f"id{i}", "status": "FINISHED", "experiment_id": "1", "start_time": start,
            "end_time": start + pd.Timedelta(seconds=30), "tags.technique": technique, "tags.model": "minilm",
            "tags.dataset": "tweets", "params.method.r": str(r), "params.method.target_modules": "qv",
            "params.seed": str(seed), "metrics.eval/accuracy": accuracy, "metrics.mem/tensor_peak_bytes": peak,
            "metrics.train/tokens_per_s": 100.0, "metrics.artifact/adapter_bytes": 1000.0}


QALORA = [0.74, 0.75, 0.77]
QLORA = [0.66, 0.69, 0.67, 0.70]
ROWS = ([_run(i, "qalora", i, a, 3e8) for i, a in enumerate(QALORA)]
        + [_run(10 + i, "qlora", i, a, 2e8) for i, a in enumerate(QLORA)]
        + [_run(20, "dora", 0, 0.71, 5e8), _run(21, "lora", 0, 0.70, 4e8),
           _run(22, "rslora", 0, 0.6, 4e8, r=16),  # no lora at r=16: no parent, left out
           _run(23, "full", 0, 0.8, 9e8)])


@pytest.fixture(scope="module")
def comparison() -> pd.DataFrame:
    runs = analyse.tidy(pd.DataFrame(ROWS))
    return variant_comparison(analyse.headline(runs), runs).set_index("technique")


def test_each_variant_meets_its_parent_at_the_same_rank(comparison: pd.DataFrame) -> None:
    assert sorted(comparison.index) == ["dora", "qalora"]
    assert comparison.loc["qalora", "parent_technique"] == "qlora"
    assert comparison.loc["dora", "parent_technique"] == "lora"
    assert comparison.loc["qalora", "parent_memory_ratio"] == pytest.approx(1.5)
    assert comparison.loc["dora", "delta_parent"] == pytest.approx(0.01)


def test_the_difference_carries_a_welch_interval(comparison: pd.DataFrame) -> None:
    row = comparison.loc["qalora"]
    a, b = pd.Series(QALORA), pd.Series(QLORA)
    assert row["delta_parent"] == pytest.approx(a.mean() - b.mean())
    va, vb = a.var() / len(a), b.var() / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.975, math.floor(df)) * math.sqrt(va + vb)  # df rounded down: errs wide
    assert row["delta_parent_low"] == pytest.approx(a.mean() - b.mean() - half)
    assert row["delta_parent_high"] == pytest.approx(a.mean() - b.mean() + half)
    assert row["delta_parent_method"] == "Welch, 3 and 4 runs"
    assert math.isnan(comparison.loc["dora", "delta_parent_low"])  # one run a side: no interval


def test_the_tables_say_which_way_the_interval_points(comparison: pd.DataFrame) -> None:
    frame = comparison.reset_index()
    text = render.markdown_table(frame, columns.variant_columns(several_datasets=False))
    qalora = next(line for line in text.splitlines() if line.startswith("| qalora"))
    assert "qlora" in qalora and "(better)" in qalora
    html = render.table_html(frame, columns.variant_columns(several_datasets=False), "v")
    assert "no interval" in html and "Δ val 95 % CI" in html
