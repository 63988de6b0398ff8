"""The package's shape, read from the source: modules and lines per package, the longest functions, bare `Any`
among the annotations, and the package-level import graph as tests/unit/test_architecture.py reads it (imports
under `if TYPE_CHECKING:`, for type hints only, left out).

    python scripts/code_shape.py [package folder, default bench]
"""

from __future__ import annotations

import ast
import sys
from collections import Counter, defaultdict
from pathlib import Path


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _annotations(tree: ast.AST) -> list[ast.expr]:
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = node.args
            every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                     *filter(None, [arguments.vararg, arguments.kwarg])]
            found += [a.annotation for a in every if a.annotation is not None]
            found += [node.returns] if node.returns is not None else []
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
    return found


def _hint_only(tree: ast.AST) -> set[int]:
    """The nodes under `if TYPE_CHECKING:`: imports that never run."""
    guarded = [node for node in ast.walk(tree)
               if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)]
    return {id(child) for node in guarded for statement in node.body for child in ast.walk(statement)}


def main(root: Path) -> None:
    modules, lines = Counter(), Counter()
    functions: list[tuple[int, str]] = []
    annotations = bare_any = 0
    edges: dict[str, set[str]] = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        name = _module_name(path, root)
        package = _package(name)
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        modules[package] += 1
        lines[package] += len(source.splitlines())
        hints = _hint_only(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
            if id(node) in hints:
                continue
            targets = [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for target in targets:
                if target.startswith(f"{root.name}.") and _package(target) != package:
                    edges[package].add(_package(target))
        found = _annotations(tree)
        annotations += len(found)
        bare_any += sum(isinstance(a, ast.Name) and a.id == "Any" or
                        isinstance(a, ast.Constant) and a.value == "Any" for a in found)
    print("package        modules  lines")
    for package, count in sorted(modules.items(), key=lambda item: -lines[item[0]]):
        print(f"{package:<14} {count:>7} {lines[package]:>6}")
    print(f"{'all':<14} {sum(modules.values()):>7} {sum(lines.values()):>6}")
    print("\nlongest functions (lines):")
    for length, name in sorted(functions, reverse=True)[:5]:
        print(f"  {length:>4}  {name}")
    print(f"\nannotations: {annotations}, bare Any: {bare_any} ({100 * bare_any / max(annotations, 1):.1f} %)")
    print("\npackage imports:")
    for package in sorted(edges):
        print(f"  {package} -> {', '.join(sorted(edges[package]))}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench").resolve())
