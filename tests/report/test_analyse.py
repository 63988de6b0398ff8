"""The report's pure parts: intervals, the frontier, configuration labels, repeats, names and hints, devices and
the memory figures."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from bench.core import intervals
from bench.report import analyse, memory, report_hint
from bench.report.build import default_folder
from bench.report.load import display_uri, resolve_uri
from bench.report.render import Column, esc, markdown_table


def test_t_value_is_students_97_5_percentile() -> None:
    for n in [*range(2, 40), 100, 101, 1000, 5001]:
        assert intervals.t_value(n) == pytest.approx(stats.t.ppf(0.975, n - 1), rel=1e-12), n


def test_pareto_frontier_keeps_only_undominated_points() -> None:
    memory = pd.Series([1.0, 2.0, 2.0, 3.0, 4.0, None])
    accuracy = pd.Series([0.70, 0.80, 0.75, 0.78, 0.90, 0.99])
    # (2, .75) loses to (2, .80); (3, .78) loses to (2, .80); a point without memory is not placed at all.
    assert analyse.pareto_mask(memory, accuracy).tolist() == [True, True, False, False, True, False]


def _raw(rows: list[dict]) -> pd.DataFrame:
    """A frame shaped like `mlflow.search_runs`' from {param/tag/metric: value} dicts."""
    start = pd.Timestamp("2025-01-01", tz="UTC")
    minute = pd.Timedelta(minutes=1)
    return pd.DataFrame([{"run_id": f"id{i}", "status": row.pop("status", "FINISHED"), "experiment_id": "1",
                          "start_time": start + i * minute, "end_time": start + (i + 1) * minute, **row}
                         for i, row in enumerate(rows)])


def _lora(r: int, alpha: int, seed: int, lr: str = "0.002", **extra: object) -> dict:
    return {"tags.technique": "lora", "tags.model": "m", "tags.dataset": "d", "params.method.r": str(r),
            "params.method.alpha": str(alpha), "params.method.target_modules": "qv", "params.seed": str(seed),
            "params.trainer.lr": lr, "params.output_dir": f"out/{r}/{seed}", "metrics.eval/accuracy": 0.5, **extra}


def test_alpha_that_follows_the_rank_splits_configurations_but_not_rank_lines() -> None:
    runs = analyse.tidy(_raw([_lora(8, 16, 1), _lora(8, 16, 2), _lora(16, 32, 1), _lora(16, 32, 2)]))
    assert runs["config"].tolist() == ["alpha=16", "alpha=16", "alpha=32", "alpha=32"]
    assert set(runs["line_config"]) == {""}
    assert runs["group"].nunique() == 2 and runs["r"].tolist() == [8, 8, 16, 16]
    table = analyse.headline(runs)
    lines = analyse.rank_lines(table)
    assert [name for name, _ in lines] == ["lora qv"] and lines[0][1]["r"].tolist() == [8, 16]


def test_a_learning_rate_sweep_gives_one_rank_line_per_rate() -> None:
    rows = [_lora(r, 16, 1, lr) for r in (8, 16) for lr in ("0.001", "0.002")]
    table = analyse.headline(analyse.tidy(_raw(rows)))
    assert sorted(name for name, _ in analyse.rank_lines(table)) == ["lora qv trainer.lr=0.001",
                                                                     "lora qv trainer.lr=0.002"]


def test_reruns_count_once_and_sweep_parents_are_not_results() -> None:
    rows = [_lora(8, 16, 1, **{"tags.config_hash": "h1", "metrics.eval/accuracy": 0.1}),
            _lora(8, 16, 1, **{"tags.config_hash": "h1", "metrics.eval/accuracy": 0.9}),
            _lora(8, 16, 2, status="FAILED", **{"tags.config_hash": "h2"}),
            _lora(8, 16, 2, **{"tags.config_hash": "h2", "metrics.eval/accuracy": 0.7}),
            {"tags.sweep_role": "parent", "tags.sweep_id": "s"}]
    runs = analyse.tidy(_raw(rows))
    assert len(runs) == 4  # the parent is gone
    assert runs["superseded"].tolist() == [True, False, False, False]
    assert runs["note"].iloc[2] == "the same config finished in another run"
    table = analyse.headline(runs)
    assert table["n"].tolist() == [2] and table["accuracy_mean"].iloc[0] == pytest.approx(0.8)


def test_single_run_has_no_interval_and_no_full_run_means_no_deltas() -> None:
    table = analyse.headline(analyse.tidy(_raw([_lora(8, 16, 1)])))
    row = table.iloc[0]
    assert row["n"] == 1 and pd.isna(row["accuracy_ci95"]) and pd.isna(row["delta_accuracy"])


def test_names_hints_and_escaping() -> None:
    assert report_hint("bench", "3f2a") == "bench report --experiment bench --sweep 3f2a"
    assert report_hint(None, "3f2a") == "bench report --sweep 3f2a"
    assert report_hint("my exp", None) == "bench report --experiment 'my exp'"
    assert str(default_folder("my/exp", None)) == "reports/my_exp"
    assert str(default_folder("bench", "ab12")) == "reports/ab12"
    assert display_uri("https://user:secret@mlflow.example:5000") == "https://mlflow.example:5000"
    assert resolve_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert esc("<b>&\"'") == "&lt;b&gt;&amp;&quot;&#x27;" and esc(float("nan")) == ""
    table = markdown_table(pd.DataFrame({"name": ["a|b <i>"]}), [Column("name", "name")])
    assert table.splitlines()[-1] == "| a\\|b \\<i\\> |"


