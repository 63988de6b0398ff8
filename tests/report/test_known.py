"""Known results, checked (`bench.report.known`): every verdict (agrees, disagrees, not measured here, out of scope
on this device) from synthetic runs whose figures are recomputed here, for each measure the data file uses; and the
data file itself: a new expectation is a new row."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from frames import H100, analysed, run, timed

from bench.report import known

FAIR = {"fair/id": "f1"}


def _checks(rows: list[dict]) -> pd.DataFrame:
    return known.checks(*analysed(rows))


def _row(found: pd.DataFrame, claim_start: str) -> pd.Series:
    (index,) = found.index[found["claim"].str.startswith(claim_start)]
    return found.loc[index]


def _qlora_bits(bits: float) -> list[dict]:
    return [run("qlora", s, 0.8, metrics={"mem/weight_bits_per_param": bits}) for s in (1, 2)]


def test_bits_per_parameter_agrees_or_disagrees_with_the_paper() -> None:
    found = _row(_checks(_qlora_bits(4.127)), "QLoRA's 4-bit base")
    assert (found["verdict"], found["figure"], found["interval"]) == ("agrees", "4.127 bits",
                                                                        "[4.127 bits, 4.127 bits]")
    assert _row(_checks(_qlora_bits(4.5)), "QLoRA's 4-bit base")["verdict"] == "disagrees"


def test_an_expectation_no_run_tests_says_so_and_names_the_command() -> None:
    found = _checks([run("lora", 1, 0.8)])
    assert set(found["verdict"]) == {"not measured here"} and len(found) == len(known.expectations())
    assert "bench run experiment=fair-minilm" in _row(found, "The best LoRA learning rate")["how"]


def _speed(device: str, qlora_tps: list[float], timing: str = "false") -> list[dict]:
    rows = [run("lora", s, 0.8, device=device, metrics=timed(0.1, tps))
            for s, tps in zip((1, 2, 3), (1000, 1010, 990), strict=True)]
    return rows + [run("qlora", s, 0.8, device=device, timing=timing, metrics=timed(0.12, tps))
                   for s, tps in zip((1, 2, 3), qlora_tps, strict=True)]


def test_qlora_speed_on_a_gpu_agrees_and_on_a_cpu_is_out_of_scope() -> None:
    qlora = [780.0, 790.0, 770.0]
    found = _row(_checks(_speed(H100, qlora)), "QLoRA trains")
    ratios = [q / lo for q, lo in zip(qlora, (1000, 1010, 990), strict=True)]  # paired: per seed, on logs
    assert found["verdict"] == "agrees" and found["figure"] == f"{math.exp(sum(map(math.log, ratios)) / 3):.2f}×"
    assert "paired t, 3 seeds" in found["how"]
    assert _row(_checks(_speed(H100, [400.0, 410.0, 395.0])), "QLoRA trains")["verdict"] == "disagrees"
    assert _row(_checks(_speed("cpu", qlora)), "QLoRA trains")["verdict"] == "out of scope on this device"


def test_speed_from_runs_that_shared_the_machine_is_not_measured() -> None:
    found = _row(_checks(_speed(H100, [780.0, 790.0, 770.0], timing="true")), "QLoRA trains")
    assert found["verdict"] == "not measured here" and "timed alone" in found["how"] and found["figure"] == ""


def test_dora_time_per_step_against_lora() -> None:
    rows = [run("lora", s, 0.8, device=H100, metrics=timed(0.100 + 0.001 * s, 1000)) for s in (1, 2, 3)]
    rows += [run("dora", s, 0.8, device=H100, metrics=timed(0.126 + 0.001 * s, 800)) for s in (1, 2, 3)]
    found = _row(_checks(rows), "DoRA takes")
    assert found["verdict"] == "agrees" and found["figure"] == "1.25×"  # seconds per 1,000 steps, 127/101 ... 129/103


@pytest.mark.parametrize(("lora", "verdict"), [(0.11, "agrees"), (0.60, "disagrees")])
def test_forgetting_of_lora_against_full_fine_tuning(lora: float, verdict: str) -> None:
    rows = [run("full", s, 0.8, r=None, metrics={"eval/forgetting": 0.30 + 0.01 * s}) for s in (1, 2, 3)]
    rows += [run("lora", s, 0.8, metrics={"eval/forgetting": lora + 0.01 * s * (s % 2)}) for s in (1, 2, 3)]
    found = _row(_checks(rows), "LoRA forgets less")
    assert found["verdict"] == verdict and found["how"].startswith("eval/forgetting, paired t, 3 seeds")


def _tune(technique: str, grid: list[float], best: float) -> list[dict]:
    return [run(technique, 0, 0.8 if lr == best else 0.7, r=None if technique == "full" else 8,
                tags={**FAIR, "fair/stage": "tune"}, params={"trainer.lr": str(lr)}) for lr in grid]


def test_the_learning_rate_ratio_from_a_fair_comparisons_choices() -> None:
    rows = _tune("lora", [1e-4, 1e-3, 1e-2], 1e-3) + _tune("full", [1e-5, 1e-4, 1e-3], 1e-4)
    found = _row(_checks(rows), "The best LoRA learning rate")
    # chosen on validation: 1e-3 / 1e-4; each bracketed by its grid neighbours: [1e-4 / 1e-3, 1e-2 / 1e-5]
    assert (found["figure"], found["interval"], found["verdict"]) == ("10.00×", "[0.10×, 1000.00×]", "agrees")
    edge = _row(_checks(_tune("lora", [1e-4, 1e-3], 1e-3) + _tune("full", [1e-3, 1e-2], 1e-2)),
                "The best LoRA learning rate")
    # both chosen at their grid's top edge: each bracket is open above, so the ratio's interval is [0, ∞)
    assert edge["figure"] == "0.10×" and edge["interval"] == "[0.00×, ∞]" and edge["verdict"] == "agrees"
    # full fine-tuning chosen at its grid's bottom edge: its bracket is open below, so the ratio's is open above
    low = _row(_checks(_tune("lora", [1e-4, 1e-3, 1e-2], 1e-3) + _tune("full", [1e-5, 1e-4], 1e-5)),
               "The best LoRA learning rate")
    assert low["figure"] == "100.00×" and low["interval"] == "[1.00×, ∞]"


@pytest.mark.parametrize(("gap", "verdict"), [(0.01, "agrees"), (0.06, "disagrees")])
def test_tuned_variants_against_tuned_lora_on_test(gap: float, verdict: str) -> None:
    final = {**FAIR, "fair/stage": "final"}
    rows = [run("lora", s, 0.8, test=0.70 + 0.01 * s, tags=final) for s in (1, 2, 3)]
    rows += [run("dora", s, 0.8, test=0.70 + 0.01 * s + gap + 0.002 * (s - 2), tags=final) for s in (1, 2, 3)]
    found = _row(_checks(rows), "Once each is tuned")
    assert found["verdict"] == verdict and found["figure"] == f"{gap * 100:+.2f} pp"
    plain = [{**r, "tags.fair/stage": None, "tags.fair/id": None} for r in rows]
    untuned = _row(_checks(plain), "Once each is tuned")
    assert untuned["verdict"] == "not measured here"  # untuned runs do not test a claim about tuned ones


def test_the_data_file_is_the_list_and_a_new_row_is_a_new_check(tmp_path: Path) -> None:
    for item in known.expectations():
        assert item.measure in known.MEASURES and item.url.startswith("https://") and item.source and item.command
        assert item.expected[0] < item.expected[1] and item.device in ("gpu", "any")
    extra = tmp_path / "known.toml"
    extra.write_text(known.TABLE.read_text() + '\n[[expectation]]\nclaim = "QLoRA holds 8 bits."\nsource = "nobody"\n'
                     'url = "https://example.org"\npublished = "8"\nmeasure = "mean"\n'
                     'metric = "weight_bits_per_param"\n'
                     'technique = "qlora"\nagainst = ""\nexpected = [7.9, 8.1]\nunit = "bits"\ndevice = "any"\n'
                     'command = "bench run method=qlora"\n')
    assert len(known.expectations(extra)) == len(known.expectations()) + 1
    assert known.expectations(extra)[-1].claim == "QLoRA holds 8 bits."
