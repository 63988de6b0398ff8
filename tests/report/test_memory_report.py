"""The report's memory over a synthetic store: the training tensor peak drives the headline, the ratios and the
frontier; devices never meet in a comparison; the breakdown at the peak; a store of old runs still reports."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

from report_expect import FULL_CPU, FULL_GPU, QLORA_CPU, QLORA_GPU, close, expected, headline_row, number, plot
from report_store import CATEGORIES, EXPERIMENT, GPU, OLD_RUNS, ROW_CLASS, build_store, finished_groups, tables

from bench.cli import main
from bench.report.plots import CATEGORY_COLORS

LORA_CPU, DORA_CPU = ("minilm", "cpu", "lora", 8, "qv"), ("minilm", "cpu", "dora", 8, "qv")


def _frontier(points: dict[tuple, tuple[float, float]]) -> set[tuple]:
    """The keys no other point beats: as little memory or less and as accurate or more, one of them strictly."""
    def beaten(memory: float, accuracy: float) -> bool:
        return any(m <= memory and a >= accuracy and (m, a) != (memory, accuracy) for m, a in points.values())

    return {key for key, (memory, accuracy) in points.items() if not beaten(memory, accuracy)}


def _means(figure: str) -> dict[tuple, tuple[float, float]]:
    """(mean of a memory figure, mean accuracy) per configuration, from the ground truth."""
    read = {"peak": lambda run: run.peak, "rss": lambda run: run.rss if run.rss is not None else 1.6 * run.peak + 3e8}
    return {key: (statistics.fmean(map(read[figure], runs)), expected(runs)["mean"])
            for key, runs in finished_groups().items()}


def test_the_tensor_peak_places_the_frontier_within_each_device(report: Path) -> None:
    rows = tables((report / "index.html").read_text())["headline-table"]
    by_peak = _means("peak")
    want = set()
    for device in ("cpu", GPU):  # memory on two devices does not compete: one frontier each
        want |= _frontier({key: point for key, point in by_peak.items() if key[1] == device})
    shown = {key for key in by_peak if headline_row(rows, *key)[ROW_CLASS][1] == "frontier"}
    assert shown == want
    # The premise: CPU QLoRA's RSS is the largest, so ranked by RSS it would be off the frontier...
    cpu_rss = {key: point for key, point in _means("rss").items() if key[1] == "cpu"}
    assert max(cpu_rss, key=lambda key: cpu_rss[key][0]) == QLORA_CPU and QLORA_CPU not in _frontier(cpu_rss)
    # ...and one frontier over both devices would drop the CPU's full fine-tuning and QLoRA, which the GPU beats.
    assert {FULL_CPU, QLORA_CPU} <= shown - _frontier(by_peak)
    qlora = headline_row(rows, *QLORA_CPU)
    assert close(number(qlora["tensor peak"]), by_peak[QLORA_CPU][0])
    assert number(qlora["net RSS"]) > max(number(headline_row(rows, *key)["net RSS"]) for key in cpu_rss
                                          if key != QLORA_CPU)


def test_two_devices_give_two_configurations_and_compare_only_within_one(report: Path) -> None:
    page = (report / "index.html").read_text()
    rows = tables(page)["headline-table"]
    full = {device: headline_row(rows, "minilm", device, "full", None, None) for device in ("cpu", GPU)}
    assert {row["device"][1] for row in full.values()} == {"cpu", GPU}
    assert [row["n"][1] for row in full.values()] == ["3", "2"]
    groups = finished_groups()
    for key in groups:  # every ratio divides by full fine-tuning on the configuration's own device
        reference = expected(groups[(key[0], key[1], "full", None, None)]) if key[0] == "minilm" else None
        ratio = expected(groups[key])["peak"] / reference["peak"] if reference else math.nan
        assert close(number(headline_row(rows, *key)["memory ×"]), ratio), key
    qlora, full_gpu = expected(groups[QLORA_GPU]), expected(groups[FULL_GPU])
    assert headline_row(rows, *QLORA_GPU)["memory ×"][1] == f"{qlora['peak'] / full_gpu['peak']:.2f}×"
    # Variants: the CPU's DoRA meets the CPU's LoRA; the GPU's DoRA has no LoRA on its device, so no row.
    variants = tables(page)["variants-table"]
    assert [(row["device"][1], row["variant"][1], row["parent"][1]) for row in variants] == [
        ("cpu", "[cpu] minilm dora r=8 qv", "[cpu] minilm lora r=8 qv")]
    dora, lora = expected(groups[DORA_CPU]), expected(groups[LORA_CPU])
    assert close(number(variants[0]["memory ×"]), dora["peak"] / lora["peak"])
    # The plot draws one frontier per device, each named.
    data, layout = plot(page, "plot-pareto")
    assert sorted(trace["name"] for trace in data if trace["mode"] == "lines") == [
        f"Pareto frontier ({GPU})", "Pareto frontier (cpu)"]
    assert "tensor peak" in layout["xaxis"]["title"]["text"]


def test_the_breakdown_shows_each_category_mean_and_where_the_peak_fell(report: Path) -> None:
    page = (report / "index.html").read_text()
    rows = {row["configuration"][1]: row for row in tables(page)["breakdown-table"]}
    groups = finished_groups()
    assert len(rows) == len(groups)
    for key, runs in groups.items():
        model, device, technique, r, targets = key
        label = f"[{device}] {model} {technique}" + (f" r={r} {targets}" if r is not None else "")
        row, want = rows[label], expected(runs)
        assert close(number(row["tensor peak MiB"]), want["peak"]), key
        for name in CATEGORIES:
            assert close(number(row[f"{name} MiB"]), want[name]), (key, name)
        lowest = min(runs, key=lambda run: run.seed)
        assert (row["module"][1], row["phase"][1]) == lowest.peak_where()
    data, layout = plot(page, "plot-breakdown")
    assert [trace["name"] for trace in data] == list(CATEGORIES) and layout["barmode"] == "stack"
    assert [trace["marker"]["color"] for trace in data] == [CATEGORY_COLORS[name] for name in CATEGORIES]
    assert len(set(CATEGORY_COLORS.values())) == len(CATEGORIES)
    optimizer = data[CATEGORIES.index("optimizer")]
    at = optimizer["y"].index("[cpu] minilm full")
    assert close(optimizer["x"][at], expected(groups[FULL_CPU])["optimizer"] / 2 ** 20)
    assert optimizer["customdata"][at][0] == "optimizer · optimizer.step"  # phase · module, of the lowest seed
    summary = (report / "summary.md").read_text()
    table = summary[summary.index("## Memory at the peak"):]
    line = next(line for line in table.splitlines() if line.startswith("| [cpu] minilm full |"))
    full = expected(groups[FULL_CPU])
    assert f"| {full['params'] / 2 ** 20:,.1f} |" in line and "| optimizer |" in line


def test_a_store_of_old_runs_reports_a_blank_tensor_peak(tmp_path: Path) -> None:
    uri = build_store(tmp_path, OLD_RUNS)
    assert main(["report", "--experiment", EXPERIMENT, "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 0
    page = (tmp_path / "r" / "index.html").read_text()
    rows = tables(page)["headline-table"]
    assert len(rows) == 2 and "peak memory" not in rows[0] and "device" not in rows[0]  # one device: no column
    for row in rows:  # mem/peak_bytes never stands in: the tensor peak, its ratio and the frontier stay blank
        assert row["tensor peak"][1] == row["memory ×"][1] == "" and row[ROW_CLASS][1] == ""
        assert row["val accuracy %"][1] and row["tokens/s"][1]
        # untagged (timing/shared): their speed shows but is compared with nothing
        assert row["speed ×"][1] == "" and row["timing"][1] == "unknown"
    assert not re.search(r"3\.73 GiB|1\.40 GiB", page)  # 4.0e9 and 1.5e9 bytes, as a size would read
    assert 'id="plot-pareto"' not in page and 'id="plot-breakdown"' not in page
    assert 'id="breakdown"' not in page and "Memory at the peak (<code>" in page  # left out, listed at the top
    # no plan/peak_bytes: no point, and no other figure stands in for the prediction
    assert 'id="plot-prediction"' not in page and "Predicted against measured (<code>" in page
    assert "## Memory at the peak" not in (tmp_path / "r" / "summary.md").read_text()
