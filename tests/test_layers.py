"""The layers of rtserver, kept: protocol (pure) ← backends ← actors ← shell; and tests that
share their helpers through ``tests/support/`` alone.

A module may import only from its own layer and the layers before it, and the project's
modules import each other without cycles (every import counts: at the top, inside a
function, or for type checking only). ``protocol/`` being sans-IO is kept by
``tests/protocol/test_sans_io.py``.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: In order: each layer may import from itself and the ones before it.
LAYERS = ("protocol", "backends", "actors", "shell")


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    """The layer of a project module (None: not the project's)."""
    top = module.split(".")[0]
    if top == "protocol":
        return "protocol"
    if top == "actors":
        return "actors"
    if module == "rtserver.backends" or module.startswith("rtserver.backends."):
        return "backends"
    if top == "rtserver":
        return "shell"
    return None


def project_imports() -> dict[str, set[str]]:
    """Every project module and the project modules it imports."""
    graph: dict[str, set[str]] = {}
    for package in ("protocol", "actors", "rtserver"):
        for path in (ROOT / package).rglob("*.py"):
            module = _module_name(path)
            imported: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                imported.update(name for name in names if layer_of(name) is not None)
            graph[module] = imported
    # ``from package import module`` names a module; ``from module import function`` does not.
    return {module: {name if name in graph else name.rpartition(".")[0] for name in names} - {module}
            for module, names in graph.items()}


def test_no_module_imports_from_a_later_layer():
    upward = sorted(
        f"{module} ({layer_of(module)}) imports {name} ({layer_of(name)})"
        for module, names in project_imports().items() for name in names
        if LAYERS.index(layer_of(name)) > LAYERS.index(layer_of(module)))
    assert upward == []


def test_the_project_modules_import_each_other_without_cycles():
    graph = project_imports()
    cycles, done, path = [], set(), []

    def visit(module: str) -> None:
        if module in path:
            cycles.append(" -> ".join(path[path.index(module):] + [module]))
            return
        if module in done:
            return
        path.append(module)
        for name in sorted(graph.get(module, ())):
            visit(name)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert cycles == []


@pytest.mark.parametrize("module, layer", [
    ("protocol.frames", "protocol"), ("rtserver.backends.bus.redis", "backends"),
    ("actors.room", "actors"), ("rtserver.listener", "shell"), ("rtserver.backends", "backends"),
    ("trio", None)])
def test_every_module_has_its_layer(module, layer):
    assert layer_of(module) == layer


def test_tests_share_helpers_through_tests_support_only():
    """No test module or conftest imports another test module or a conftest: what the
    suites share lives in ``tests/support/``."""
    offenders = []
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            offenders += [f"{path.relative_to(ROOT)} imports {name}" for name in names
                          if name.startswith("tests.") and not name.startswith("tests.support")]
    assert offenders == []
