"""The fair comparison in the report: paired intervals equal scipy's, the tuned table recomputed from fair_store's
ground truth, one learning-rate curve per technique, the untuned headline labelled, and every choice made on
validation, whatever the test labels say."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fair_store import CHOSEN, FAIR_EXPERIMENT, FINAL, TECHNIQUES, TUNE, TUNE_SEED_2
from report_expect import close, number, plot
from report_store import tables
from scipy import stats

from bench.core.intervals import difference
from bench.report import analyse, load, tuned, variants


def _seeds(values: list[float], seeds: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"seed": seeds, "accuracy": values})


def _paired(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean difference and scipy's paired-t 95 % interval."""
    interval = stats.ttest_rel(a, b).confidence_interval(0.95)
    return statistics.fmean(x - y for x, y in zip(a, b, strict=True)), interval.low, interval.high


def _welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Difference of means and Welch's 95 % interval, degrees of freedom rounded down as the report does."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    freedom = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    delta = statistics.fmean(a) - statistics.fmean(b)
    half = stats.t.ppf(0.975, math.floor(freedom)) * math.sqrt(va + vb)
    return delta, delta - half, delta + half


def test_the_paired_interval_is_scipys_on_the_per_seed_differences() -> None:
    generator = np.random.default_rng(7)
    for n in (2, 3, 5, 10):
        a, b = list(generator.uniform(0.6, 0.9, n)), list(generator.uniform(0.6, 0.9, n))
        order = list(generator.permutation(n))  # rows in another order: pairs are found by seed, not by position
        found = difference(_seeds(a, list(range(n))), _seeds([b[i] for i in order], order), "accuracy")
        delta, low, high = _paired(a, b)
        assert found.method == f"paired t, {n} seeds"
        assert found.delta == pytest.approx(delta, abs=1e-15)
        assert (found.low, found.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))
        differences = np.subtract(a, b)
        half = stats.t.ppf(0.975, n - 1) * differences.std(ddof=1) / math.sqrt(n)
        assert found.high - found.delta == pytest.approx(half, rel=1e-12)


def test_runs_that_cannot_be_paired_take_welchs_interval() -> None:
    a, b = [0.80, 0.82, 0.85], [0.78, 0.79, 0.83, 0.80]
    for seeds_b in ([1, 2, 3, 4], [1, 2, 2, 3]):  # another seed set; a seed twice on one side
        found = difference(_seeds(a, [1, 2, 3]), _seeds(b, seeds_b), "accuracy")
        assert found.method == "Welch, 3 and 4 runs"
        assert (found.delta, found.low, found.high) == pytest.approx(_welch(a, b), rel=1e-12)
    one = difference(_seeds([0.8], [1]), _seeds([0.7], [1]), "accuracy")
    assert one.method == "paired t, 1 seed" and one.delta == pytest.approx(0.1) and math.isnan(one.low)
    missing = difference(_seeds([0.8, math.nan], [1, 2]), _seeds([0.7, 0.75], [1, 2]), "accuracy")
    assert missing.method == "Welch, 1 and 2 runs" and math.isnan(missing.low)  # seed 2 has no partner left


def _tuned_rows(page: str) -> dict[str, dict]:
    return {row["technique"][1]: row for row in tables(page)["tuned-table"]}


def _interval(cell: tuple[dict, str]) -> tuple[float, float]:
    return float(cell[0]["data-v"]), float(cell[0]["data-high"])


