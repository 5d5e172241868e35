"""escn.o3's modules import each other only at module top, without a cycle, and each imports on its own."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

O3_DIR = Path(__file__).resolve().parents[1] / "escn" / "o3"
MODULES = sorted(p.stem for p in O3_DIR.glob("*.py") if p.stem != "__init__")


def _tree(name: str) -> ast.Module:
    return ast.parse((O3_DIR / f"{name}.py").read_text(), filename=f"escn/o3/{name}.py")


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports_inside_functions(tree: ast.Module) -> list[int]:
    """Line numbers of import statements nested in a function or lambda."""
    found: list[int] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                found.append(child.lineno)
            walk(child, inside)

    walk(tree, False)
    return found


def _o3_dependencies(tree: ast.Module) -> set[str]:
    """escn.o3 modules imported anywhere in ``tree`` (function bodies included, ``if TYPE_CHECKING:`` blocks
    left out: they never run)."""
    deps: set[str] = set()

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking_block(child):
                continue
            if isinstance(child, ast.ImportFrom) and child.module:
                if child.module.startswith("escn.o3."):
                    deps.add(child.module.split(".")[2])
                elif child.module == "escn.o3":
                    deps.update(a.name for a in child.names if a.name in MODULES)
            elif isinstance(child, ast.Import):
                deps.update(a.name.split(".")[2] for a in child.names if a.name.startswith("escn.o3."))
            walk(child)

    walk(tree)
    return deps


def test_the_modules_are_found():
    assert {"edge_frame", "irreps", "rotation", "spherical_harmonics", "wigner"} <= set(MODULES)


def test_no_import_inside_a_function():
    offenders = {name: lines for name in MODULES if (lines := _imports_inside_functions(_tree(name)))}
    assert offenders == {}, f"imports inside functions (module: line numbers): {offenders}"


def test_import_graph_has_no_cycle():
    graph = {name: _o3_dependencies(_tree(name)) for name in MODULES}
    assert graph["irreps"] >= {"wigner", "rotation"}  # the graph is read, not empty
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join(path + [name, dep])}"
            if dep not in state:
                visit(dep, path + [name])
        state[name] = 2

    for name in MODULES:
        if name not in state:
            visit(name, [])


# Import one module of escn.o3 in a fresh interpreter with the packages escn and escn.o3 present but their
# __init__ not run, so nothing but the module's own imports loads its dependencies; then exercise a function.
_ISOLATED = """
import importlib, sys, types
root = sys.argv[1]
for pkg, path in (("escn", root + "/escn"), ("escn.o3", root + "/escn/o3")):
    module = types.ModuleType(pkg)
    module.__path__ = [path]
    sys.modules[pkg] = module
name = sys.argv[2]
mod = importlib.import_module("escn.o3." + name)
loaded = sorted(m.split(".")[2] for m in sys.modules if m.startswith("escn.o3."))
print(" ".join(loaded))
"""

_USE = {
    "irreps": "import torch; from escn.o3.irreps import Irreps; "
    "print(abs(float(Irreps('1x1o').D_from_matrix(torch.eye(3, dtype=torch.float64)).trace()) - 3) < 1e-12)",
    "spherical_harmonics": "import torch; from escn.o3.spherical_harmonics import spherical_harmonics; "
    "print(spherical_harmonics('1x0e+1x1o', torch.ones(3), True).shape[-1])",
    "wigner": "import torch; from escn.o3.wigner import wigner_D_from_matrix; "
    "print(abs(float(wigner_D_from_matrix(1, torch.eye(3, dtype=torch.float64)).trace()) - 3) < 1e-12)",
}


@pytest.mark.parametrize("name", MODULES)
def test_each_module_imports_in_isolation(name):
    code = _ISOLATED + _USE.get(name, "").replace("; ", "\n")
    root = str(O3_DIR.parents[1])
    proc = subprocess.run(
        [sys.executable, "-c", code, root, name],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert name in lines[0].split()
    expected = {"irreps": "True", "spherical_harmonics": "4", "wigner": "True"}  # D(identity) has trace 2l+1
    if name in expected:
        assert lines[1] == expected[name], proc.stdout
