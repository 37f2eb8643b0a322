"""The package's structure: no import cycle between modules, no reading another's privates.

Imports are read from the source (``ast``), including imports inside functions and under
``TYPE_CHECKING``: a cycle hidden in either is still a cycle for a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # started first under `make test` (tests/conftest.py)

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "sgxlaunch"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    package = name if name in known and _is_package(name) else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                out.add(target if target in known else base)
    return {m for m in out if m in known and m != name}


def _is_package(name: str) -> bool:
    return (SRC / name.replace(".", "/") / "__init__.py").is_file()


def _graph(prefix: str) -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    inside = {m for m in known if m == prefix or m.startswith(prefix + ".")}
    # A package's __init__ re-exports its modules: it is the package's face, not a layer, so
    # edges into it from its own modules would be artefacts; edges out of it are ignored.
    return {
        m: {t for t in _imports(m, modules[m], known) if t in inside and t != prefix}
        for m in inside
        if m != prefix
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("package", ["sgxlaunch.cpu", "sgxlaunch.driver"])
def test_no_import_cycle_inside(package: str) -> None:
    graph = _graph(package)
    assert len(graph) > 3, graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_driver_process_and_kernel_do_not_import_each_other_both_ways() -> None:
    graph = _graph("sgxlaunch.driver")
    assert "sgxlaunch.driver.process" in graph["sgxlaunch.driver.kernel"]
    assert "sgxlaunch.driver.kernel" not in graph["sgxlaunch.driver.process"]


def _private_names_defined(tree: ast.Module) -> set[str]:
    """Private attribute and method names a module defines itself."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("_"):
            out.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == "__slots__":
                    value = node.value
                    if isinstance(value, ast.Tuple):
                        out.update(
                            e.value
                            for e in value.elts
                            if isinstance(e, ast.Constant) and isinstance(e.value, str)
                        )
    return {n for n in out if n.startswith("_") and not n.startswith("__")}


def _foreign_private_reads(tree: ast.Module) -> list[str]:
    """``x._name`` where ``x`` is not ``self``/``cls`` and this module does not define
    ``_name``: reading another module's private state."""
    own = _private_names_defined(tree)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            and node.attr not in own
        ):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("package", ["sgxlaunch.cpu", "sgxlaunch.driver"])
def test_no_module_reads_another_modules_private_state(package: str) -> None:
    modules = _modules()
    offenders = {
        name: reads
        for name, tree in modules.items()
        if name.startswith(package + ".") and (reads := _foreign_private_reads(tree))
    }
    assert offenders == {}


def test_the_private_read_check_finds_one() -> None:
    tree = ast.parse("def f(proc):\n    return proc._valid[0]\n")
    assert _foreign_private_reads(tree) == ["line 2: proc._valid"]
    own = ast.parse(
        "class A:\n    def __init__(self):\n        self._x = 1\n\ndef g(a):\n    return a._x\n"
    )
    assert _foreign_private_reads(own) == []
