"""Entry points: `bench run` (a Hydra app) and `bench --help`. DictConfig becomes typed config here.

Nothing heavy is imported at module level, so `bench --help` answers at once.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

USAGE = """usage: bench <command> [options]

commands:
  run [overrides...]   fine-tune and record one run in MLflow (Hydra app; `bench run --help` lists the config)
                       e.g. bench run method=qlora method.r=16 trainer.max_steps=50
                            bench run -m method=full,lora,qlora seed=1,2,3
                            bench run experiment=fair-minilm   (each technique at its own rate, tuned on validation)
                       methods: {methods}
  report [--experiment NAME] [--sweep ID] [--out DIR]
                       write a self-contained HTML comparison report (plus results.csv, summary.md)
  plan [--gpu NAME] [--tokens N] [overrides...]
                       will it fit, with what batch, how long: the memory plan of each technique, before renting
                       e.g. bench plan model=llama-3.1-8b method=full,lora,qlora --gpu rtx4090 --tokens 1e9
  ui [--uri URI] [--experiment NAME] [--port N] [--no-browser]
                       the MLflow UI on the store, bound to 127.0.0.1, opened on the experiment's runs

Results go to MLflow (default: ./mlflow.db). Browse them with `bench ui`.
"""
GROUPS = ("model", "method", "data", "trainer", "tracker", "monitor", "deploy", "sweep", "experiment")


def conf_dir() -> Path:
    """`conf/` inside the installed wheel, else the repository's top-level `conf/` (editable installs)."""
    packaged = Path(__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "conf"


def group_choices(group: str) -> list[str]:
    """The selectable configs of a group (files starting with `_` are shared fragments, not choices)."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml") if not p.stem.startswith("_"))


def register_config_defaults() -> None:
    """Put the config's schema (`bench.config.schema`, derived from the typed dataclasses) into Hydra's config store."""
    from bench.config.schema import register

    register()


def compose(overrides: list[str], *, return_hydra_config: bool = False) -> object:
    """The composed config for `overrides`, as `bench run` would see it (for tests and tools, not for runs)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_config_defaults()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=overrides, return_hydra_config=return_hydra_config)


def check_group_overrides(overrides: list[str]) -> None:
    """Reject an unknown `group=choice` before Hydra composes anything, naming the valid choices."""
    from bench.config import ConfigError

    for override in overrides:
        match = re.fullmatch(r"[+~]?(\w+)=(.*)", override)
        if not match or match.group(1) not in GROUPS:
            continue
        group, value = match.groups()
        choices = group_choices(group)
        for choice in value.strip("[]()").split(","):
            if choice.strip() not in choices:
                raise ConfigError(f"unknown {group} {choice.strip()!r}; valid choices: {', '.join(choices)}")


def fair_comparison(overrides: list[str]) -> dict | None:
    """The resolved config of `bench run experiment=<one with a fair: section>`, which bench.run.fair runs as its two
    stage sweeps; None for anything else (composed only when an experiment is named: it costs a fraction of a
    second). The stage sweeps it starts set `fair.stage`, and run as ordinary sweeps."""
    if not any(re.match(r"[+~]?experiment=", override) for override in overrides):
        return None
    flags = {override for override in overrides if override.startswith("-")}
    if flags - {"-m", "--multirun"}:  # --cfg, --help, --info: Hydra shows what it would run, and runs nothing
        return None
    from omegaconf import OmegaConf

    try:
        cfg = compose([override for override in overrides if not override.startswith("-")], return_hydra_config=True)
    except Exception:  # noqa: BLE001 - a bad override or a sweep over experiments: Hydra's own run reports it
        return None
    if cfg.get("fair") is None or cfg.fair.get("stage") is not None:
        return None
    # `${hydra:runtime.output_dir}` resolves only inside a Hydra run; each cell has its own
    composed = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
                for key in cfg if key not in ("output_dir", "hydra")}
    # the launcher only: the re-timing stage runs one cell at a time with it (`hydra.launcher.n_jobs=1`)
    return {**composed, "hydra": {"launcher": OmegaConf.to_container(cfg.hydra.launcher, resolve=False)}}


def _debug() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("BENCH_DEBUG") == "1"


