"""`bench report [--experiment NAME] [--sweep ID] [--out DIR] [--tracking-uri URI] [--budget SIZES]
[--price-per-hour USD]`: argparse → build_report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    """The command's options (the help text is the documentation)."""
    p = argparse.ArgumentParser(
        prog="bench report",
        description="Write a self-contained HTML comparison of runs recorded in MLflow (index.html), with "
                    "results.csv (one row per run) and summary.md (the headline as a Markdown table).")
    p.add_argument("--experiment", metavar="NAME", help="MLflow experiment (default: bench, unless --sweep is given)")
    p.add_argument("--sweep", metavar="ID", dest="sweep_id",
                   help="only the runs of sweep ID (its cells, across experiments unless --experiment is given)")
    p.add_argument("--out", metavar="DIR", type=Path, help="output folder (default: reports/<sweep or experiment>/)")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--budget", metavar="SIZES",
                   help="memory budgets to recommend a configuration for, comma-separated sizes or cards, e.g. "
                        "24GiB,80GiB or rtx4090,h100 (default: every card `bench plan --gpu` knows)")
    p.add_argument("--price-per-hour", metavar="USD", type=float,
                   help="what an hour of the training device costs, in $ (> 0): the recommendation adds $ per 1,000 "
                        "steps (default: no price)")
    return p


def _options(args: argparse.Namespace) -> tuple[list, float | None]:
    """The budgets and the price, checked: a bad one raises SizeError with one line naming it and what is valid."""
    import math

    from bench.core.cards import SizeError
    from bench.report.recommend import budgets

    price = args.price_per_hour
    if price is not None and not (math.isfinite(price) and price > 0):
        raise SizeError(f"--price-per-hour={price!r} is not valid; give a positive number of dollars, e.g. 2.5")
    return budgets(args.budget), price


def report_command(argv: list[str]) -> int:
    """Parse `argv`, write the report, print where it is; exit code 2 with one line when runs are missing."""
    from bench.core.cards import SizeError
    from bench.core.errors import ConfigError
    from bench.core.paths import check_writable_folder
    from bench.report.build import build_report, default_folder
    from bench.report.load import StoreError, resolve_uri

    args = parser().parse_args(argv)
    out = args.out or default_folder(args.experiment, args.sweep_id)
    try:
        check_writable_folder(out, key="--out")  # before reading any run: a bad folder costs nothing
        budgets, price = _options(args)
    except (ConfigError, SizeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        built = build_report(uri=resolve_uri(args.tracking_uri), experiment=args.experiment,
                             sweep_id=args.sweep_id, out=out, budgets=budgets, price_per_hour=price)
    except StoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report: {built.folder.resolve() / 'index.html'} ({built.runs} runs, {built.finished} finished, "
          f"{built.configurations} configurations, {built.seconds:.1f} s); also results.csv and summary.md")
    return 0