def test_the_tuned_table_is_recomputed_from_the_ground_truth(fair_report: Path) -> None:
    rows = _tuned_rows((fair_report / "index.html").read_text())
    assert list(rows) == list(TECHNIQUES)
    test = {t: [test for _, test in FINAL[t].values()] for t in TECHNIQUES}
    for technique, row in rows.items():
        values, val = test[technique], [v for v, _ in FINAL[technique].values()]
        n, mean = len(values), statistics.fmean(values)
        half = stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)
        assert (row["n"][1], row["lr"][1], row["chosen on"][1]) == (str(n), f"{CHOSEN[technique]:g}", "validation")
        assert close(number(row["test accuracy %"]), mean) and close(number(row["test 95 % CI"]), half)
        assert row["test 95 % CI"][1] == f"± {half * 100:.2f} [{(mean - half) * 100:.2f}, {(mean + half) * 100:.2f}]"
        assert close(number(row["val accuracy %"]), statistics.fmean(val))
        for column, baseline in (("LoRA", "lora"), ("full FT", "full")):
            delta, cell = row[f"Δ test vs {column}"], row[f"Δ vs {column} 95 % CI"]
            if technique == baseline:  # the reference itself: nothing to compare
                assert delta[1] == cell[1] == ""
                continue
            matched = FINAL[technique].keys() == FINAL[baseline].keys()
            want = _paired(values, test[baseline]) if matched else _welch(values, test[baseline])
            assert close(number(delta), want[0]), (technique, column)
            assert _interval(cell) == (pytest.approx(want[1], rel=1e-9), pytest.approx(want[2], rel=1e-9))
            method = "paired t, 3 seeds" if matched else "Welch, 2 and 3 runs"
            assert cell[1].endswith(f"· {method}"), cell[1]
    assert "(better)" in rows["dora"]["Δ vs LoRA 95 % CI"][1]  # the premise: seeds paired, DoRA's gain shows


def test_the_tuned_headline_comes_first_and_the_other_is_labelled_untuned(fair_report: Path, report: Path) -> None:
    page = (fair_report / "index.html").read_text()
    anchors = [page.index(f'<section id="{anchor}">') for anchor in ("tuned", "lr", "headline", "variants")]
    assert anchors == sorted(anchors)
    headline = page[anchors[2]:page.index("</section>", anchors[2])]
    assert "<h2>Headline (untuned)</h2>" in headline and '<p class="intro">Untuned: each technique at its ' \
        "configured learning rate" in headline
    rows = tables(page)["headline-table"]  # the untuned runs only: tuning and final runs are kept apart
    assert sorted((row["technique"][1], row["config"][1]) for row in rows) == [
        ("dora", ""), ("full", ""), ("lora", "alpha=16"), ("lora", "alpha=32")]
    assert {"val accuracy %", "test accuracy %", "Δ val accuracy", "Δ test accuracy"} <= set(rows[0])
    summary = (fair_report / "summary.md").read_text()
    assert summary.index("## Tuned") < summary.index("## Headline (untuned)")
    plain = (report / "index.html").read_text()  # no fair comparison: the headline as it always was
    assert 'id="tuned"' not in plain and "<h2>Headline</h2>" in plain and "untuned" not in plain.lower()
    assert "test accuracy %" not in plain  # no run logged test/*: no empty test columns


def test_a_comparison_with_no_untuned_run_leaves_the_untuned_headline_out(fair_only_report: Path) -> None:
    page = (fair_only_report / "index.html").read_text()
    assert '<section id="tuned">' in page and '<section id="headline">' not in page
    summary = (fair_only_report / "summary.md").read_text()
    assert "## Tuned" in summary and "## Headline" not in summary


def test_one_learning_rate_curve_per_technique_with_the_chosen_rate_starred(fair_report: Path) -> None:
    data, layout = plot((fair_report / "index.html").read_text(), "plot-lr")
    assert [trace["name"] for trace in data] == list(TECHNIQUES)
    extra = {(TUNE_SEED_2[0], TUNE_SEED_2[1]): TUNE_SEED_2[2]}
    for trace in data:
        grid = TUNE[trace["name"]]
        rates = sorted(grid)
        assert trace["x"] == rates
        want = [statistics.fmean([grid[lr][0], *([extra[trace["name"], lr]] if (trace["name"], lr) in extra else [])])
                for lr in rates]
        assert trace["y"] == pytest.approx([v * 100 for v in want], rel=1e-12)
        stars = [lr for lr, symbol in zip(rates, trace["marker"]["symbol"], strict=True) if symbol == "star"]
        assert stars == [CHOSEN[trace["name"]]]
    assert layout["xaxis"]["type"] == "log" and "eval/accuracy" in layout["yaxis"]["title"]["text"]


