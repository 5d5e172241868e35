"""The documentation runs and covers the public API.

* Every ```python block of README.md and docs/quickstart.md runs as written, each in a fresh process; the first
  block of each prints the TFN/SO(2) difference and the equivariance errors, which must be round-off.
* docs/api/ has one page per public module, each page documents its module, every such module declares
  ``__all__``, and every public name has a docstring (what the API reference shows).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_DIR = ROOT / "docs" / "api"

# The public modules: every subpackage and module of escn whose name has no leading underscore, except the
# command line (documented by its --help) and the package entry point.
PUBLIC_MODULES = [
    "escn.o3",
    "escn.nn",
    "escn.models",
    "escn.data",
    "escn.datasets",
    "escn.train",
    "escn.testing",
    "escn.ase",
    "escn.md",
    "escn.native",
    "escn.checkpoint",
    "escn.bench",
]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


@pytest.mark.parametrize("doc", ["README.md", "docs/quickstart.md"])
def test_python_blocks_run_as_written(doc: str, tmp_path: Path) -> None:
    blocks = python_blocks(ROOT / doc)
    assert blocks, f"{doc} has no ```python block"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for i, code in enumerate(blocks):
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"{doc}, python block {i + 1}:\n{code}\n--- stderr ---\n{proc.stderr[-3000:]}"
        if i == 0:
            # The first block compares SO2Conv.from_tfn with TFNConv and measures three equivariance errors
            # (float64): all four numbers it prints are round-off.
            numbers = [float(x) for x in re.findall(r"[-+]?\d+\.\d+e[-+]\d+", proc.stdout)]
            assert len(numbers) == 4 and max(numbers) < 1e-12, proc.stdout


def test_every_public_module_has_an_api_page() -> None:
    pages = {p.stem: p.read_text() for p in API_DIR.glob("*.md") if p.stem != "index"}
    index = (API_DIR / "index.md").read_text()
    found = set()
    for name in PUBLIC_MODULES:
        short = name.split(".", 1)[1]
        assert short in pages, f"docs/api/{short}.md is missing"
        assert f".. automodule:: {name}" in pages[short], f"docs/api/{short}.md does not document {name}"
        assert re.search(rf"^{short}$", index, flags=re.M), f"docs/api/index.md does not list {short}"
        found.add(short)
    assert set(pages) == found, f"pages without a listed public module: {sorted(set(pages) - found)}"
    top = {
        p.stem if p.is_file() else p.name
        for p in (ROOT / "escn").iterdir()
        if not p.name.startswith("_") and (p.suffix == ".py" or (p / "__init__.py").exists())
    }
    assert top - {"cli"} == found, f"public modules without an API page: {sorted(top - {'cli'} - found)}"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_names_have_docstrings(name: str) -> None:
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} declares no __all__ (the API reference lists __all__)"
    missing = []
    for attr in module.__all__:
        obj = getattr(module, attr)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not (inspect.getdoc(obj) or "").strip():
                missing.append(attr)
    assert not missing, f"{name}: public names without a docstring: {missing}"
