"""Every shipped config choice composes to the config it composed to when its hashes were frozen
(`shipped_configs.json`): the same config hash, so a sweep still skips the cells it already finished, and the same
values, the tracker's, the monitor's and deploy's included, which the config hash leaves out.

A config file may lose a line that restates a default (tests/unit/test_defaults.py) without changing either.
`python tests/unit/test_shipped_configs.py` freezes a choice that is not in the file yet; `--refreeze` freezes all
of them again, for a change to the config that is meant.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.cli import conf_dir, group_choices, register_config_defaults
from bench.config import RunConfig, config_hash, field_defaults, flatten
from bench.config.fair import FairConfig
from bench.config.schema import SECTIONS

FROZEN = Path(__file__).with_name("shipped_configs.json")
CPU = {"device": "cpu", "weights_dtype": "bf16", "compute_dtype": "bf16"}  # the hash's hardware, fixed
# What a choice needs besides itself to build a typed config: the folder or hub id it leaves to the user.
NEEDS = {"model=local": ["model.path=/models/my-bert"], "model=causal-hub": ["model.hub_id=meta-llama/Llama-3.2-1B"],
         "data=local": ["data.path=reviews.csv"], "data=sft-local": ["data.path=pairs.jsonl"]}


def choices(compose: Any) -> list[tuple[str, ...]]:
    """The default config, each choice of each group, and each cell of an experiment's grid of methods."""
    combos: list[tuple[str, ...]] = [()]
    for group in ("method", "model", "data", "experiment", "sweep"):
        combos += [(f"{group}={name}",) for name in group_choices(group)]
    for name in group_choices("experiment"):
        params = compose([f"experiment={name}"], hydra=True).hydra.sweeper.params or {}
        combos += [(f"experiment={name}", f"method={method}") for method in str(params.get("method", "")).split(",")
                   if method]
    return combos


def frozen(combo: tuple[str, ...], compose: Any) -> dict[str, str]:
    """The two hashes of one choice: the config hash a run records, and a hash of every value of the composed
    config that differs from its dataclass default (so a field added with a default changes neither)."""
    overrides = [*combo, *(need for choice in combo for need in NEEDS.get(choice, []))]
    from omegaconf import OmegaConf

    config = compose(overrides, hydra=True)
    raw = OmegaConf.to_container(config, resolve=False)
    hydra = raw.pop("hydra")
    values = {key: value for key, value in flatten(raw).items() if _default(key) != (value,)}
    values |= flatten({"hydra": {"mode": hydra["mode"], "sweep": hydra["sweeper"]["params"] or {},
                                 "launcher": hydra["launcher"]["_target_"]}})
    resolved = {**raw, "output_dir": "outputs"}
    resolved = OmegaConf.to_container(OmegaConf.create(resolved), resolve=True)
    resolved.pop("fair", None)  # bench.run.fair takes it off before the run's config is built
    return {"hash": RunConfig.from_dict(resolved).hash(CPU), "values": config_hash(values)}


def _default(key: str) -> tuple[Any] | None:
    """(the dataclass default,) of a flat key, or None where it has none."""
    section, _, name = key.partition(".") if "." in key else ("", "", key)
    kinds = {**SECTIONS, "fair": FairConfig}
    kind = kinds.get(section)
    if kind is None or "." in name:
        return None
    defaults = field_defaults(kind)
    return (defaults[name],) if name in defaults else None


class _composer:
    """One Hydra context for many compositions, each composed once (a composition takes a tenth of a second)."""

    def __enter__(self) -> Any:
        from hydra import compose, initialize_config_dir

        register_config_defaults()
        self._context = initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3")
        self._context.__enter__()
        composed: dict[tuple, Any] = {}

        def cached(overrides: list[str], hydra: bool = False) -> Any:
            key = (*overrides, hydra)
            if key not in composed:
                composed[key] = compose("config", overrides=overrides, return_hydra_config=hydra)
            return composed[key]

        return cached

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(*exc)


def _key(combo: tuple[str, ...]) -> str:
    return " ".join(combo) or "(defaults)"


@pytest.fixture(scope="module")
def current() -> Iterator[dict[str, dict[str, str]]]:
    with _composer() as compose:
        yield {_key(combo): frozen(combo, compose) for combo in choices(compose)}


def test_every_shipped_choice_is_frozen(current: dict[str, dict[str, str]]) -> None:
    stored = json.loads(FROZEN.read_text())
    missing = sorted(set(current) - set(stored))
    assert not missing, f"not frozen yet: {missing}; freeze them with `python tests/unit/test_shipped_configs.py`"


def test_every_shipped_choice_composes_as_frozen(current: dict[str, dict[str, str]]) -> None:
    stored = json.loads(FROZEN.read_text())
    changed = {key: (stored[key], now) for key, now in current.items() if key in stored and stored[key] != now}
    assert not changed, (f"the composed config changed (frozen, now): {changed}; `bench run <choice> --cfg job` shows "
                         "it (git stash to see it before)")
    gone = sorted(set(stored) - set(current))
    assert not gone, f"frozen choices that no longer exist: {gone}; remove them from {FROZEN.name}"


def main(argv: list[str]) -> None:
    """Freeze the choices not in the file yet (all of them with --refreeze)."""
    stored = {} if "--refreeze" in argv or not FROZEN.is_file() else json.loads(FROZEN.read_text())
    with _composer() as compose:
        for combo in choices(compose):
            stored.setdefault(_key(combo), frozen(combo, compose))
    FROZEN.write_text(json.dumps(dict(sorted(stored.items())), indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

