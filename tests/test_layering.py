"""The package's layers import only downwards: no module-level cycle and no function-local import holding one.

Layers, lowest first: escn.o3 -> escn.nn -> escn.data -> escn.checkpoint -> escn.models -> escn.train.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "escn"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function?) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.module:
                if child.level:  # relative: resolve against the file's package
                    pkg = path.relative_to(ROOT.parent).with_suffix("").parts[: -child.level]
                    found.append((".".join(pkg + (child.module,)), inner))
                else:
                    found.append((child.module, inner))
            elif isinstance(child, ast.Import):
                found.extend((a.name, inner) for a in child.names)
            visit(child, inner)

    visit(tree, False)
    return found


@pytest.mark.parametrize(
    "lower, upper",
    [
        ("escn/models", "escn.train"),
        ("escn/o3", "escn.nn"),
        ("escn/o3", "escn.models"),
        ("escn/nn", "escn.models"),
        ("escn/nn", "escn.train"),
    ],
)
def test_lower_layers_do_not_import_upper_ones(lower, upper):
    for path in (ROOT.parent / lower).rglob("*.py"):
        bad = [m for m, _ in _imports(path) if m == upper or m.startswith(upper + ".")]
        assert not bad, f"{path.relative_to(ROOT.parent)} imports {bad}"


def test_models_and_train_import_at_module_level_only():
    for sub in ("models", "train"):
        for path in (ROOT / sub).glob("*.py"):
            local = [m for m, inside in _imports(path) if inside and m.startswith("escn")]
            assert not local, f"{path.relative_to(ROOT.parent)} imports {local} inside a function"


@pytest.mark.parametrize(
    "module", ["escn.checkpoint", "escn.models.io", "escn.models", "escn.train.evaluate", "escn.train.data"]
)
def test_each_module_imports_alone(module):
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
