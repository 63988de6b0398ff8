"""The package's import graph, read from the source: packages in layers whose imports point one way (down), no
import cycles between modules, and no module reaching into another's private names. Imports inside functions
count too: a lazy import is still a dependency. Imports under `if TYPE_CHECKING:` never run, so they are left out
(as import-linter's `exclude_type_checking_imports` does): a layer may name a higher layer's type in a hint."""

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
    for node in _runtime_nodes(ast.parse(source)):
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


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` but those under `if TYPE_CHECKING:` (imports for type hints only)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for statement in node.body for child in ast.walk(statement)}
    return [node for node in ast.walk(tree) if id(node) not in skipped]


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
    made_up = {"bench.made_up": "def f():\n    from bench.tasks.data import _clean\n    from .run import runner\n",
               "bench.made_up_too": "from bench.made_up import f\nimport bench.made_up\n"}
    edges, private = _graph({**made_up, "bench.made_up": made_up["bench.made_up"] + "import bench.made_up_too\n"})
    assert private == ["bench.made_up imports bench.tasks.data._clean"]
    assert edges["bench.made_up"] == {"bench.tasks.data", "bench.run.runner", "bench.made_up_too"}
    assert ["bench.made_up", "bench.made_up_too"] in _cycles(edges)


# The layers, top first: a package may import only packages below it. Packages in one layer are independent.
LAYERS = [
    ["cli"],  # entry points: Hydra stops here
    ["run"],  # orchestration: a run's skeleton, cells, sweeps, the fair comparison
    ["report", "plan"],  # reads MLflow only / predicts before a GPU is rented
    ["training"],  # the one loop and its levers
    ["distributed"],  # one run across processes
    ["tracking"],  # MLflow: the run, the store, what the UI shows
    ["measure"],  # monitor, profile, deploy: figures, never the report
    ["tasks"],  # data and how each task is scored
    ["models"],  # loading and building the model to train
    ["config"],  # typed configuration and its schema
    ["techniques"],  # one module per technique
    ["core"],  # errors, profiler ranges, package files, intervals
]


def _package(module: str) -> str:
    """`bench.run.runner` -> `run`; a top-level module is its own package (`bench.cli` -> `cli`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _layer_violations(edges: dict[str, set[str]]) -> list[str]:
    """Imports that point up (or sideways within a layer), as `importer -> imported (package -> package)`."""
    rank = {package: index for index, layer in enumerate(LAYERS) for package in layer}
    found = []
    for importer, targets in edges.items():
        for target in targets:
            low, high = _package(importer), _package(target)
            if low == high or low == "bench" and importer == "bench":
                continue
            if low not in rank or high not in rank:
                found.append(f"{importer} -> {target}: package {low if low not in rank else high} has no layer")
            elif rank[high] <= rank[low]:
                found.append(f"{importer} -> {target} ({low} -> {high})")
    return sorted(found)


def test_every_package_has_a_layer() -> None:
    top = {_package(name) for name in _modules() if name != "bench"}
    layered = {package for layer in LAYERS for package in layer}
    assert top - layered == set(), "a new top-level package needs its place in LAYERS"
    assert layered - top == set(), "LAYERS names a package that does not exist"


def test_imports_point_down_the_layers() -> None:
    assert _layer_violations(_graph()[0]) == []


def test_the_layer_checker_sees_an_import_up_and_one_sideways() -> None:
    """Measurement importing the report (up), the report importing the plan (sideways), and a hint-only import
    under TYPE_CHECKING (allowed)."""
    made_up = {"bench.measure.made_up": "def f():\n    from bench.report.formats import count\n",
               "bench.report.made_up": "import bench.plan.cards\n",
               "bench.core.made_up": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import bench.config\n"}
    edges, _ = _graph(made_up)
    assert _layer_violations({name: edges[name] for name in made_up}) == [
        "bench.measure.made_up -> bench.report.formats (measure -> report)",
        "bench.report.made_up -> bench.plan.cards (report -> plan)"]