def _run_task(cfg: object) -> float | None:
    """Hydra's task function: a plain dict crosses the boundary, typed config is built from it."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from bench.config import ConfigError
    from bench.config.check import describe
    from bench.run.cells import run_job
    from bench.run.console import quiet

    try:
        raw = OmegaConf.to_container(cfg, resolve=True)
        stage = ""
        if raw.get("fair") is not None:  # a cell of a fair comparison's stage sweep (bench.run.fair)
            from bench.run.fair import prepare_cell

            raw, stage = prepare_cell(raw)  # type: ignore[arg-type]
        raw.pop("fair", None)  # the schema's empty `fair:` section, outside a fair comparison
        with quiet():  # the libraries' output goes to the run's bench.log, not to the terminal
            return run_job(raw, stage=stage)  # type: ignore[arg-type]
    except (ConfigError, OmegaConfBaseException) as error:  # OmegaConf's: an interpolation that does not resolve
        if _debug():
            raise
        print(f"error: {describe(error) or error}", file=sys.stderr)
        sys.exit(2)


def run_command(overrides: list[str]) -> int:
    """`bench run [overrides]`: hand the overrides to Hydra with our conf directory."""
    import hydra

    from bench.config import ConfigError
    from bench.config.check import check_command_line
    from bench.run.console import VERBOSE, asks_verbose, quiet_environment

    if asks_verbose(overrides):
        os.environ[VERBOSE] = "1"  # the cells' processes inherit it
    quiet_environment()  # before any library is imported here or in a cell's process
    flags = {override for override in overrides if override.startswith("-")}
    try:
        check_group_overrides(overrides)
        if not flags - {"-m", "--multirun"}:  # --cfg, --help, --info: Hydra shows what it would run, and runs nothing
            check_command_line([o for o in overrides if o not in flags], compose=compose, multirun=bool(flags))
        composed = fair_comparison(overrides)
        if composed is not None:
            from bench.run.fair import run_fair

            return run_fair(overrides, composed)
    except ConfigError as error:
        if _debug():
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    from bench.run.sweep import LAST_SUMMARY

    LAST_SUMMARY.clear()  # an earlier sweep in this process (a notebook) must not decide this call's exit code
    register_config_defaults()
    sys.argv = ["bench", *overrides]
    hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(_run_task)()
    if LAST_SUMMARY and LAST_SUMMARY["failed"] == LAST_SUMMARY["cells"]:
        print(f"error: all {LAST_SUMMARY['cells']} cells of the sweep failed", file=sys.stderr)
        return 1
    return 0


def ui_command(args: list[str]) -> int:
    """`bench ui [--uri URI] [--experiment NAME] [--port N] [--host H] [--no-browser]`: the MLflow UI on the store,
    on localhost by default, opened on the experiment's runs (bench.tracking.ui_server)."""
    import argparse

    parser = argparse.ArgumentParser(prog="bench ui", description=ui_command.__doc__)
    parser.add_argument("--uri", default=None, help="tracking store (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    parser.add_argument("--experiment", default="bench", help="the experiment whose runs open (default: bench)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind; only this machine by default")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--no-browser", dest="browser", action="store_false",
                        help="print the page only; by default it opens in a browser where there is one")
    options = parser.parse_args(args)
    from bench.config import ConfigError
    from bench.tracking.store import resolve_uri
    from bench.tracking.ui_server import serve

    try:
        return serve(uri=resolve_uri(options.uri), experiment=options.experiment, host=options.host,
                     port=options.port, browser=options.browser)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """`bench <command>`."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        from bench.techniques import NAMES

        print(USAGE.format(methods=", ".join(NAMES)))
        return 0
    command, rest = args[0], args[1:]
    commands = {"run": run_command, "report": _report, "plan": _plan, "ui": ui_command}
    if command not in commands:
        print(f"error: unknown command {command!r}; valid commands: {', '.join(commands)}", file=sys.stderr)
        return 2
    # SIGTERM (a scheduler, `kill`) unwinds like Ctrl-C, so the run is closed KILLED and cleaned up.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return commands[command](rest)
    except KeyboardInterrupt as interrupt:
        if "bench.run.sweep" in sys.modules:
            sys.modules["bench.run.sweep"].interrupt_active_sweep()
        print(f"interrupted ({str(interrupt) or 'SIGINT'}): the run is recorded as KILLED", file=sys.stderr)
        return 130


def _report(args: list[str]) -> int:
    from bench.report.cli import report_command

    return report_command(args)


def _plan(args: list[str]) -> int:
    from bench.plan.cli import Composer, plan_command

    # handed in: bench.plan.cli composes as `bench run` does without importing this module back
    return plan_command(args, compose=Composer(check=check_group_overrides, compose=compose))


if __name__ == "__main__":
    sys.exit(main())
