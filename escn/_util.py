"""Small helpers shared across the package: integer argument checks, whether tensors hold values, atomic file
writes, ``"module:attr"`` imports and terminal detection."""

from __future__ import annotations

import functools
import importlib
import os
import tempfile
from numbers import Integral
from pathlib import Path
from typing import Any, BinaryIO, Callable, TypeVar, Union

import torch
from torch._subclasses.fake_tensor import is_fake, unset_fake_temporarily

__all__ = ["atomic_write", "check_int", "has_values", "import_object", "is_terminal", "outside_fake_mode"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _fake_mode_active() -> bool:
    return torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE) is not None


def has_values(*tensors: torch.Tensor) -> bool:
    """True when the caller runs eagerly on tensors that hold values: not while ``torch.compile``, ``torch.export``
    or ``make_fx`` traces it, no fake-tensor mode is active, and no tensor is on the ``meta`` device or a
    FakeTensor. The checks that read tensor values (index ranges, finiteness) run only then: a traced graph holds
    no host synchronisation or data-dependent guard, and shapes propagate through layers and models on meta and
    fake inputs. In eager mode on real tensors every check runs."""
    if torch.compiler.is_compiling() or _fake_mode_active():
        return False
    from torch.fx.experimental.proxy_tensor import get_proxy_mode  # not at import: keeps importing escn light

    if get_proxy_mode() is not None:
        return False
    return not any(t.is_meta or is_fake(t) for t in tensors)


def outside_fake_mode(fn: _F) -> _F:
    """Decorator for functions that build and cache constant tables: they run with an active fake-tensor mode
    suspended, so the cache holds real tensors (a table first built while tracing with FakeTensors would
    otherwise be a FakeTensor, unusable by every later real call). Under ``torch.compile`` it calls ``fn`` as is."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling() or not _fake_mode_active():
            return fn(*args, **kwargs)
        with unset_fake_temporarily():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def is_terminal(stream: Any) -> bool:
    """True when ``stream`` is an interactive terminal (where a bar redrawn in place is readable)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int: TypeError naming ``name`` unless it is an integer (bool excluded), ValueError if it is
    below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def atomic_write(path: Union[str, os.PathLike], write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temporary file in ``path``'s directory, fsync it, then ``os.replace`` it onto
    ``path``: readers see the old file or the complete new one, never a partial one (also when the process is
    killed). The file gets the usual umask-based permissions; the directory entry is synced where possible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable where the platform allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def import_object(spec: str, what: str) -> Any:
    """The object named by ``"package.module:attr.sub"``; ValueError naming ``what`` if it cannot be found."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{what} {spec!r}: expected 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{what} {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what} {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj
