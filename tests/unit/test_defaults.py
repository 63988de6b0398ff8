"""Each default is written once, in the config dataclasses (bench/config/sections.py and fair.py), which Hydra's
schema is derived from: no file in conf/ restates one, the files that hold the config's base values set none that
disagrees with one, no file sets a key the schema does not have, and the README's key tables state the dataclasses'
defaults.

The rule, per value a config file sets for a key of the schema (an interpolation such as `${method.lr}` is
configuration the dataclass cannot hold, and passes):
- a base file (conf/config.yaml, and the file it picks for a group of settings rather than choices, one whose
  section has no `name`: conf/trainer/default.yaml, conf/tracker/mlflow.yaml, ...) sets no key that has a default:
  the same value is a default written twice, another one a default that is not the one the dataclass says;
- any other file (a model, data or method choice, an experiment, a sweep) may choose any value, but not the
  default itself (`method.r: 8`), unless a file it is layered over sets that key otherwise (an experiment putting
  `data.max_length` back to the default over a data file's choice): Hydra layers conf/config.yaml's defaults list in
  order, and the files of one group are alternatives, never layers of each other.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.cli import conf_dir
from bench.config import field_defaults
from bench.config.schema import SECTIONS

README = Path(__file__).resolve().parents[2] / "README.md"


@dataclass(frozen=True)
class Setting:
    """One value a config file sets: `key` is dotted from the config's root (`trainer.epochs`, `seed`)."""

    file: str  # relative to conf/, e.g. `trainer/default.yaml`
    group: str  # the file's group; "" for config.yaml
    key: str
    value: Any


def settings(root: Path) -> tuple[list[Setting], list[str]]:
    """Every value the config files under `root` set for the run's config (Hydra's own `hydra:` node, its launcher
    configs and the `defaults:` lists aside), and a problem for each key the schema does not have."""
    from omegaconf import OmegaConf

    found: list[Setting] = []
    problems: list[str] = []
    for path in sorted(root.rglob("*.yaml")):
        name = path.relative_to(root).as_posix()
        group = "" if path.parent == root else path.parent.relative_to(root).as_posix()
        if group.split("/")[0] == "hydra":
            continue
        package = re.search(r"^#\s*@package\s+(\S+)", path.read_text(encoding="utf-8"), re.MULTILINE)
        placed = "" if not group or (package and package.group(1) == "_global_") else group
        if package and package.group(1) != "_global_":
            problems.append(f"{name}: `# @package {package.group(1)}` is not read by this test; teach it")
            continue
        values = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        values = {key: value for key, value in values.items() if key not in ("defaults", "hydra")}
        if placed:
            values = {placed: values}
        _walk(values, "", name, group, found, problems)
    return found, problems


def _walk(values: dict, section: str, file: str, group: str, found: list[Setting], problems: list[str]) -> None:
    kind = SECTIONS.get(section)
    if kind is None:
        problems.append(f"{file}: `{section}` is not a section of the schema; sections: "
                        f"{', '.join(sorted(s for s in SECTIONS if s))}")
        return
    fields = {item.name: item for item in dataclasses.fields(kind)}
    for key, value in values.items():
        dotted = f"{section}.{key}" if section else key
        if key in SECTIONS and not section and isinstance(value, dict):
            _walk(value, key, file, group, found, problems)
        elif key not in fields:
            problems.append(f"{file}: {dotted} is not a key of the schema; {section or 'the top level'} has: "
                            f"{', '.join(sorted(fields))}")
        else:  # a mapping field (model.architecture, tracker.tags, fair.grid) is one value
            found.append(Setting(file, group, dotted, value))


def layers(root: Path) -> tuple[dict[str, int], set[str]]:
    """From conf/config.yaml's defaults list: each group's place in the order Hydra layers them (config.yaml's own
    keys at `_self_`), and the base files: config.yaml and its pick for each group whose section names no choice."""
    from omegaconf import OmegaConf

    order: dict[str, int] = {}
    base = {"config.yaml"}
    for place, entry in enumerate(OmegaConf.to_container(OmegaConf.load(root / "config.yaml"))["defaults"]):
        if entry == "_self_":
            order[""] = place
        elif isinstance(entry, dict):
            (group, choice), = entry.items()
            group = group.removeprefix("optional ").strip()
            order[group] = place
            kind = SECTIONS.get(group)
            if choice and kind and "name" not in {item.name for item in dataclasses.fields(kind)}:
                base.add(f"{group}/{choice}.yaml")
    return order, base


