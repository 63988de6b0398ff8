"""The README's metric tables (`| metric | meaning |`) and bench.core.metrics agree: every name a table gives is
registered, with the unit its name spells, and every registered metric is in some table.

The tables write names in shorthand, and the parser reads it as a reader would:
- `eval/accuracy`, `eval/f1`: names, one after another;
- `deploy/<form>/accuracy`, `accuracy_delta`: a bare name continues the folder of the name before it;
- `data/near_duplicates_dropped` (+ `_train`, `_eval`): an ending is added to every name before it in the cell;
- `mem/at_peak/{params,buffers}_bytes`: one name per alternative; `<form>`, `{r}`: a placeholder, any value;
- `test/*`, `mem/baseline_*`: every registered name the pattern matches;
- `plan/peak_bytes` (...; tags `plan/notes`): what follows the word `tag(s)`, up to `;` or a bracket, is a tag.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from pathlib import Path

import pytest
from support import spelled_unit

from bench.core import metrics

README = Path(__file__).resolve().parents[2] / "README.md"
ANY = "{}"  # a placeholder, whatever the README or the registry calls it
_CODE_OR_TEXT = re.compile(r"`([^`]+)`|([^`]+)")
_PLACEHOLDER = re.compile(r"<\w+>|\{\w+\}")
_ALTERNATIVES = re.compile(r"\{([\w,]+,[\w,]+)\}")
_TAGS = re.compile(r"\btags?\b")
_UNIT_WORDS = {"bytes": "bytes", "bits": "bits", "seconds": "s"}  # a meaning that starts with a unit states it


def metric_rows(text: str) -> list[tuple[str, str]]:
    """(metric cell, meaning cell) of every row of every table headed `| metric | meaning |`."""
    rows, inside = [], False
    for line in text.splitlines():
        if line.startswith("| metric |"):
            inside = True
        elif not line.startswith("|"):
            inside = False
        elif inside and not line.startswith("|---"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows.append((cells[0], cells[1]))
    return rows


def names_in(cell: str) -> list[str]:
    """The metric names (or patterns) a metric cell gives, its shorthand read out."""
    names: list[str] = []
    written: list[str] = []  # the names an ending applies to
    folder, in_tags = "", False
    for code, text in _CODE_OR_TEXT.findall(cell):
        if text:
            tail = re.split(r"[;()]", text)
            in_tags = bool(_TAGS.search(tail[-1])) or (in_tags and len(tail) == 1)
            continue
        if in_tags:
            continue
        assert re.fullmatch(r"[\w/{}<>,*]+", code), f"not a metric name: `{code}` in {cell!r}"
        if code.startswith("_"):
            names += [name + code for name in written]
            continue
        if "/" not in code:
            assert folder, f"`{code}` continues no name before it in {cell!r}"
            code = folder + code
        folder = code.rpartition("/")[0] + "/"
        written.append(code)
        names.append(code)
    return [alternative for name in names for alternative in _alternatives(name)]


def _alternatives(name: str) -> list[str]:
    found = _ALTERNATIVES.search(name)
    if not found:
        return [_PLACEHOLDER.sub(ANY, name)]
    return [n for choice in found.group(1).split(",") for n in _alternatives(name.replace(found.group(0), choice, 1))]


def _forms() -> dict[str, set[tuple[str, str]]]:
    """Every way the README may write a registered name -> the (definition, name) pairs it stands for: each closed
    placeholder filled or written as a placeholder; an open one (a rank) written as a placeholder."""
    forms: dict[str, set[tuple[str, str]]] = {}
    for metric in metrics.registry().values():
        keys = list(dict.fromkeys(metric.placeholders))
        choices = [list(metrics.placeholder(key).values) or [ANY] for key in keys]
        for values in itertools.product(*choices):
            full = _fill(metric.name, dict(zip(keys, values, strict=True)))
            for hidden in itertools.product((False, True), repeat=len(keys)):
                written = _fill(metric.name, {k: ANY if h else v for k, v, h in zip(keys, values, hidden, strict=True)})
                forms.setdefault(written, set()).add((metric.name, full))
    return forms


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"{{{key}}}", value)
    return template


def _stands_for(name: str, forms: dict[str, set[tuple[str, str]]]) -> set[tuple[str, str]]:
    if "*" in name:
        return {pair for pairs in forms.values() for pair in pairs if fnmatch.fnmatchcase(pair[1], name)}
    return forms.get(name, set())


@pytest.fixture(scope="module")
def documented() -> list[tuple[str, str, set[tuple[str, str]]]]:
    """(README name, its row's meaning, the registered (definition, name) pairs it stands for)."""
    forms = _forms()
    rows = metric_rows(README.read_text(encoding="utf-8"))
    assert len(rows) > 40
    return [(name, meaning, _stands_for(name, forms)) for cell, meaning in rows for name in names_in(cell)]


def test_every_name_in_the_readme_tables_is_registered(documented) -> None:
    assert [name for name, _, pairs in documented if not pairs] == []


def test_every_registered_metric_is_in_a_readme_table(documented) -> None:
    told = {pair for _, _, pairs in documented for pair in pairs}
    assert sorted({definition for pair in set().union(*_forms().values()) - told for definition in pair[:1]}) == []


def test_a_unit_the_readme_states_is_the_registered_one(documented) -> None:
    """By the name's ending (`_bytes`, `_ms`, `tokens_per_s`, ...) and by a meaning that starts with its unit."""
    registry = metrics.registry()
    for name, meaning, pairs in documented:
        stated = {spelled_unit(name), _UNIT_WORDS.get(meaning.split(" ")[0])} - {None}
        for template, _ in pairs:
            assert stated <= {registry[template].unit}, (name, stated, template)


@pytest.mark.parametrize(("cell", "names"), [
    ("`eval/accuracy`, `eval/f1`", ["eval/accuracy", "eval/f1"]),
    ("`deploy/<form>/latency_p50_ms`, `rows_per_s` (each + `_low`, and `latency_n`)",
     ["deploy/{}/latency_p50_ms", "deploy/{}/rows_per_s", "deploy/{}/latency_p50_ms_low", "deploy/{}/rows_per_s_low",
      "deploy/{}/latency_n"]),
    ("`mem/at_peak/{params,grads}_bytes`", ["mem/at_peak/params_bytes", "mem/at_peak/grads_bytes"]),
    ("`plan/peak_bytes` (+ `plan/<category>_bytes`; tags `plan/peak_phase`, `plan/notes`), `plan/seconds`",
     ["plan/peak_bytes", "plan/{}_bytes", "plan/seconds"]),
    ("`dist/rank{r}/tokens`, `dist/max_*`", ["dist/rank{}/tokens", "dist/max_*"]),
])
def test_the_parser_reads_the_shorthand(cell: str, names: list[str]) -> None:
    assert names_in(cell) == names


def test_the_checks_would_see_a_stray_name_and_a_wrong_unit() -> None:
    forms = _forms()
    assert _stands_for("eval/acuracy", forms) == set() and _stands_for("deploy/{}/byte", forms) == set()
    assert _stands_for("test/*", forms) >= {("test/accuracy", "test/accuracy"), ("test/f1", "test/f1")}
    assert _stands_for("deploy/{}/bytes", forms) == {("deploy/{form}/bytes", f"deploy/{form}/bytes")
                                                    for form in metrics.placeholder("form").values}
    assert spelled_unit("eval/accuracy_ms") == "ms" != metrics.definition("eval/accuracy").unit
