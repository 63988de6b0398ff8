"""Speed is compared only between runs timed alone (`bench.report.timing`): a configuration whose runs shared the
machine, or carry no timing/shared tag, gets no speed ratio; a fair comparison's re-timing runs add timing to the
final configuration they repeat and no headline row of their own. Also forgetting as an axis, and a page that shows
no section with nothing in it."""

from __future__ import annotations

from pathlib import Path

import pytest
from frames import analysed, run, timed
from report_store import tables

from bench.report import forgetting, timing, variants

FAIR = {"fair/id": "f1"}


def _speed(full: str | None, lora: str | None) -> list[dict]:
    rows = [run("full", s, 0.85, r=None, timing=full, metrics=timed(0.2, 500.0)) for s in (1, 2)]
    return rows + [run("lora", s, 0.80, timing=lora, metrics=timed(0.1, 1000.0)) for s in (1, 2)]


@pytest.mark.parametrize(("full", "lora", "ratio", "state"), [
    ("false", "false", 2.0, "alone"), ("false", "true", None, "shared"), (None, "false", None, "alone"),
    ("false", None, None, "unknown")])
def test_a_speed_ratio_needs_both_sides_timed_alone(full: str | None, lora: str | None, ratio: float | None,
                                                    state: str) -> None:
    table, _ = analysed(_speed(full, lora))
    row = table[table["technique"] == "lora"].iloc[0]
    assert row["timing"] == state and row["tokens_per_s"] == 1000.0  # the figure as logged stays in the table
    assert (row["speed_ratio"] == pytest.approx(ratio)) if ratio else row["speed_ratio"] != row["speed_ratio"]


def test_the_note_says_why_no_speed_is_compared() -> None:
    table, _ = analysed(_speed("true", None))
    note = timing.note(table)
    assert "only between runs timed alone (timing/shared=false)" in note
    assert "No configuration was timed alone (1 configuration trained beside other cells; 1 carries no " \
           "timing/shared tag" in note and note.endswith("so every speed comparison is left out.")


def test_a_retime_run_times_its_final_configuration_and_adds_no_row() -> None:
    final = {**FAIR, "fair/stage": "final"}
    rows = [run("lora", s, 0.8, timing="true", tags=final, metrics=timed(0.3, 400.0)) for s in (1, 2)]
    rows += [run("dora", s, 0.8, timing="true", tags=final, metrics=timed(0.4, 300.0)) for s in (1, 2)]
    rows += [run("lora", 1, 0.8, timing="false", tags={**FAIR, "fair/stage": "retime"}, metrics=timed(0.1, 1000.0)),
             run("dora", 1, 0.8, timing="false", tags={**FAIR, "fair/stage": "retime"}, metrics=timed(0.125, 800.0))]
    table, runs = analysed(rows)
    assert list(table["stage"]) == ["final", "final"] and list(table["n"]) == [2, 2]  # no retime row
    lora = table[table["technique"] == "lora"].iloc[0]
    assert lora["timing"] == "alone" and lora["alone_n"] == 1 and lora["alone_tokens_per_s"] == 1000.0
    assert lora["alone_s_per_1k_steps"] == pytest.approx(100.0)  # 0.1 s a step
    dora = variants.variant_comparison(table, runs).iloc[0]
    assert dora["parent_speed_ratio"] == pytest.approx(0.8)  # from the re-timing runs alone, not the shared ones


def test_forgetting_against_accuracy_marks_its_frontier() -> None:
    points = {"full": (0.90, 0.40), "lora": (0.85, 0.10), "dora": (0.84, 0.20), "qlora": (0.80, 0.05)}
    rows = [run(t, s, acc + 0.002 * s, r=None if t == "full" else 8, metrics={"eval/forgetting": f + 0.001 * s})
            for t, (acc, f) in points.items() for s in (1, 2)]
    table, _ = analysed(rows)
    found = forgetting.rows(table).set_index("technique")
    # dora forgets more than lora and is less accurate: the only one off the frontier
    assert found["forgetting_front"].to_dict() == {"full": True, "lora": True, "dora": False, "qlora": True}
    figure = forgetting.figure(forgetting.rows(table))
    front = next(trace for trace in figure["data"] if trace["name"] == "Pareto frontier")
    assert front["x"] == pytest.approx([0.0515, 0.1015, 0.4015])
    section = forgetting.section(table)
    assert section is not None and "On the frontier: full, lora r=8 qv, qlora r=8 qv." in section.body
    assert forgetting.section(analysed([run("lora", 1, 0.8)])[0]) is None


def test_the_page_shows_no_empty_section_and_lists_what_is_missing(report: Path) -> None:
    page = (report / "index.html").read_text()
    assert 'class="empty"' not in page
    line = page[page.index('<p class="absent">'):]
    line = line[:line.index("</p>")]
    for heading, command in (("Where the time goes", "bench run experiment=profile-minilm"),
                             ("Accuracy vs forgetting", "bench run experiment=smollm2-quick"),
                             ("Tuned: each technique at its best learning rate", "bench run experiment=fair-minilm")):
        assert f"{heading} (<code>{command}</code>)" in line
    order = [page.index(f'<section id="{anchor}">') for anchor in ("pick", "known", "headline")]
    assert order == sorted(order)
    summary = (report / "summary.md").read_text()
    assert summary.index("## What to pick") < summary.index("## Known results, checked") < summary.index("## Headline")
    assert "known-table" in tables(page)
