"""Importing escn and every one of its modules changes nothing in the process: no environment variable, no
torch setting (threads, default dtype, flags, grad mode), no allocator setting (huge pages, glibc's free-memory
policy), no warning filter, and nothing is compiled or traced. Process-wide choices are explicit calls, e.g.
:func:`escn.bench.allocator.enable_transparent_huge_pages`, which ``escn bench`` makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINUX = sys.platform.startswith("linux")

_SNAPSHOT = r"""
import json, os, sys, warnings
environ_before = dict(os.environ)
if sys.argv[1] == "escn":
    import escn  # first, before torch: escn itself imports torch
import torch

def snapshot():
    return {
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "default_dtype": str(torch.get_default_dtype()),
        "default_device": str(torch.get_default_device()),
        "grad": torch.is_grad_enabled(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "mkldnn": torch.backends.mkldnn.enabled,
        "opt_einsum": torch.backends.opt_einsum.enabled,
        "anomaly": torch.is_anomaly_enabled(),
        "printoptions": repr(sorted(vars(torch._tensor_str.PRINT_OPTS).items())),
        "warning_filters": repr(warnings.filters),
        "dynamo_imported": "torch._dynamo" in sys.modules,
    }
"""

_IMPORT_ALL = r"""
import importlib, pkgutil
skipped = []
if sys.argv[1] == "escn":
    for info in pkgutil.walk_packages(escn.__path__, "escn."):
        if info.name == "escn.__main__":
            continue
        try:
            importlib.import_module(info.name)
        except ImportError as exc:  # an optional dependency that is not installed
            skipped.append(f"{info.name}: {exc}")
"""

_ALLOCATOR = r"""
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

state = snapshot()
environ_after = dict(os.environ)
compiled = sorted(k for k, v in sys.modules["escn.native.build"]._loaded.items() if v is not None) if "escn.native.build" in sys.modules else []
base = rss()
x = torch.ones(50_000_000)  # 200 MB, touched
held = rss() - base
del x
after_free = rss() - base
from escn.bench.allocator import huge_pages_in_use
print(json.dumps({"environ_before": environ_before, "environ_after": environ_after, "state": state,
                  "skipped": skipped, "huge": huge_pages_in_use(), "compiled": compiled, "held": held,
                  "after_free": after_free}))
"""


def _run(what: str, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _SNAPSHOT + _IMPORT_ALL + _ALLOCATOR, what],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not LINUX, reason="reads /proc/self")
def test_importing_every_module_changes_no_process_state(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["ESCN_CACHE_DIR"] = str(tmp_path / "cache")
    got, plain = _run("escn", env), _run("torch", env)  # escn and all its modules vs torch alone
    before, after = got["environ_before"], got["environ_after"]
    assert before == after, {
        k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)
    }
    assert "THP_MEM_ALLOC_ENABLE" not in after
    assert got["state"] == plain["state"], {
        k: (plain["state"][k], v) for k, v in got["state"].items() if plain["state"][k] != v
    }
    assert not got["state"]["dynamo_imported"]
    assert len(got["skipped"]) <= 2 and all("ase" in s or "matplotlib" in s for s in got["skipped"]), got["skipped"]
    assert got["compiled"] == [] and not (tmp_path / "cache").exists()  # no C library built or loaded
    assert got["huge"] is False and plain["huge"] is False  # large tensors not allocated for huge pages
    # glibc's defaults: a freed 200 MB block goes back to the system (reuse_freed_memory was not called)
    assert got["held"] > 190e6 and got["after_free"] < 20e6


@pytest.mark.skipif(not LINUX, reason="transparent huge pages are Linux's")
def test_enable_transparent_huge_pages_is_an_explicit_opt_in():
    code = (
        "import torch\nfrom escn.bench.allocator import enable_transparent_huge_pages, huge_pages_in_use\n"
        "import os, sys\nif sys.argv[1] == 'late':\n    torch.zeros(3)\n"
        "print(enable_transparent_huge_pages(), os.environ.get('THP_MEM_ALLOC_ENABLE'), huge_pages_in_use())"
    )
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])

    def run(arg: str, **extra: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", code, arg],
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, **extra},
            cwd=ROOT,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.strip()

    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[never]" in thp.read_text():
        pytest.skip("the kernel has transparent huge pages off")
    assert run("enable") == "True 1 True"
    # too late once tensors exist: PyTorch read the setting at its first allocation
    assert run("late") == "False 1 False"
    # an explicit opt-out in the environment is kept
    assert run("enable", THP_MEM_ALLOC_ENABLE="0") == "False 0 False"
