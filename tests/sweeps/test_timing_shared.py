"""`timing/shared` on every cell's run: `true` when another cell of the sweep ran beside it, `false` when it had the
machine to itself; the spans it is decided from, on synthetic timings."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from support import TINY, finished_runs, run_cli

from bench.run import overlap


@pytest.mark.parametrize(("n_jobs", "shared"), [(2, "true"), (1, "false")])
def test_a_two_cell_sweep_tags_whether_its_cells_overlapped(store: str, tmp_path: Path, n_jobs: int,
                                                           shared: str) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli("-m", *TINY, "tracker.log_model=false", "hydra/launcher=joblib",
                     f"hydra.launcher.n_jobs={n_jobs}", "seed=1,2", f"tracker.uri={store}",
                     f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = finished_runs(store)
    cells = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(cells) == 2 and set(cells["status"]) == {"FINISHED"}
    assert list(cells[overlap_column()]) == [shared, shared]
    spans = [json.loads(path.read_text()) for path in sorted((sweep / overlap.FOLDER).glob("*.json"))]
    assert len(spans) == 2 and all(span["end"] is not None for span in spans)
    first, second = sorted(spans, key=lambda span: span["start"])
    assert (second["start"] < first["end"]) == (shared == "true")  # what the tag says is what the spans show


def overlap_column() -> str:
    return f"tags.{overlap.SHARED_TAG}"


def _span(folder: Path, job: int, start: float, end: float | None, host: str | None = None) -> None:
    (folder / overlap.FOLDER).mkdir(parents=True, exist_ok=True)
    span = {"host": host or socket.gethostname(), "start": start, "end": end}
    (folder / overlap.FOLDER / f"{job}.json").write_text(json.dumps(span))


def test_only_a_span_on_this_host_that_overlaps_counts(tmp_path: Path) -> None:
    timing = overlap.Timing(tmp_path, 0)
    start = timing.span.start
    _span(tmp_path, 1, start - 100, start - 50)  # ended before this cell began
    _span(tmp_path, 2, start - 10, None, host="another-node")  # a SLURM task elsewhere, still running
    assert timing.end() is False
    assert timing.end() is False  # ended once; a second call reads the first answer
    assert json.loads((tmp_path / overlap.FOLDER / "0.json").read_text())["end"] >= start


@pytest.mark.parametrize("other", [
    {"start": -5.0, "end": None},  # began before this one and still runs
    {"start": -5.0, "end": 1e12},  # began before, ended after this one began
    {"start": 0.001, "end": None},  # began while this one ran
])
def test_a_neighbour_that_ran_during_the_cell_makes_it_shared(tmp_path: Path, other: dict) -> None:
    timing = overlap.Timing(tmp_path, 0)
    start = timing.span.start
    _span(tmp_path, 7, start + other["start"], other["end"])
    time.sleep(0.01)  # this cell runs on past the neighbour's start
    assert timing.end() is True


def test_an_unreadable_span_counts_as_a_neighbour_and_a_new_launch_forgets_the_last(tmp_path: Path) -> None:
    (tmp_path / overlap.FOLDER).mkdir()
    (tmp_path / overlap.FOLDER / "3.json").write_text("{half")
    assert overlap.Timing(tmp_path, 0).end() is True  # never a false `alone`
    _span(tmp_path, 4, 0.0, None)  # a cell of a killed launch: no end
    overlap.clear(tmp_path)
    assert overlap.Timing(tmp_path, 0).end() is False
