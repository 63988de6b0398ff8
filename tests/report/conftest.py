"""One synthetic store and its reports for the report tests (they only read them): experiment `cmp` (sweeps,
devices, memory), experiment `fair` (a fair comparison) and experiment `deploy` (deployment cost)."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_store import DEPLOY_EXPERIMENT, build_deploy
from fair_store import FAIR_EXPERIMENT, FAIR_ONLY_EXPERIMENT, build_fair
from report_store import EXPERIMENT, build_store

from bench.cli import main


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp("report-store")
    uri = build_store(folder)
    build_fair(folder, uri)
    build_deploy(folder, uri)
    return uri, folder


def _write_report(store: tuple[str, Path], experiment: str, folder_name: str) -> Path:
    """The report of one experiment of the store, written through the real `bench report` entry point."""
    uri, folder = store
    out = folder / folder_name
    assert main(["report", "--experiment", experiment, "--tracking-uri", uri, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def report(store: tuple[str, Path]) -> Path:
    """The report of the experiment with sweeps, devices and memory figures."""
    return _write_report(store, EXPERIMENT, "report")


@pytest.fixture(scope="session")
def fair_report(store: tuple[str, Path]) -> Path:
    """The report of the fair comparison's experiment."""
    return _write_report(store, FAIR_EXPERIMENT, "fair-report")


@pytest.fixture(scope="session")
def fair_only_report(store: tuple[str, Path]) -> Path:
    """The report of a fair comparison with no untuned run beside it."""
    return _write_report(store, FAIR_ONLY_EXPERIMENT, "fair-only-report")


@pytest.fixture(scope="session")
def deploy_report(store: tuple[str, Path]) -> Path:
    """The report of the experiment whose runs measured their deployment forms."""
    return _write_report(store, DEPLOY_EXPERIMENT, "deploy-report")
