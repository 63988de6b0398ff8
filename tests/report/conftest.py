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


@pytest.fixture(scope="session")
def report(store: tuple[str, Path]) -> Path:
    """The report of the experiment, written through the real `bench report` entry point."""
    uri, folder = store
    out = folder / "report"
    assert main(["report", "--experiment", EXPERIMENT, "--tracking-uri", uri, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def fair_report(store: tuple[str, Path]) -> Path:
    """The report of the fair comparison's experiment, written the same way."""
    uri, folder = store
    out = folder / "fair-report"
    assert main(["report", "--experiment", FAIR_EXPERIMENT, "--tracking-uri", uri, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def fair_only_report(store: tuple[str, Path]) -> Path:
    """The report of a fair comparison with no untuned run beside it."""
    uri, folder = store
    out = folder / "fair-only-report"
    assert main(["report", "--experiment", FAIR_ONLY_EXPERIMENT, "--tracking-uri", uri, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def deploy_report(store: tuple[str, Path]) -> Path:
    """The report of the experiment whose runs measured their deployment forms."""
    uri, folder = store
    out = folder / "deploy-report"
    assert main(["report", "--experiment", DEPLOY_EXPERIMENT, "--tracking-uri", uri, "--out", str(out)]) == 0
    return out
