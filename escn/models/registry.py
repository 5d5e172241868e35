"""Model registry: names to model classes, so configs and checkpoints can name architectures.

A registered class must accept its configuration as keyword arguments and expose it back as a
JSON-serialisable ``model.config`` dict, so that ``type(model)(**model.config)`` rebuilds the
architecture.  Besides registered names, ``"package.module:ClassName"`` import paths are accepted
everywhere a model name is (the class is imported on first use).
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Dict, List, Type, Union

from torch import nn

from escn._util import import_object

__all__ = ["register_model", "get_model_class", "build_model", "registered_models", "model_config", "accepts_argument"]

_REGISTRY: Dict[str, Type[nn.Module]] = {}


def register_model(name: str, cls: Type[nn.Module], *, overwrite: bool = False) -> Type[nn.Module]:
    """Register ``cls`` under ``name`` (returns ``cls``, so it can be used as a plain call or decorator helper).

    Re-registering the same class under the same name is a no-op; another class under a taken
    name raises ValueError unless ``overwrite=True``.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"model name must be a non-empty string without ':', got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_model({name!r}, ...) expects an nn.Module subclass, got {cls!r}")
    old = _REGISTRY.get(name)
    if old is not None and old is not cls and not overwrite:
        raise ValueError(f"model name {name!r} is already registered to {old.__module__}.{old.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def registered_models() -> List[str]:
    """Sorted names of the registered models."""
    return sorted(_REGISTRY)


def _import_class(path: str) -> Type[nn.Module]:
    if ":" not in path:
        raise ValueError(f"model import path must look like 'package.module:ClassName', got {path!r}")
    obj = import_object(path, "model")
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ValueError(f"model {path!r} is not an nn.Module subclass")
    return obj


def get_model_class(name: str) -> Type[nn.Module]:
    """The class registered under ``name``, or imported from ``"package.module:ClassName"``.

    Raises:
        ValueError: unknown name (the message lists the registered ones).
    """
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {type(name).__name__}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        return _import_class(name)
    known = ", ".join(repr(n) for n in registered_models()) or "none"
    raise ValueError(
        f"unknown model {name!r}; registered models: {known} (or give an import path 'package.module:ClassName')"
    )


def build_model(name: str, **config: Any) -> nn.Module:
    """Instantiate model ``name`` with keyword arguments ``config``.

    Raises:
        ValueError: unknown name, or the class rejects the keyword arguments.
    """
    cls = get_model_class(name)
    upgrade = getattr(cls, "upgrade_config", None)
    if upgrade is not None:  # configs of earlier versions of the class
        config = upgrade(config)
    try:
        return cls(**config)
    except TypeError as exc:
        raise ValueError(f"model {name!r} rejected its config {sorted(config)}: {exc}") from exc


def accepts_argument(model: Union[str, Type[nn.Module]], argument: str) -> bool:
    """Whether the model class (or registered name / import path) takes the keyword argument ``argument``
    by name (a bare ``**kwargs`` does not count)."""
    cls = get_model_class(model) if isinstance(model, str) else model
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # pragma: no cover - classes without an inspectable signature
        return False
    p = params.get(argument)
    return p is not None and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def model_config(model: nn.Module, fallback: Dict[str, Any] | None = None) -> Dict[str, Any]:
    """``model.config`` (or ``fallback`` when the model has none), checked to be JSON-serialisable."""
    config = getattr(model, "config", None)
    if config is None:
        config = dict(fallback or {})
    if not isinstance(config, dict):
        raise TypeError(f"{type(model).__name__}.config must be a dict, got {type(config).__name__}")
    try:
        json.dumps(config)
    except TypeError as exc:
        raise TypeError(f"{type(model).__name__}.config must be JSON-serialisable: {exc}") from exc
    return dict(config)
