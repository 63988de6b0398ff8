"""What to pick per memory budget (`bench.report.recommend`): each branch on a synthetic set of runs whose figures
are recomputed here by hand — a clear winner, candidates validation cannot tell apart (the cheaper wins, the deciding
figure named), nothing fitting, runs on two devices (measured on the card's, the plan elsewhere), and a choice that
never looks at test."""

from __future__ import annotations

from pathlib import Path

import pytest
from frames import H100, analysed, run, timed

from bench.cli import main
from bench.core.cards import GIB, SizeError
from bench.report import recommend

LORA, DORA, FULL = [0.80, 0.82, 0.78], [0.81, 0.80, 0.83], [0.90, 0.91, 0.92]


def _gpu_runs(lora_timing: str = "false") -> list[dict]:
    """Full FT, LoRA and DoRA on an H100, three shared seeds each: full clearly best; DoRA's mean above LoRA's but
    their paired difference [+1, −2, +5] pp has an interval around zero."""
    rows = []
    for seed in (1, 2, 3):
        rows.append(run("full", seed, FULL[seed - 1], device=H100, metrics={
            "mem/peak_nvml_process_bytes": 30 * GIB, **timed(0.20, 500.0), "artifact/adapter_bytes": 9e7}))
        rows.append(run("lora", seed, LORA[seed - 1], device=H100, timing=lora_timing, metrics={
            "mem/peak_nvml_process_bytes": 5 * GIB, **timed(0.10, 1000.0), "artifact/adapter_bytes": 3e5}))
        rows.append(run("dora", seed, DORA[seed - 1], device=H100, metrics={
            "mem/peak_nvml_process_bytes": 6 * GIB, **timed(0.13, 800.0), "artifact/adapter_bytes": 3e5}))
    return rows


def _pick(rows: list[dict], budget: str, price: float | None = None) -> recommend.Pick:
    table, runs = analysed(rows)
    (found,) = recommend.recommend(table, runs, recommend.budgets(budget), price_per_hour=price)
    return found


def test_the_best_on_validation_that_fits_is_recommended_and_said_to_be_the_best() -> None:
    found = _pick(_gpu_runs(), "80GiB")
    assert found.chosen["technique"] == "full" and found.decided_by == ""
    assert "it is the best overall on validation" in found.sentence
    assert "30.00 GiB, mem/peak_nvml_process_bytes measured on NVIDIA H100 80GB HBM3" in found.sentence


def test_indistinguishable_candidates_go_to_the_cheaper_and_the_deciding_figure_is_named() -> None:
    found = _pick(_gpu_runs(), "24GiB", price=3.6)
    # full (30 GiB) does not fit; DoRA is the most accurate that does, LoRA cannot be told from it on validation
    assert found.chosen["technique"] == "lora" and set(found.tied) == {"dora r=8 qv", "lora r=8 qv"}
    assert found.decided_by == "time per 1,000 steps"
    text = found.sentence
    assert text.startswith("24.00 GiB: lora r=8 qv (val 80.00 % ± 4.97")  # t(2) 4.303 x 0.02 / sqrt(3)
    assert "100.0 s per 1,000 steps, 1,000 tokens/s, $0.1000 per 1,000 steps at $3.6/h" in text
    # against full fine-tuning, paired over the three seeds: [-10, -9, -14] pp
    assert "against the best overall, full: Δ val -11.00 pp" in text and "paired t, 3 seeds" in text
    assert "memory 0.17×" in text and "time 0.50×" in text
    assert "Indistinguishable on validation from dora r=8 qv (130.0 s)" in text and "decided (100.0 s)" in text


def test_without_runs_timed_alone_the_cheaper_is_the_smaller_and_speed_is_not_compared() -> None:
    found = _pick(_gpu_runs(lora_timing="true"), "24GiB")
    assert found.chosen["technique"] == "lora" and found.decided_by == "memory"
    assert "its speed is not compared (its runs shared the machine)" in found.sentence
    assert "s per 1,000 steps" not in found.sentence.split("against")[0]


def test_nothing_fitting_names_the_smallest_and_what_it_needs() -> None:
    found = _pick(_gpu_runs(), "1GiB")
    assert found.chosen is None
    assert found.sentence == ("1.00 GiB: nothing fits; the smallest, lora r=8 qv, needs 5.00 GiB "
                              "(mem/peak_nvml_process_bytes measured on NVIDIA H100 80GB HBM3).")


