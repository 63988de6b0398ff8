"""One synthetic store and its report for the report tests (they only read them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_store import EXPERIMENT, build_store

from bench.cli import main


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp("report-store")
    return build_store(folder), folder


@pytest.fixture(scope="session")
def report(store: tuple[str, Path]) -> Path:
    """The report of the experiment, written through the real `bench report` entry point."""
    uri, folder = store
    out = folder / "report"
    assert main(["report", "--experiment", EXPERIMENT, "--tracking-uri", uri, "--out", str(out)]) == 0
    return out
