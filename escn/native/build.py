"""Build and load the optional C kernels with the system C compiler, cached per source, compiler and CPU.

The library works without them: :func:`load` returns ``None`` (and callers fall back to PyTorch ops) when
no C compiler is found or the build fails. The compiled library lives in
``$ESCN_CACHE_DIR`` (default ``$XDG_CACHE_HOME/escn`` or ``~/.cache/escn``) under a name that hashes the
sources, the compiler command and the CPU's model and flags, so a changed source or another machine builds
anew. Builds are atomic (compiled to a temporary name, then renamed), so concurrent first uses are safe.

Beside each library a stamp file (``<library>.sha256``) records the SHA-256 of the bytes the build wrote. A
cached library is loaded only when its bytes match its stamp: a truncated or otherwise damaged file, a
foreign file under the library's name, or a library without a stamp is rebuilt instead of being handed to
the dynamic loader (which would run a foreign library's initialisers or crash on a damaged one).
Builds and checks of one library are serialised across processes by an advisory lock (``<library>.lock``).
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: builds are still atomic, just not serialised
    fcntl = None  # type: ignore[assignment]

_HERE = Path(__file__).resolve().parent
SOURCES = ("kernels.c", "tfn_frame_map.h", "edge_rotation.h", "silu.h", "s2_grid.h")
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-std=gnu11")
# Tried first; the build falls back to FLAGS alone if the compiler has no OpenMP. The library then needs
# libgomp.so.1, which resolves to the one PyTorch has already loaded (escn imports torch first), so the kernels
# share PyTorch's OpenMP threads instead of starting their own.
OPENMP_FLAGS = ("-fopenmp",)

_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}
_errors: dict[str, str] = {}


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


STAMP_MARKER = "escn-native-sha256"


def stamp_path(library: Path) -> Path:
    """The stamp file beside ``library``: ``"escn-native-sha256 <hex digest of the library's bytes>"``."""
    return library.with_name(library.name + ".sha256")


def _digest(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_valid_library(library: Path) -> bool:
    """True when ``library`` exists and its bytes have the SHA-256 its stamp records (i.e. it is the complete
    output of :func:`_build`); False for a missing, truncated, damaged or foreign file or a missing stamp."""
    try:
        stamp = stamp_path(library).read_text().split()
        return len(stamp) == 2 and stamp[0] == STAMP_MARKER and stamp[1] == _digest(library)
    except OSError:
        return False


@contextmanager
def _build_lock(library: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``<library>.lock`` (released when the process dies)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    library.parent.mkdir(parents=True, exist_ok=True)
    with open(library.with_name(library.name + ".lock"), "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _build(cc: str, target: Path) -> None:
    """Compile the kernels into ``target`` (through a temporary file and ``os.replace``), then write its stamp.

    A crash between the two leaves a library whose stamp is missing or stale, which the next load rebuilds."""
    from escn._util import atomic_write

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
        digest = _digest(tmp)
        os.replace(tmp, target)
        atomic_write(stamp_path(target), lambda f: f.write(f"{STAMP_MARKER} {digest}\n".encode()))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure_library(cc: str) -> Path:
    """The path of a verified library for compiler ``cc`` (see :func:`is_valid_library`), built (or rebuilt,
    replacing a damaged or foreign file) when needed. Raises RuntimeError / OSError when the build fails."""
    path = library_path(cc)
    if is_valid_library(path):
        return path
    with _build_lock(path):
        if not is_valid_library(path):  # another process may have built it while this one waited
            _build(cc, path)
    return path


def load() -> ctypes.CDLL | None:
    """The compiled kernels (built on first use), or None when unavailable; :func:`error` says why."""
    with _lock:
        if "lib" in _loaded:
            return _loaded["lib"]
        lib = None
        cc = compiler()
        try:
            if cc is None:
                raise RuntimeError("no C compiler found (set CC or install gcc)")
            lib = ctypes.CDLL(str(ensure_library(cc)))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _errors["lib"] = str(exc)
            warnings.warn(
                f"escn: native kernels unavailable, using PyTorch ops instead ({exc})", RuntimeWarning, stacklevel=2
            )
        _loaded["lib"] = lib
        return lib


def error() -> str | None:
    """Why :func:`load` returned None (None if it did not, or was not called)."""
    return _errors.get("lib")
