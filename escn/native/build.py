"""Build and load the optional C kernels with the system C compiler, cached per source, compiler and CPU.

The library works without them: :func:`load` returns ``None`` (and callers fall back to PyTorch ops) when
``ESCN_NATIVE=0`` is set, no C compiler is found, or the build fails. The compiled library lives in
``$ESCN_CACHE_DIR`` (default ``$XDG_CACHE_HOME/escn`` or ``~/.cache/escn``) under a name that hashes the
sources, the compiler command and the CPU's model and flags, so a changed source or another machine builds
anew. Builds are atomic (compiled to a temporary name, then renamed), so concurrent first uses are safe.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

_HERE = Path(__file__).resolve().parent
SOURCES = ("kernels.c", "tfn_frame_map.h", "edge_rotation.h", "silu.h")
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-std=gnu11")
# Tried first; the build falls back to FLAGS alone if the compiler has no OpenMP. The library then needs
# libgomp.so.1, which resolves to the one PyTorch has already loaded (escn imports torch first), so the kernels
# share PyTorch's OpenMP threads instead of starting their own.
OPENMP_FLAGS = ("-fopenmp",)

_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}
_errors: dict[str, str] = {}


def enabled() -> bool:
    """False when the environment variable ``ESCN_NATIVE`` is ``0``, ``off``, ``false`` or ``no``."""
    return os.environ.get("ESCN_NATIVE", "1").strip().lower() not in ("0", "off", "false", "no")


def compiler() -> str | None:
    """The C compiler to use: ``$CC`` if set, else ``cc`` or ``gcc`` from PATH; None if there is none."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or cc
    return shutil.which("cc") or shutil.which("gcc")


def cache_dir() -> Path:
    root = os.environ.get("ESCN_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "escn"


def _cpu_signature() -> str:
    """CPU model and feature flags (what ``-march=native`` compiles for)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.uname().machine
    keep = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(sorted(set(keep))) or os.uname().machine


def library_path(cc: str) -> Path:
    """Where the library for the current sources, compiler ``cc`` and CPU is cached."""
    h = hashlib.sha256()
    for name in SOURCES:
        h.update((_HERE / name).read_bytes())
    h.update(" ".join((cc, *FLAGS, *OPENMP_FLAGS)).encode())
    h.update(_cpu_signature().encode())
    return cache_dir() / f"escn_native-{h.hexdigest()[:20]}.so"


def _build(cc: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        sources = [str(_HERE / s) for s in SOURCES if s.endswith(".c")]
        for extra in (OPENMP_FLAGS, ()):
            cmd = [cc, *FLAGS, *extra, "-o", tmp, *sources]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                break
        else:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.strip()}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load() -> ctypes.CDLL | None:
    """The compiled kernels (built on first use), or None when unavailable; :func:`error` says why."""
    if not enabled():
        return None
    with _lock:
        if "lib" in _loaded:
            return _loaded["lib"]
        lib = None
        cc = compiler()
        try:
            if cc is None:
                raise RuntimeError("no C compiler found (set CC or install gcc)")
            path = library_path(cc)
            if not path.exists():
                _build(cc, path)
            lib = ctypes.CDLL(str(path))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _errors["lib"] = str(exc)
            warnings.warn(f"escn: native kernels unavailable, using PyTorch ops instead ({exc})", RuntimeWarning, stacklevel=2)
        _loaded["lib"] = lib
        return lib


def error() -> str | None:
    """Why :func:`load` returned None (None if it did not, or was not called)."""
    if not enabled():
        return "disabled by ESCN_NATIVE"
    return _errors.get("lib")