def test_variants_meet_the_parent_best_on_validation_with_paired_intervals(fair_report: Path) -> None:
    rows = {row["variant"][1]: row for row in tables((fair_report / "index.html").read_text())["variants-table"]}
    # LoRA at alpha=32 is the better LoRA on test, alpha=16 on validation: the parent is chosen on validation.
    assert rows["dora r=8 qv"]["parent"][1] == "lora r=8 qv alpha=16"
    assert rows["dora r=8 qv tuned"]["parent"][1] == "lora r=8 qv tuned"
    final = {t: ([v for v, _ in FINAL[t].values()], [x for _, x in FINAL[t].values()]) for t in ("dora", "lora")}
    row = rows["dora r=8 qv tuned"]
    for split, index in (("val", 0), ("test", 1)):
        delta, low, high = _paired(final["dora"][index], final["lora"][index])
        assert close(number(row[f"Δ {split} accuracy"]), delta)
        assert _interval(row[f"Δ {split} 95 % CI"]) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
        assert row[f"Δ {split} 95 % CI"][1].endswith("· paired t, 3 seeds")


def _choices(runs: pd.DataFrame) -> dict[str, object]:
    """Everything the report chooses: the full fine-tuning each headline row compares with, each variant's parent,
    each technique's starred rate, with and without its final runs."""
    table = analyse.headline(runs[runs["stage"] != tuned.TUNE])
    parents = variants.variant_comparison(table, runs)
    before_final = tuned.lr_points(runs[runs["stage"] != "final"])
    return {"reference": table["reference"].tolist(), "parent": parents["parent_label"].tolist(),
            "starred": tuned.lr_points(runs).query("chosen")["lr"].tolist(),
            "starred_before_final": before_final.query("chosen")[["technique", "lr"]].values.tolist()}


def test_choices_made_on_validation_do_not_move_when_test_labels_are_poisoned(store: tuple[str, Path]) -> None:
    uri, _ = store
    runs = analyse.tidy(load.load_runs(uri, experiment=FAIR_EXPERIMENT, sweep_id=None))
    honest = _choices(runs)
    assert honest["starred_before_final"] == [[t, CHOSEN[t]] for t in TECHNIQUES]  # best on validation
    # Poisoned: every run's test accuracy made the reverse of its validation one, so a choice on test would flip.
    poisoned = _choices(runs.assign(test_accuracy=1.5 - runs["accuracy"]))
    assert poisoned == honest
    lie = _choices(runs.assign(accuracy=1.5 - runs["accuracy"]))  # the premise: the choices do follow validation
    assert lie["parent"] != honest["parent"] and lie["starred_before_final"] != honest["starred_before_final"]


def test_a_final_run_repeating_a_tuning_runs_config_is_no_rerun(store: tuple[str, Path]) -> None:
    uri, _ = store
    raw = load.load_runs(uri, experiment=FAIR_EXPERIMENT, sweep_id=None)
    runs = analyse.tidy(raw)
    hashes = raw.groupby("tags.config_hash")["tags.fair/stage"].agg(set)
    assert (hashes == {"tune", "final"}).any()  # the premise: the same config hash in both stages
    assert not runs["superseded"].any()


def test_results_csv_carries_the_stage_and_the_test_figures(fair_report: Path) -> None:
    frame = pd.read_csv(fair_report / "results.csv")
    final = frame[(frame["stage"] == "final") & (frame["technique"] == "lora")]
    assert len(final) == 3 and (final["lr_chosen"] == CHOSEN["lora"]).all()
    mean = statistics.fmean(test for _, test in FINAL["lora"].values())
    assert final["group_test_accuracy_mean"].map(lambda v: close(v, mean)).all()
    assert set(frame["stage"].fillna("")) == {"tune", "final", ""}
