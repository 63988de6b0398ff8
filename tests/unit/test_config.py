"""The typed config rejects bad values with a message that names them, and hashes what matters."""

from __future__ import annotations

import dataclasses
import re

import pytest
from support import RAW_RUN_CONFIG

from bench.config import ConfigError, MethodConfig, RunConfig

RAW = {**RAW_RUN_CONFIG, "seed": 3}


CPU = {"device": "cpu", "weights_dtype": "bf16", "compute_dtype": "bf16"}


def test_builds_typed_config_from_plain_dict() -> None:
    config = RunConfig.from_dict(RAW)
    assert config.method.r == 8 and config.trainer.lr == 1e-3 and config.seed == 3
    assert config.flat()["model.architecture.model_type"] == "bert"


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("r", -1, "method.r=-1"), ("alpha", 0, "method.alpha=0"), ("dropout", 1.0, "method.dropout=1.0"),
    ("name", "adapter", "full, lora, qlora"), ("bias", "some", "none, all, lora_only"),
    ("quant_type", "int3", "nf4, fp4"),
])
def test_method_rejects_bad_values(field: str, value: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as error:
        MethodConfig(**{"name": "lora", field: value})
    assert needle in str(error.value)


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ConfigError, match=r"method\.rank"):
        RunConfig.from_dict({**RAW, "method": {"name": "lora", "rank": 4}})


def test_hash_ignores_where_results_go_but_not_what_changes_them() -> None:
    base = RunConfig.from_dict(RAW)
    moved = dataclasses.replace(base, output_dir="elsewhere",
                                tracker=dataclasses.replace(base.tracker, experiment="other"))
    assert moved.hash(CPU) == base.hash(CPU)
    assert dataclasses.replace(base, seed=4).hash(CPU) != base.hash(CPU)
    assert dataclasses.replace(base, method=dataclasses.replace(base.method, r=16)).hash(CPU) != base.hash(CPU)


def test_hash_keeps_devices_and_dtypes_apart() -> None:
    """A GPU sweep into a store of CPU runs must not skip its cells as finished; nor fp32 runs bf16 ones."""
    base = RunConfig.from_dict(RAW)
    gpu = {"device": "cuda", "weights_dtype": "bf16", "compute_dtype": "bf16", "accelerator": "NVIDIA H200"}
    fp32 = {**CPU, "weights_dtype": "fp32", "compute_dtype": "fp32"}
    assert len({base.hash(CPU), base.hash(gpu), base.hash(fp32)}) == 3


def test_full_fine_tuning_ignores_lora_knobs_in_hash_and_params() -> None:
    full = RunConfig.from_dict({**RAW, "method": {"name": "full", "r": 4}})
    other_rank = RunConfig.from_dict({**RAW, "method": {"name": "full", "r": 64, "target_modules": "mlp"}})
    assert full.hash(CPU) == other_rank.hash(CPU)
    assert "method.r" not in full.flat() and "method.lr" in full.flat()
    lora = RunConfig.from_dict({**RAW, "method": {"name": "lora", "compute_dtype": "fp32"}})
    assert lora.hash(CPU) == RunConfig.from_dict(RAW).hash(CPU)  # quantization knobs do not touch LoRA
    assert "tracker.experiment" in full.flat() and "force" not in full.flat()


def _numeric(annotation: object) -> bool:
    """An int or float field, optional or not (a bool is not a number here; a list of ints is)."""
    import typing

    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)] or [annotation]
    if typing.get_origin(annotation) is list:
        return _numeric(args[0])
    return any(arg in (int, float) for arg in args)


def test_every_number_in_the_config_has_its_range_in_the_schema() -> None:
    import typing

    from bench.config.bounds import BOUNDS
    from bench.config.schema import SECTIONS, bound

    numeric = {f"{section}.{item.name}" if section else item.name
               for section, kind in SECTIONS.items() for item in dataclasses.fields(kind)
               if _numeric(typing.get_type_hints(kind)[item.name])}
    assert sorted(numeric - set(BOUNDS)) == []  # each number's valid range is written down
    assert sorted(set(BOUNDS) - numeric) == []  # and no range names a key that is gone
    assert bound("trainer.weight_decay").words() == ">= 0" and bound("data.text_column") is None


@pytest.mark.parametrize(("section", "key", "value", "words"), [
    ("", "seed", -1, "in [0, 4294967295]"),
    ("data", "split_seed", 2**32, "in [0, 4294967295]"),
    ("trainer", "weight_decay", -0.1, ">= 0"),
    ("trainer", "warmup_ratio", 1.0, "in [0, 1)"),
    ("trainer", "lr", float("nan"), "> 0"),
])
def test_a_number_outside_its_range_is_refused_with_the_range(section: str, key: str, value: float,
                                                              words: str) -> None:
    raw = {**RAW, section: {**RAW[section], key: value}} if section else {**RAW, key: value}
    name = f"{section}.{key}" if section else key
    with pytest.raises(ConfigError, match=rf"^{name}=.* is not valid; it must be {re.escape(words)}$"):
        RunConfig.from_dict(raw)