def test_default_tracking_uri(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_uri(None) == "http://127.0.0.1:5000"


def test_device_comes_from_the_tags() -> None:
    raw = pd.DataFrame({"tags.hw/device": ["cuda:0", "cuda:1", "cpu", "", None, "cuda:0"],
                        "tags.hw/gpu": ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", None, None, None, ""]})
    # Two GPUs of one model are one device; a CUDA run without a GPU name keeps its device string, not "cpu".
    assert memory.device(raw).tolist() == ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "cpu", "?", "?",
                                           "cuda:0"]
    assert memory.device(pd.DataFrame(index=[0, 1])).tolist() == ["?", "?"]  # a store from before hw/device


def _on(device: str, technique: str, seed: int, accuracy: float, peak: float, **extra: object) -> dict:
    gpu = {"tags.hw/gpu": "H100"} if device.startswith("cuda") else {}
    row = _lora(8, 16, seed, **{"tags.hw/device": device, **gpu, "metrics.eval/accuracy": accuracy,
                                "metrics.mem/tensor_peak_bytes": peak, **extra})
    return {**row, "tags.technique": technique} if technique != "lora" else row


def test_devices_make_configurations_and_deltas_stay_within_one() -> None:
    rows = [_on("cpu", "full", 1, 0.80, 4e9), _on("cpu", "lora", 1, 0.78, 1e9), _on("cpu", "lora", 2, 0.76, 1e9),
            _on("cuda:0", "lora", 1, 0.90, 0.5e9), _on("cuda:0", "lora", 2, 0.92, 0.5e9)]
    table = analyse.headline(analyse.tidy(_raw(rows))).set_index(["device", "technique"])
    assert len(table) == 3 and table.loc[("H100", "lora"), "n"] == 2 and table.loc[("cpu", "lora"), "n"] == 2
    assert table.loc[("H100", "lora"), "label"] == "[H100] lora r=8 qv"
    assert table.loc[("cpu", "lora"), "memory_ratio"] == pytest.approx(0.25)
    # No full fine-tuning on the GPU: blank, never the CPU's as a stand-in.
    assert table.loc[("H100", "lora"), ["delta_accuracy", "memory_ratio", "reference"]].isna().all()
    # The GPU's LoRA beats the CPU's on both axes; each device keeps its own frontier all the same.
    assert table["pareto"].all()


def test_old_memory_figures_never_stand_in_for_the_tensor_peak() -> None:
    rows = [{**_on("cpu", "full", 1, 0.8, math.nan), "metrics.mem/peak_bytes": 4e9},
            {**_on("cpu", "lora", 1, 0.7, math.nan), "metrics.mem/peak_bytes": 1e9,
             "metrics.mem/peak_rss_net_bytes": 2e9}]
    table = analyse.headline(analyse.tidy(_raw(rows)))
    assert table["tensor_peak_bytes"].isna().all() and table["memory_ratio"].isna().all()
    assert not table["pareto"].any() and "peak_bytes" not in table


def test_the_peak_site_comes_from_one_run() -> None:
    site = {"tags.mem/peak_module": "bert.encoder.layer.3", "tags.mem/peak_phase": "backward"}
    rows = [_on("cpu", "lora", 3, 0.7, 1e9, **site), _on("cpu", "lora", 1, 0.7, 1e9),  # seed 1 logged no site
            _on("cpu", "lora", 2, 0.7, 1e9, **{"tags.mem/peak_module": "classifier", "tags.mem/peak_phase": "forward"}),
            _on("cpu", "lora", 4, 0.7, 1e9, **{"tags.mem/peak_phase": "optimizer"})]
    runs = analyse.tidy(_raw(rows))
    peak = memory.peak_site(runs).iloc[0]
    assert (peak["peak_module"], peak["peak_phase"], peak["peak_run"]) == ("classifier", "forward", "id2")


def test_the_runs_table_says_which_scoring_a_causal_lm_figure_used() -> None:
    """A generation-scored run shows its exact match under the scoring it used; a classifier's table gains no
    empty scoring or exact-match column."""
    from bench.report.columns import run_columns
    from bench.report.render import shown_columns

    generated = _lora(8, 16, 1, **{"tags.eval/scoring": "generation", "metrics.eval/exact_match": 0.25,
                                   "metrics.test/exact_match": 0.5, "metrics.eval/accuracy": None})
    runs = analyse.tidy(_raw([generated, _lora(8, 16, 2, **{"tags.eval/scoring": "likelihood"})]))
    assert runs["scoring"].tolist() == ["generation", "likelihood"]
    assert runs["exact_match"].tolist()[0] == 0.25 and runs["test_exact_match"].tolist()[0] == 0.5
    titles = [c.title for c in shown_columns(runs, run_columns(several_datasets=False))]
    assert {"scoring", "val exact match %", "test exact match %"} <= set(titles)
    classifier = analyse.tidy(_raw([_lora(8, 16, 1)]))
    titles = [c.title for c in shown_columns(classifier, run_columns(several_datasets=False))]
    assert not {"scoring", "val exact match %", "test exact match %"} & set(titles)


def test_a_generation_scored_run_is_in_the_headline_by_its_exact_match() -> None:
    """No eval/accuracy, only the exact match of its generations: that is its validation and test figure, so the
    configuration has a headline row; a likelihood-scored run keeps its accuracy."""
    generated = _lora(8, 16, 1, **{"tags.eval/scoring": "generation", "metrics.eval/exact_match": 0.25,
                                   "metrics.test/exact_match": 0.5, "metrics.eval/accuracy": None})
    runs = analyse.tidy(_raw([generated, _lora(8, 16, 2, **{"tags.eval/scoring": "likelihood"})]))
    assert runs["accuracy"].tolist()[0] == 0.25 and runs["test_accuracy"].tolist()[0] == 0.5
    assert runs["accuracy"].tolist()[1] != 0.25
    assert len(analyse.headline(runs)) >= 1
