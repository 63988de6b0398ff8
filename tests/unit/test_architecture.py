"""The package's import graph, read from the source: no import cycles, and no module reaching into another's
private names. Imports inside functions count too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import bench

PACKAGE = Path(bench.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, source: str, *, is_package: bool, modules: dict[str, Path]) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) for every `bench` import in the module's source."""
    package = name if is_package else name.rpartition(".")[0]
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name in modules]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            if base.split(".")[0] != "bench":
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule, None) if submodule in modules else (base, alias.name))
    return found


def _graph(extra: dict[str, str] | None = None) -> tuple[dict[str, set[str]], list[str]]:
    """Edges between bench's modules, and the private names imported across modules; `extra`: made-up modules
    (name -> source) added to the package, for the self-check."""
    modules = _modules()
    sources = {name: path.read_text(encoding="utf-8") for name, path in modules.items()} | (extra or {})
    modules |= {name: PACKAGE / "made_up.py" for name in extra or {}}
    edges: dict[str, set[str]] = {name: set() for name in modules}
    private = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for target, imported in _imports(name, sources[name], is_package=is_package, modules=modules):
            edges[name].add(target)
            if imported is not None and imported.startswith("_") and target != name:
                private.append(f"{name} imports {target}.{imported}")
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycles() -> None:
    assert _cycles(_graph()[0]) == []


def test_no_module_imports_another_modules_private_names() -> None:
    assert _graph()[1] == []


def test_the_checker_sees_a_cycle_and_a_private_import() -> None:
    """The two tests above would catch what they look for: a made-up graph with both."""
    made_up = {"bench.made_up": "def f():\n    from bench.data import _clean\n    from . import runner\n",
               "bench.made_up_too": "from bench.made_up import f\nimport bench.made_up\n"}
    edges, private = _graph({**made_up, "bench.made_up": made_up["bench.made_up"] + "import bench.made_up_too\n"})
    assert private == ["bench.made_up imports bench.data._clean"]
    assert edges["bench.made_up"] == {"bench.data", "bench.runner", "bench.made_up_too"}
    assert ["bench.made_up", "bench.made_up_too"] in _cycles(edges)
