"""A technique is one module: outside `bench/techniques/` no code branches on a technique's name. Read from the
source, as `test_architecture` reads imports: a comparison (`==`, `!=`, `in`, `not in`, `is`, a `match` case) with
a string that is a registered technique's name, or a dict literal keyed by two or more of them (a table of
techniques kept outside their modules), fails the test. What differs between techniques is asked of
`bench.techniques.technique(name)` instead.

A name used as a plain value is not a branch: the deployment form `full` as an item of the forms' list or a key
of their table (with no second technique name beside it) is left alone."""

from __future__ import annotations

import ast
from pathlib import Path

import bench
from bench.techniques import NAMES

PACKAGE = Path(bench.__file__).resolve().parent
TECHNIQUES_PACKAGE = PACKAGE / "techniques"
COMPARISONS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)


def _names_a_technique(node: ast.AST, names: frozenset[str]) -> bool:
    """A string constant that is a technique's name, or a tuple, list or set literal holding one."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in names
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_names_a_technique(item, names) for item in node.elts)
    return False


def _pattern_names_a_technique(pattern: ast.pattern, names: frozenset[str]) -> bool:
    if isinstance(pattern, ast.MatchValue):
        return _names_a_technique(pattern.value, names)
    if isinstance(pattern, ast.MatchOr):
        return any(_pattern_names_a_technique(option, names) for option in pattern.patterns)
    if isinstance(pattern, ast.MatchAs) and pattern.pattern is not None:
        return _pattern_names_a_technique(pattern.pattern, names)
    return False


def branches(source: str, names: frozenset[str] = frozenset(NAMES)) -> list[tuple[int, str]]:
    """(line, kind) of every branch on a technique's name in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            pairs = zip(node.ops, operands[:-1], operands[1:], strict=True)
            if any(isinstance(op, COMPARISONS) and (_names_a_technique(left, names) or _names_a_technique(right, names))
                   for op, left, right in pairs):
                found.append((node.lineno, "comparison"))
        elif isinstance(node, ast.match_case) and _pattern_names_a_technique(node.pattern, names):
            found.append((node.pattern.lineno, "match case"))
        elif isinstance(node, ast.Dict):
            keyed = [key for key in node.keys if key is not None and _names_a_technique(key, names)]
            if len(keyed) >= 2:
                found.append((node.lineno, "table keyed by technique"))
    return sorted(found)


def package_branches() -> list[str]:
    """`path:line: kind: code` for every branch on a technique's name in bench outside bench/techniques."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if TECHNIQUES_PACKAGE in path.parents:
            continue
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for line, kind in branches(source):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {kind}: {lines[line - 1].strip()}")
    return found


def test_no_module_outside_the_techniques_branches_on_a_technique_name() -> None:
    assert package_branches() == []


MADE_UP = '''
if method.name == "lora":                      # 2: caught
    pass
if "qlora" != cfg.method.name:                 # 4: caught
    pass
start = name in ("pissa", "olora", "loftq")    # 6: caught
other = name not in ["dora"]                   # 7: caught
same = technique is "full"                     # 8: caught
match method.name:
    case "longlora":                           # 10: caught
        pass
    case "rslora" | "somewhere":               # 12: caught
        pass
    case other:
        pass
options = {"dora": {"use_dora": True}, "rslora": {}}.get(name)   # 16: caught
chained = 0 < rank == "qalora"                 # 17: caught
FORMS = ("base", "unmerged", "merged16", "merged4", "full")      # a form: a plain value
MARKERS = {"base": "circle", "full": "star"}   # one technique-like key among forms: not a table of techniques
measured = measure(bench, "full", model)       # an argument, not a comparison
plain = form == "merged16"                     # not a technique's name
mixed = {"full": 1, "lora_B": 2}               # one name only
'''


def test_the_rule_catches_each_kind_of_branch_and_nothing_else() -> None:
    assert branches(MADE_UP) == [(2, "comparison"), (4, "comparison"), (6, "comparison"), (7, "comparison"),
                                 (8, "comparison"), (10, "match case"), (12, "match case"),
                                 (16, "table keyed by technique"), (17, "comparison")]


def test_the_rule_knows_every_registered_technique() -> None:
    """A technique added as a module is covered at once: the names come from the registry."""
    for name in NAMES:
        assert branches(f"if x == {name!r}:\n    pass\n") == [(1, "comparison")]
