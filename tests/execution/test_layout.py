"""The execution package's modules import each other at the top only, and never in a circle: an import hidden in a
function is how a circle survives unnoticed (paper.py once loaded live.py on demand, live.py subclassing it)."""

from __future__ import annotations

import ast
from pathlib import Path

import kwx.execution

PACKAGE = "kwx.execution"
PACKAGE_DIR = Path(kwx.execution.__file__).parent


def _execution_imports(node: ast.AST, module: str) -> set[str]:
    """The kwx.execution modules an ``import`` statement names (``from kwx.execution import records`` included)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name.startswith(PACKAGE + ".")}
    if isinstance(node, ast.ImportFrom) and node.module is not None:
        if node.level:  # relative: resolved against the importing module's package
            base = module.rsplit(".", node.level)[0]
            target = f"{base}.{node.module}"
        else:
            target = node.module
        if target == PACKAGE:
            return {f"{PACKAGE}.{alias.name}" for alias in node.names}
        if target.startswith(PACKAGE + "."):
            return {target}
    return set()


def _modules() -> dict[str, ast.Module]:
    return {f"{PACKAGE}.{path.stem}": ast.parse(path.read_text(encoding="utf-8"))
            for path in sorted(PACKAGE_DIR.glob("*.py")) if path.stem != "__init__"}


def test_no_execution_module_imports_another_inside_a_function():
    hidden = []
    for module, tree in _modules().items():
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(function):
                    if _execution_imports(node, module):
                        hidden.append(f"{module}:{node.lineno} ({function.name})")
    assert hidden == []


def test_execution_modules_import_each_other_without_a_cycle():
    graph = {module: set().union(*(_execution_imports(node, module) for node in tree.body)) & set(_modules())
             for module, tree in _modules().items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, f"import cycle: {' -> '.join([*path, module])}"
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, [*path, module])
        done.add(module)

    for module in graph:
        visit(module, [])