def problems(root: Path) -> list[str]:
    """Every default written twice or disagreeing, and every unknown key, in the config files under `root`."""
    found, problems = settings(root)
    order, base = layers(root)
    for item in found:
        default = _default(item.key)
        if default is None or _interpolation(item.value):
            continue
        (value,) = default
        owner = f"{SECTIONS[item.key.rpartition('.')[0]].__name__}.{item.key.rpartition('.')[2]}"
        if item.file in base:
            said = "restates" if _same(item.value, value) else "disagrees with"
            problems.append(f"{item.file}: {item.key}: {item.value!r} {said} the default {value!r} of {owner}; "
                            "leave the default to the dataclass")
        elif _same(item.value, value) and not _overrides_another(item, found, order):
            problems.append(f"{item.file}: {item.key}: {item.value!r} restates the default of {owner}; leave "
                            "the line out")
    return problems


def _overrides_another(item: Setting, found: list[Setting], order: dict[str, int]) -> bool:
    """Whether a file that `item`'s file is layered over sets the key to something else."""
    own = order.get(item.group.split("/")[0], len(order))
    return any(other.key == item.key and other.group != item.group and not _same(other.value, item.value)
               and order.get(other.group.split("/")[0], len(order)) < own for other in found)


def _default(key: str) -> tuple[Any] | None:
    """(the dataclass default,) of a dotted key, or None for a key without one."""
    section, _, name = key.rpartition(".")
    defaults = field_defaults(SECTIONS[section])
    return (defaults[name],) if name in defaults else None


def _interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _same(one: Any, other: Any) -> bool:
    """Equal as config values: 1 and 1.0 are, true and 1 are not."""
    if isinstance(one, bool) or isinstance(other, bool):
        return type(one) is type(other) and one == other
    if isinstance(one, list) and isinstance(other, list):
        return len(one) == len(other) and all(_same(a, b) for a, b in zip(one, other, strict=True))
    if isinstance(one, dict) and isinstance(other, dict):
        return one.keys() == other.keys() and all(_same(one[key], other[key]) for key in one)
    numbers = (int, float)
    if isinstance(one, numbers) and isinstance(other, numbers):
        return one == other
    return type(one) is type(other) and one == other


def test_no_config_file_restates_a_default_or_sets_an_unknown_key() -> None:
    found = problems(conf_dir())
    assert not found, "\n".join(found)


def test_the_walk_sees_every_group() -> None:
    """The check reads what it should: every group's files, and the base files of the settings groups."""
    found, _ = settings(conf_dir())
    groups = {item.group.split("/")[0] for item in found}
    assert {"", "model", "data", "method", "trainer", "experiment"} <= groups, groups
    _, base = layers(conf_dir())
    assert {"config.yaml", "trainer/default.yaml", "tracker/mlflow.yaml", "monitor/default.yaml",
            "deploy/default.yaml"} <= base, base


