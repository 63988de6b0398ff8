"""'Where the time goes' in the report: profiled runs' step times by category, averaged over seeds, one stacked bar
per configuration, and a sentence per technique naming what costs its difference from the one it modifies."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from report_expect import plot
from report_store import Run, build_store, tables

from bench.cli import main
from bench.measure.profile.categories import CATEGORIES

# ms per step by category; each technique's figures differ from LoRA's in the categories that explain it
LORA = {"base_matmul": 40.0, "dequant": 0.0, "adapter": 10.0, "attention": 15.0, "optimizer": 2.0,
        "data_host": 3.0, "other": 30.0}
PROFILES = {"full": {**LORA, "adapter": 0.0, "base_matmul": 55.0, "optimizer": 25.0},
            "lora": LORA, "qlora": {**LORA, "dequant": 28.0, "adapter": 11.0},
            "dora": {**LORA, "adapter": 31.0}}


def _profiled(technique: str, seed: int, shift: float = 0.0) -> Run:
    """A run whose every category is `shift` ms above its technique's profile (so a mean over seeds shows)."""
    figures = {name: value + shift if value else 0.0 for name, value in PROFILES[technique].items()}
    extra = {f"prof/{name}_ms": value for name, value in figures.items()}
    extra["prof/step_ms"] = sum(figures.values())
    full = technique == "full"
    return Run("minilm", technique, None if full else 8, None if full else "qv", seed, 0.7, 2e8, 1000.0,
               4e5, extra=extra, name=f"{technique}-{seed}")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("time-store")
    runs = [_profiled("full", 1), _profiled("lora", 1, -1.0), _profiled("lora", 2, 1.0), _profiled("qlora", 1),
            _profiled("dora", 1), Run("minilm", "rslora", 8, "qv", 1, 0.7, 2e8, 1000.0, 4e5)]  # rsLoRA: no profile
    uri = build_store(folder, runs)
    out = folder / "report"
    assert main(["report", "--tracking-uri", uri, "--experiment", "cmp", "--out", str(out)]) == 0
    return (out / "index.html").read_text()


def _sentence(page: str, technique: str) -> str:
    found = re.findall(rf"<li>({technique} r=8 qv[^<]*)</li>", page)
    assert len(found) == 1, found
    return html.unescape(found[0])


def test_each_profiled_configuration_has_its_step_time_by_category(page: str) -> None:
    rows = {row["configuration"][1]: row for row in tables(page)["time-table"]}
    assert set(rows) == {"full", "lora r=8 qv", "qlora r=8 qv", "dora r=8 qv"}  # rsLoRA was not profiled
    assert rows["lora r=8 qv"]["n"][1] == "2"
    assert float(rows["lora r=8 qv"]["step ms"][1]) == pytest.approx(sum(LORA.values()), abs=0.05)  # seeds' mean
    assert float(rows["qlora r=8 qv"]["dequant ms"][1]) == pytest.approx(28.0, abs=0.05)
    data, layout = plot(page, "plot-time")
    assert layout["barmode"] == "stack"
    assert [trace["name"] for trace in data] == list(CATEGORIES.values())  # in stacking order
    dequant = next(trace for trace in data if trace["name"] == CATEGORIES["dequant"])
    assert dict(zip(dequant["y"], dequant["x"], strict=True))["qlora r=8 qv"] == pytest.approx(28.0)


def test_each_difference_is_named_by_what_costs_it(page: str) -> None:
    qlora = _sentence(page, "qlora")
    assert qlora.startswith("qlora r=8 qv takes 29.0 ms more per step than lora r=8 qv (100.0 → 129.0 ms)")
    assert "+28.0 ms in 4-bit dequantization" in qlora
    dora = _sentence(page, "dora")
    assert dora.startswith("dora r=8 qv takes 21.0 ms more per step than lora r=8 qv") and \
        "+21.0 ms in the adapter's own work" in dora
    lora = _sentence(page, "lora")
    assert lora.startswith("lora r=8 qv takes 28.0 ms less per step than full (128.0 → 100.0 ms)")
    assert "−23.0 ms in the optimizer step, −15.0 ms in the base model's matmuls" in lora


def test_a_report_without_a_profiled_run_says_how_to_get_one(tmp_path: Path) -> None:
    uri = build_store(tmp_path, [Run("minilm", "lora", 8, "qv", 1, 0.7, 2e8, 1000.0, 4e5)])
    assert main(["report", "--tracking-uri", uri, "--experiment", "cmp", "--out", str(tmp_path / "r")]) == 0
    page = (tmp_path / "r" / "index.html").read_text()
    assert '<section id="time">' not in page and "time-table" not in page  # left out, and said where to get it:
    assert "Where the time goes (<code>bench run experiment=profile-minilm</code>)" in page