def test_runs_on_another_device_are_judged_by_their_plan_and_labelled_so() -> None:
    seeds = list(zip((1, 2, 3), LORA, strict=True))
    rows = [run("lora", s, a, device=H100, metrics={"mem/peak_nvml_process_bytes": 5 * GIB,
                                                    "plan/process_bytes": 4 * GIB}) for s, a in seeds]
    rows += [run("qlora", s, a - 0.2, metrics={"plan/process_bytes": 1 * GIB, "plan/allocator_peak_bytes": 2 * GIB,
                                               "mem/tensor_peak_bytes": 1.5 * GIB}) for s, a in seeds]
    table, _ = analysed(rows)
    lora, qlora = (table[table["technique"] == t].iloc[0] for t in ("lora", "qlora"))
    h100, rtx = recommend.budgets("h100")[0], recommend.budgets("rtx4090")[0]
    assert recommend.figure(lora, h100) == (5 * GIB, "mem/peak_nvml_process_bytes", True)  # the card it ran on
    assert recommend.figure(lora, rtx) == (4 * GIB, "plan/process_bytes", False)  # another card: its plan
    # a CPU run's process plan holds no CUDA context: the allocator peak it planned stands for it, labelled
    assert recommend.figure(qlora, h100) == (2 * GIB, "plan/allocator_peak_bytes", False)
    sentence = _pick(rows, "rtx4090").sentence
    assert sentence.startswith("24 GiB (GeForce RTX 4090): [NVIDIA H100 80GB HBM3] lora r=8 qv")
    assert "by the plan (plan/process_bytes), its runs on NVIDIA H100 80GB HBM3" in sentence


def test_the_choice_is_made_on_validation_never_on_test() -> None:
    rows = [run("lora", s, 0.85 + d, test=0.70 + d) for s, d in ((1, 0.0), (2, 0.01), (3, -0.01))]
    rows += [run("dora", s, 0.75 + d, test=0.95 + d) for s, d in ((1, 0.0), (2, 0.01), (3, -0.01))]
    for row in rows:
        row["metrics.plan/allocator_peak_bytes"] = 1e9
    found = _pick(rows, "24GiB")
    assert found.chosen["technique"] == "lora"  # best on validation, worst on test
    assert "val 85.00 %" in found.sentence and "test 70.00 %" in found.sentence


def test_budgets_name_every_card_by_default_and_merge_those_with_the_same_outcome() -> None:
    assert [b.card.name for b in recommend.budgets(None)] == ["rtx4090", "l4", "a100-40g", "a100-80g", "h100", "h200"]
    table, runs = analysed(_gpu_runs())  # measured on an H100 only, with no plan: no other card can judge them
    found = recommend.recommend(table, runs, recommend.budgets(None), price_per_hour=None)
    assert [[b.card.name for b in p.budgets] for p in found] == [["rtx4090", "l4", "a100-40g", "a100-80g", "h200"],
                                                                 ["h100"]]
    assert found[0].sentence == ("24 GiB (GeForce RTX 4090), 24 GiB (L4), 40 GiB (A100 40GB), 80 GiB (A100 80GB), "
                                 "141 GiB (H200): no configuration logged a memory figure to judge it by (mem/peak_* "
                                 "on the card, or plan/* from `bench plan`'s engine).")
    assert found[1].chosen["technique"] == "full"


def test_a_bad_budget_or_price_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SizeError, match="'24 apples' is neither a size nor a card"):
        recommend.budgets("24GiB,24 apples")
    store = f"sqlite:///{tmp_path / 'none.db'}"
    for option in (["--budget", "lots"], ["--price-per-hour", "-2"]):
        assert main(["report", "--tracking-uri", store, "--out", str(tmp_path / "r"), *option]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and option[1] in err[0]


def test_one_seed_each_is_judged_by_the_binomial_interval_of_its_validation_rows() -> None:
    """One run per configuration has no interval over seeds, but scored every validation row: 74.0 % and 72.5 % on
    1,000 rows (Wilson 95 %: [71.2, 76.6] and [69.6, 75.2] %) cannot be told apart, so the smaller wins; on 100,000
    rows (±0.3 pp) they can, and the more accurate is the best."""
    def runs(rows: float) -> list[dict]:
        return [run("full", 1, 0.740, metrics={"data/eval_rows": rows, "plan/allocator_peak_bytes": 3e8}),
                run("qlora", 1, 0.725, metrics={"data/eval_rows": rows, "plan/allocator_peak_bytes": 1.8e8})]

    few = _pick(runs(1000), "24GiB")
    assert few.chosen["technique"] == "qlora" and few.decided_by == "memory" and len(few.tied) == 2
    many = _pick(runs(100_000), "24GiB")
    assert many.chosen["technique"] == "full" and "it is the best overall on validation" in many.sentence
