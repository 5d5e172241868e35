"""Disk cache for generated data sets: ``.npz`` files written atomically, and array hashing.

The cache directory is, in order of precedence: the ``cache_dir`` argument, the ``ESCN_DATA_DIR``
environment variable, ``~/.cache/escn/datasets``.  A file's name contains every generation
parameter and the seed, so changing any of them never reuses a stale file.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Union

import numpy as np

from escn._util import atomic_write

__all__ = [
    "default_cache_dir",
    "resolve_cache_dir",
    "cache_file_name",
    "save_npz_atomic",
    "load_npz",
    "cached_arrays",
    "array_digest",
]

PathLike = Union[str, os.PathLike]

# Bump when the layout or the generation algorithm of a cached file changes.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$ESCN_DATA_DIR`` if set and non-empty, else ``~/.cache/escn/datasets``."""
    env = os.environ.get("ESCN_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "escn" / "datasets"


def resolve_cache_dir(cache_dir: Optional[PathLike]) -> Path:
    """The directory to use: ``cache_dir`` if given, else :func:`default_cache_dir`."""
    if cache_dir is None:
        return default_cache_dir()
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a path (str or os.PathLike) or None, got {type(cache_dir).__name__}")
    return Path(cache_dir).expanduser()


def _fmt(value: object) -> str:
    """One parameter value as file-name text (floats exact via ``repr``, sequences joined by ``-``)."""
    if isinstance(value, (tuple, list)):
        return "-".join(_fmt(v) for v in value)
    text = repr(value) if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "", text)


def cache_file_name(prefix: str, params: Mapping[str, object]) -> str:
    """``prefix_v{format}_key1=value1_key2=value2....npz`` with keys sorted.

    Values are formatted with ``repr`` for floats (exact), joined with ``-`` for sequences;
    characters other than letters, digits, ``.``, ``+`` and ``-`` are dropped.
    """
    parts = [f"{prefix}_v{CACHE_FORMAT}"]
    for key in sorted(params):
        parts.append(f"{key}={_fmt(params[key])}")
    return "_".join(parts) + ".npz"


def save_npz_atomic(path: PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` as an uncompressed ``.npz``, atomically.

    The data go to a temporary file in the same directory first, which then replaces ``path``
    with ``os.replace``, so readers never see a partial file (also with concurrent writers).
    """
    atomic_write(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def load_npz(path: PathLike) -> Dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file, loaded into memory (no pickles)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def cached_arrays(
    prefix: str,
    params: Mapping[str, object],
    generate: Callable[[], Mapping[str, np.ndarray]],
    cache_dir: Optional[PathLike] = None,
    use_cache: bool = True,
) -> Dict[str, np.ndarray]:
    """Load the arrays named by ``prefix`` + ``params`` from the cache, or generate and store them.

    With ``use_cache=False`` the cache is neither read nor written.
    """
    if not use_cache:
        return {k: np.asarray(v) for k, v in generate().items()}
    path = resolve_cache_dir(cache_dir) / cache_file_name(prefix, params)
    if path.exists():
        try:
            return load_npz(path)
        except (OSError, ValueError, EOFError):  # unreadable: regenerate and overwrite
            pass
    arrays = {k: np.asarray(v) for k, v in generate().items()}
    save_npz_atomic(path, arrays)
    return arrays


def array_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 hex digest of named arrays: keys (sorted), dtypes, shapes and raw bytes."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(np.asarray(arrays[key]))
        h.update(key.encode())
        h.update(str(a.dtype.str).encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()