def test_a_duplicated_a_disagreeing_and_an_unknown_key_are_caught(tmp_path: Path) -> None:
    files = {
        "config.yaml": "defaults:\n  - base_config\n  - _self_\n  - data: tweets\n  - model: tiny\n  - method: lora\n"
                       "  - trainer: default\n  - optional experiment: null\nseed: 42\noutput_dir: ${hydra:x}\n",
        "trainer/default.yaml": "lr: ${method.lr}\nepochs: 2\nbatch_size: 32\n",
        "method/lora.yaml": "defaults:\n  - _base\n  - _self_\nname: lora\nr: 8\nalpha: 32\n",
        "model/tiny.yaml": "# @package _global_\ntask: causal_lm\nmodel:\n  name: tiny\n  source: tiny\n"
                           "  sourse: hub\n",
        "data/tweets.yaml": "name: tweets\nsource: package\nmax_length: 64\nsplit_seed: 1234\n",
        "experiment/x.yaml": "# @package _global_\ndata:\n  max_length: 128\n  max_train_samples: null\n"
                             "trainer:\n  epochs: 2\nmonitor:\n  interval: 1\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = problems(tmp_path)
    caught = sorted(re.match(r"(\S+): (\S+?):? ", line).group(1, 2) for line in found)
    assert caught == [("config.yaml", "seed"),  # a base file restating the default 42
                      ("data/tweets.yaml", "data.split_seed"),  # a choice restating the default 1234
                      ("experiment/x.yaml", "data.max_train_samples"),  # null, which no data file sets otherwise
                      ("experiment/x.yaml", "monitor.interval"),  # not a key: monitor.interval_s
                      ("experiment/x.yaml", "trainer.epochs"),  # 2 over trainer/default.yaml's own 2
                      ("method/lora.yaml", "method.r"),  # a choice restating the default 8
                      ("model/tiny.yaml", "model.sourse"),  # not a key
                      ("trainer/default.yaml", "trainer.batch_size"),  # a base file disagreeing with the default 16
                      ("trainer/default.yaml", "trainer.epochs")], found  # a base file restating the default 2
    assert any("disagrees with the default 16" in line for line in found)
    # passed: trainer.lr and output_dir (interpolations), method.alpha: 32 and data.max_length: 64 (choices),
    # the experiment's data.max_length: 128 (the default put back over data/tweets.yaml's 64)


# The README's tables of keys (`| key | meaning |`) and of groups (`| group | choices |`) state defaults as
# "(default `true`)", "(default 1)", "(defaults 0.2 and 0.2)", "defaults: a, b, c" (one per key of the row, in
# order), or "`adamw` (default...)"; "(default X, else Y)" states the first key's; "no step cap" and
# `$MLFLOW_TRACKING_URI` mean null; "the technique's usual rate (full 5e-5, LoRA/QLoRA 2e-3)" names each method's.
_SINGLE = re.compile(r"\(default\s+(`[^`]+`|[^\s,;)]+)")
_PLURAL = re.compile(r"\(defaults\s+([^)]+)\)|defaults:\s+(.+)$")
_MARKED = re.compile(r"`([^`]+)`\s+\(default\b")


def readme_defaults(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(key or `group=`, stated default) for every default the README's key and group tables state, and each row
    that mentions a default in a way none of the patterns reads."""
    stated: list[tuple[str, str]] = []
    unread: list[str] = []
    header = None
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            header = None
            continue
        if header is None:
            header = cells
            continue
        if header not in (["key", "meaning"], ["group", "choices"]) or set(cells[0]) <= set("-: "):
            continue
        keys = re.findall(r"`([^`]+)`", cells[0])
        if header[0] == "group":
            marked = _MARKED.search(cells[1])
            stated += [(f"{keys[0]}=", marked.group(1))] if marked else []
            continue
        found = _row_defaults(keys, cells[1])
        stated += found
        if not found and "default" in cells[1]:
            unread.append(line)
    return stated, unread


def _row_defaults(keys: list[str], meaning: str) -> list[tuple[str, str]]:
    plural = _PLURAL.search(meaning)
    if plural:
        items = _split(plural.group(1) or plural.group(2))
        return list(zip(keys, items, strict=True)) if len(items) == len(keys) else []
    single = _SINGLE.search(meaning) or _MARKED.search(meaning)
    return [(keys[0], single.group(1))] if single else []


def _split(items: str) -> list[str]:
    """`a (b, c), d and e` -> [`a (b, c)`, `d`, `e`]: commas and "and" outside parentheses."""
    parts, depth, current = [], 0, ""
    for word in re.split(r"(\(|\)|,\s*|\s+and\s+)", items):
        depth += {"(": 1, ")": -1}.get(word, 0)
        if depth == 0 and (word.startswith(",") or word.strip() == "and"):
            parts.append(current.strip())
            current = ""
        else:
            current += word
    return [*parts, current.strip()] if current.strip() else parts


def _stated_value(text: str) -> tuple[Any] | dict[str, Any] | None:
    """The value a README phrase states: (value,), {method: value} for per-method rates, or None if unreadable."""
    from omegaconf import OmegaConf

    per_method = re.search(r"\(([^)]*)\)", text)
    if per_method and not text.startswith("`"):
        pairs = [re.fullmatch(r"([\w/+-]+)\s+(\S+)", part.strip()) for part in per_method.group(1).split(",")]
        if pairs and all(pairs):
            rates = {name.lower(): OmegaConf.create(f"v: {pair.group(2)}").v
                     for pair in pairs for name in pair.group(1).split("/")}
            return rates
    text = text.strip("`")
    if text.startswith("no ") or text.startswith("$"):  # "no step cap"; an environment variable read where null
        return (None,)
    number = re.match(r"(-?\d[\d.e+-]*)(\s|$)", text)
    if number:
        return (OmegaConf.create(f"v: {number.group(1)}").v,)
    if re.fullmatch(r"[\w.-]+", text):
        return (OmegaConf.create(f"v: {text}").v,)
    return None


def _method_lr(name: str) -> float:
    """The learning rate a method choice composes to: its file's, else MethodConfig's default."""
    from omegaconf import OmegaConf

    return OmegaConf.load(conf_dir() / "method" / f"{name}.yaml").get("lr", field_defaults(SECTIONS["method"])["lr"])


def _group_default(group: str) -> str | None:
    from omegaconf import OmegaConf

    for entry in OmegaConf.to_container(OmegaConf.load(conf_dir() / "config.yaml"))["defaults"]:
        if isinstance(entry, dict) and group in entry:
            return entry[group]
    return None


def test_the_readme_states_the_dataclasses_defaults() -> None:
    stated, unread = readme_defaults(README.read_text(encoding="utf-8"))
    assert not unread, f"README rows that mention a default no pattern reads (see readme_defaults): {unread}"
    assert len(stated) >= 10, stated  # the tables state a dozen; fewer means the parsing broke
    wrong = []
    for key, text in stated:
        if key.endswith("="):
            if _group_default(key[:-1]) != text:
                wrong.append(f"{key}{text}: conf/config.yaml picks {key}{_group_default(key[:-1])}")
            continue
        value = _stated_value(text)
        if value is None:
            wrong.append(f"{key}: cannot read the default {text!r}")
        elif isinstance(value, dict):
            actual = {name: _method_lr(name) for name in value}
            if any(not _same(actual[name], value[name]) for name in value):
                wrong.append(f"{key}: the README says {value}, the method files say {actual}")
        elif _default(key) is None or not _same(_default(key)[0], value[0]):
            wrong.append(f"{key}: the README says {value[0]!r}, the dataclass {(_default(key) or ('nothing',))[0]!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(("row", "expected"), [
    ("| `a.b`, `a.c` | shares (defaults 0.2 and 0.2) where |", [("a.b", "0.2"), ("a.c", "0.2")]),
    ("| `t.lr`, `t.e`, `t.m` | defaults: the rate (full 5e-5, LoRA 2e-3), 2 epochs, no cap |",
     [("t.lr", "the rate (full 5e-5, LoRA 2e-3)"), ("t.e", "2 epochs"), ("t.m", "no cap")]),
    ("| `t.u`, `t.x` | URI (default `$ENV`, else `sqlite:///x`) and name |", [("t.u", "`$ENV`")]),
    ("| `t.o` | `adamw` (default: torch-optimi), `adamw_8bit` |", [("t.o", "adamw")]),
    ("| `t.g` | steps (default 1): the effective batch |", [("t.g", "1")]),
])
def test_the_readme_patterns_read_as_meant(row: str, expected: list[tuple[str, str]]) -> None:
    assert readme_defaults(f"| key | meaning |\n|---|---|\n{row}\n") == (expected, [])



def test_the_report_reads_the_trackers_default_experiment() -> None:
    """The report (which never imports the config) names the experiment runs go to by default."""
    from bench.report.load import DEFAULT_EXPERIMENT

    assert field_defaults(SECTIONS["tracker"])["experiment"] == DEFAULT_EXPERIMENT
