"""`bench plan [options] [overrides...]`: will each technique fit a GPU, with what largest batch, and how long and
at what cost a token budget takes, before anything is rented or downloaded.

The configurations are the ones `bench run` would run: the same Hydra overrides, composed by `bench.cli.compose`.
A comma list on any override gives a row per value (`method=full,lora,qlora`,
`trainer.gradient_checkpointing=true,false`), as `bench run -m` would give a cell per value.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from bench.plan.cards import DEFAULT_HEADROOM, SizeError, card, parse_headroom, parse_size

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Composer:
    """`bench.cli`'s `check_group_overrides` and `compose`, handed in by `bench.cli` (which imports this module,
    so this module cannot import it back): how `bench run` turns overrides into a config."""

    check: Callable[[list[str]], None]
    compose: Callable[[list[str]], Any]


class PlanError(ValueError):
    """Bad input to `bench plan`: printed as one `error:` line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        raise PlanError(f"{message} (see `bench plan --help`)")


def parser() -> argparse.ArgumentParser:
    """The command's options; the rest of the command line is Hydra overrides, as for `bench run`."""
    from bench.plan.cards import CARDS

    p = _Parser(prog="bench plan", description="Will each technique fit a GPU, with what largest batch, and how long "
                "and at what cost does a token budget take, before anything is rented or downloaded. The rest of "
                "the command line is Hydra overrides, as `bench run` takes them; a comma list on any of them gives "
                "a row per value.",
                epilog="e.g. bench plan model=llama-3.1-8b method=full,lora,qlora --gpu rtx4090 data.max_length=512 "
                       "trainer.batch_size=1 --tokens 1e9 --price-per-hour 2.5")
    p.add_argument("--gpu", metavar="NAME", help=f"a card to plan for: {', '.join(CARDS)}")
    p.add_argument("--gpu-memory", metavar="SIZE", help="the device's memory, e.g. 24GiB, 80GB, 512MiB (overrides "
                   "the card's; on --device cpu the default is this machine's RAM)")
    p.add_argument("--headroom", default=DEFAULT_HEADROOM, metavar="SHARE",
                   help="memory kept free beyond the predicted process (tensors, the allocator's scratch and cache, "
                        "the CUDA context): a percentage or a size (default "
                        f"{DEFAULT_HEADROOM.replace('%', '%%')})")
    p.add_argument("--tokens", metavar="N", help="a token budget (non-padding tokens, e.g. 1e9): time and cost "
                   "from the throughput measured in the store")
    p.add_argument("--price-per-hour", metavar="USD", help="the device's price per hour, for the cost")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="what to plan for (default cuda)")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow store with measured throughput (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as `bench run` takes them")
    return p


@dataclass(frozen=True)
class Budget:
    """The memory a plan must fit: the device's memory less the headroom."""

    source: str  # rtx4090, --gpu-memory, this machine's RAM
    memory_bytes: int
    headroom_bytes: int
    headroom: str  # as given, e.g. 10%
    card: Any = None  # bench.plan.cards.Card when --gpu named one

    @property
    def bytes(self) -> int:
        return self.memory_bytes - self.headroom_bytes


def budget(args: argparse.Namespace) -> Budget | None:
    """The budget the options give (None: no memory given, so nothing to fit)."""
    named = card(args.gpu) if args.gpu else None
    if named and args.device == "cpu":
        raise PlanError(f"--gpu {args.gpu} names a CUDA card but --device cpu; drop --gpu, or give --gpu-memory")
    if args.gpu_memory:
        memory, source = parse_size(args.gpu_memory), f"--gpu-memory {args.gpu_memory}"
        source = f"{named.name} with {source}" if named else source
    elif named:
        memory, source = named.memory_bytes, f"{named.name} ({named.title})"
    elif args.device == "cpu":
        import psutil

        memory, source = psutil.virtual_memory().total, "this machine's RAM"
    else:
        parse_headroom(args.headroom, 2 ** 60)  # nothing to keep free from, but a bad value is still an error
        return None
    return Budget(source, memory, parse_headroom(args.headroom, memory), args.headroom.strip(), named)


def _positive(text: str | None, option: str, *, allow_zero: bool = False) -> float | None:
    """A number option (`1e9`, `2.5`), or None when absent."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        raise PlanError(f"{option}={text!r} is not valid; give a {'non-negative' if allow_zero else 'positive'} "
                        "number, e.g. 1e9 or 2.5")
    return value


def combinations(overrides: list[str]) -> list[tuple[list[str], dict[str, str]]]:
    """Each combination of the overrides' comma lists: (its overrides, {swept key: its value here})."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else None
        choices.append([(f"{key}={value}", key, value) for value in values] if values else
                       [(override.input_line, None, None)])
    return [([line for line, _, _ in combo], {key: value for _, key, value in combo if key is not None})
            for combo in itertools.product(*choices)]


def configs(overrides: list[str], compose: Composer) -> list[tuple[Any, dict[str, str]]]:
    """The typed config of each combination, with the values swept into it."""
    from omegaconf import OmegaConf

    from bench.config import RunConfig

    compose.check(overrides)
    # output_dir resolves through Hydra's runtime, which composing alone does not set; a plan writes nothing
    placeholder = [] if any(o.split("=", 1)[0].lstrip("+~") == "output_dir" for o in overrides) else ["output_dir=."]
    built = []
    for combo, swept in combinations(overrides):
        composed = compose.compose([*combo, *placeholder])
        built.append((RunConfig.from_dict(OmegaConf.to_container(composed, resolve=True)), swept))
    return built


def model_configs(cfgs: list[Any]) -> list[Any]:
    """Each config's transformers config, each distinct model read once (a hub id fetches config.json only)."""
    from bench.models.load import model_config, resolve_location
    from bench.plan.engine import head_labels

    # keys taken before any read: transformers may write into a config-only model's nested dicts (rope_scaling)
    keys = [repr((cfg.model, cfg.task, cfg.data.labels)) for cfg in cfgs]
    found: dict[str, Any] = {}
    for key, cfg in zip(keys, cfgs, strict=True):
        if key not in found:
            try:
                found[key] = model_config(cfg.model, resolve_location(cfg.model), head_labels(cfg))
            except (OSError, ValueError, KeyError) as error:
                from bench.config import ConfigError

                if isinstance(error, ConfigError):
                    raise
                where = cfg.model.path or cfg.model.hub_id or cfg.model.name
                raise PlanError(f"model={cfg.model.name}: cannot read the config of {where!r} "
                                f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    return [found[key] for key in keys]


def plan_rows(cfgs: list[tuple[Any, dict[str, str]]], *, device: torch.device, limit: Budget | None,
              terms: Callable[[Any], Any] | None = None) -> list[dict[str, Any]]:
    """Plan each configuration with the terms beyond its tensors (`terms`: config -> bench.plan.overhead.Overhead,
    from a store) and, with a budget, find the largest batch whose process fits it."""
    import functools
    import os

    from bench.config import ConfigError
    from bench.plan.engine import largest_batch, plan_memory
    from bench.plan.overhead import Overhead, process_bytes, with_fit

    rows = []
    for (cfg, swept), config in zip(cfgs, model_configs([cfg for cfg, _ in cfgs]), strict=True):
        row: dict[str, Any] = {"cfg": cfg, "swept": swept, "plan": None, "largest": None, "error": ""}
        try:
            overhead = terms(cfg) if terms is not None else Overhead(reason="no store read")
            row["plan"] = with_fit(plan_memory(cfg, device=device, config=config), overhead)
            if limit:
                process = functools.partial(process_bytes, overhead=overhead)  # the fit is the process's
                row["largest"] = largest_batch(cfg, device=device, config=config, budget_bytes=limit.bytes,
                                               figure=process)[0]
        except ConfigError:
            raise
        except Exception as error:  # noqa: BLE001 - a configuration the tracer cannot follow fails its row only
            if os.environ.get("BENCH_DEBUG") == "1":
                raise
            first = str(error).splitlines()[0] if str(error) else ""
            row["error"] = f"{type(error).__name__}: {first}".rstrip(": ")
        rows.append(row)
    return rows


def calibrate_rows(rows: list[dict[str, Any]], *, uri: str, device: str, limit: Budget | None) -> None:
    """Add each row's measured throughput (`bench.plan.calibrate`)."""
    from bench.plan.calibrate import calibrate, levers_of, load_store

    store = load_store(uri)
    for row in rows:
        cfg = row["cfg"]
        row["calibration"] = calibrate(store, model=cfg.model.name, technique=cfg.method.name,
                                       seq_len=cfg.data.max_length, levers=levers_of(cfg), device=device,
                                       card=limit.card if limit else None)


def _planned_device(name: str) -> Any:
    """What the engine plans for: a GPU to rent (bf16, fused attention) or this machine's CPU."""
    if name == "cuda":
        from bench.models.precision import PlannedDevice

        return PlannedDevice("cuda")
    import torch

    return torch.device("cpu")


@contextmanager
def quiet() -> Iterator[None]:
    """Libraries' notices while planning (bitsandbytes' missing CPU kernels, transformers' deprecations and
    use_cache remarks) are not about the plan: keep them out of its output, and restore the settings after."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    loggers = [logging.getLogger(name) for name in ("bitsandbytes", "accelerate", "peft")]
    levels, verbosity = [logger.level for logger in loggers], hf_logging.get_verbosity()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        hf_logging.set_verbosity_error()
        try:
            yield
        finally:
            hf_logging.set_verbosity(verbosity)
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def run_plan(args: argparse.Namespace, compose: Composer) -> tuple[str, int]:
    """Plan what `args` asks for: the text to print, and how many configurations could not be planned."""
    from bench.plan.render import render
    from bench.tracking.store import resolve_uri

    started = time.perf_counter()
    tokens = _positive(args.tokens, "--tokens")
    price = _positive(args.price_per_hour, "--price-per-hour", allow_zero=True)
    if price is not None and tokens is None:
        raise PlanError("--price-per-hour needs --tokens (a token budget to price)")
    from bench.plan.overhead import store_terms

    limit = budget(args)
    cfgs = configs(args.overrides, compose)
    uri = resolve_uri(args.tracking_uri)
    card = limit.card if limit is not None else None
    terms = store_terms(uri, device=args.device, gpu=card.matches if card else None, gpu_title=card.title if card
                        else "")
    with quiet():
        rows = plan_rows(cfgs, device=_planned_device(args.device), limit=limit, terms=terms)
    if tokens is not None:
        calibrate_rows(rows, uri=uri, device=args.device, limit=limit)
    text = render(rows, device=args.device, limit=limit, tokens=tokens, price=price, uri=uri,
                  seconds=time.perf_counter() - started)
    return text, sum(1 for row in rows if row["plan"] is None)


def _hydra_message(error: Exception) -> str:
    """A malformed override or an unknown key, as one line: Hydra's message and its cause's, without the
    indented detail lines."""
    texts = [str(error), str(error.__cause__ or "")]
    lines = [line.strip().rstrip(".") for text in texts for line in text.splitlines() if line and not line[0].isspace()]
    return "; ".join(lines) or type(error).__name__


def plan_command(argv: list[str], *, compose: Composer) -> int:
    """`bench plan`: print the plan (exit code 1 when a configuration could not be planned); bad input is one
    `error:` line and exit code 2."""
    from bench.config import ConfigError

    try:
        args = parser().parse_intermixed_args(argv)
        text, failed = run_plan(args, compose)
    except (PlanError, SizeError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if type(error).__module__.split(".")[0] not in ("hydra", "omegaconf"):
            raise
        print(f"error: {_hydra_message(error)}", file=sys.stderr)
        return 2
    print(text)
    return 1 if failed else 0

