"""Equivariance checks driven by declared irreps, and :func:`assert_compiles` (torch.compile against eager).

Every input and output is declared as one of:

* an irreps (``Irreps``, ``Irrep`` or string such as ``"8x0e+4x1o"``): transformed by the block-diagonal
  representation ``D(g)``, parity included (an edge vector is ``"1o"``, a pseudo-vector ``"1e"``);
* ``"cartesian_points"``: positions, ``x -> x R^T + t`` (the only kind a translation moves);
* ``None``: invariant data (indices, radial weights, atom types), passed unchanged.

:func:`equivariance_error` transforms *all* inputs by a random rotation, a random improper rotation
(rotation times inversion) and a random translation, and reports ``max |f(g x) - g f(x)|`` for each.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import torch

from escn.o3.irreps import Irrep, Irreps
from escn.o3.rotation import rand_matrix

Tensor = torch.Tensor
Declared = Union[Irreps, Irrep, str, None]

__all__ = ["CARTESIAN_POINTS", "assert_compiles", "assert_equivariant", "equivariance_error", "transform"]

CARTESIAN_POINTS = "cartesian_points"


def _normalise(decl: Declared) -> Irreps | str | None:
    if decl is None or decl == CARTESIAN_POINTS:
        return decl  # type: ignore[return-value]
    if isinstance(decl, (Irreps, Irrep, str)):
        return Irreps(decl)
    raise TypeError(f"declared irreps must be Irreps, a string, 'cartesian_points' or None, got {decl!r}")


def transform(x: Any, decl: Irreps | str | None, R: Tensor, t: Tensor) -> Any:
    """Apply the group element ``(R, t)`` (``R`` orthogonal 3x3, possibly improper) to ``x``
    according to its declaration. Tensors of irreps have shape ``(..., irreps.dim)``."""
    if decl is None:
        return x
    if not isinstance(x, Tensor):
        raise TypeError(f"an input declared as {decl!s} must be a tensor, got {type(x).__name__}")
    R = R.to(dtype=x.dtype, device=x.device)
    if decl == CARTESIAN_POINTS:
        if x.shape[-1] != 3:
            raise ValueError(f"cartesian points must have shape (..., 3), got {tuple(x.shape)}")
        return x @ R.T + t.to(dtype=x.dtype, device=x.device)
    assert isinstance(decl, Irreps)
    if x.shape[-1] != decl.dim:
        raise ValueError(f"tensor declared as {decl} must have last dimension {decl.dim}, got {tuple(x.shape)}")
    D = decl.D_from_matrix(R)
    return x @ D.T


def equivariance_error(
    fn: Callable[..., Any],
    inputs: Sequence[Any],
    irreps_in: Sequence[Declared],
    irreps_out: Declared | Sequence[Declared],
    *,
    trials: int = 2,
    rotations: bool = True,
    reflections: bool = True,
    translations: bool = True,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Largest deviation from equivariance of ``fn`` for each kind of transformation.

    Args:
        fn: called as ``fn(*inputs)``; returns a tensor or a tuple of tensors.
        inputs: the arguments.
        irreps_in: one declaration per argument (see module docstring).
        irreps_out: one declaration, or one per returned tensor.
        trials: random group elements tried per kind.
        rotations, reflections, translations: which kinds to test.

    Returns:
        ``{"rotation": err, "reflection": err, "translation": err}`` for the kinds tested, each the max
        absolute difference ``|fn(g x) - g fn(x)|`` over trials and outputs.
    """
    if len(inputs) != len(irreps_in):
        raise ValueError(f"got {len(inputs)} inputs but {len(irreps_in)} declarations in irreps_in")
    decl_in = [_normalise(d) for d in irreps_in]
    out = fn(*inputs)
    single = not isinstance(out, (tuple, list))
    outs = [out] if single else list(out)
    if single or isinstance(irreps_out, (str, Irreps, Irrep)) or irreps_out is None:
        decl_out = [_normalise(irreps_out)] * len(outs)  # type: ignore[arg-type]
    else:
        decl_out = [_normalise(d) for d in irreps_out]  # type: ignore[union-attr]
    if len(decl_out) != len(outs):
        raise ValueError(f"fn returned {len(outs)} tensors but irreps_out declares {len(decl_out)}")
    ref = next((x for x in inputs if isinstance(x, Tensor) and x.is_floating_point()), None)
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()

    kinds: list[str] = []
    if rotations:
        kinds.append("rotation")
    if reflections:
        kinds.append("reflection")
    if translations:
        kinds.append("translation")
    errors: dict[str, float] = {}
    for kind in kinds:
        worst = 0.0
        for _ in range(trials):
            R = torch.eye(3, dtype=torch.float64)
            t = torch.zeros(3, dtype=torch.float64)
            if kind in ("rotation", "reflection"):
                R = rand_matrix(dtype=torch.float64, generator=generator)
            if kind == "reflection":
                R = -R
            if kind == "translation":
                t = torch.randn(3, dtype=torch.float64, generator=generator) * 3.0
            moved = [transform(x, d, R, t) for x, d in zip(inputs, decl_in)]
            out_moved = fn(*moved)
            out_moved = [out_moved] if single else list(out_moved)
            for y, y_moved, d in zip(outs, out_moved, decl_out):
                expected = transform(y, d, R.to(dtype), t.to(dtype))
                worst = max(worst, float((y_moved - expected).detach().abs().max()) if y.numel() else 0.0)
        errors[kind] = worst
    return errors


def assert_equivariant(
    fn: Callable[..., Any],
    inputs: Sequence[Any],
    irreps_in: Sequence[Declared],
    irreps_out: Declared | Sequence[Declared],
    tol: float,
    **kwargs: Any,
) -> dict[str, float]:
    """:func:`equivariance_error`, raising ``AssertionError`` if any error exceeds ``tol``."""
    errors = equivariance_error(fn, inputs, irreps_in, irreps_out, **kwargs)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    if bad:
        raise AssertionError(f"not equivariant within {tol:g}: {bad} (all: {errors})")
    return errors


def _max_differences(got: Any, ref: Any) -> list[tuple[str, float]]:
    """(path, max |got - ref|) for every tensor leaf of two outputs of the same structure."""
    import torch.utils._pytree as pytree

    g_leaves, g_spec = pytree.tree_flatten_with_path(got)
    r_leaves, r_spec = pytree.tree_flatten_with_path(ref)
    if g_spec != r_spec:
        raise AssertionError(f"compiled output has structure {g_spec}, eager output {r_spec}")
    out = []
    for (path, g), (_, r) in zip(g_leaves, r_leaves):
        name = pytree.keystr(path) or "output"
        if isinstance(r, Tensor):
            if not isinstance(g, Tensor) or g.shape != r.shape or g.dtype != r.dtype:
                raise AssertionError(
                    f"{name}: compiled {getattr(g, 'shape', g)} {getattr(g, 'dtype', '')}, eager "
                    f"{tuple(r.shape)} {r.dtype}"
                )
            d = float((g.detach() - r.detach()).abs().max()) if r.numel() else 0.0
            out.append((name, d if d == d else float("inf")))
        elif g != r:
            raise AssertionError(f"{name}: compiled {g!r}, eager {r!r}")
    return out


def assert_compiles(
    fn: Callable[..., Any],
    *args: Any,
    atol: float = 1e-10,
    backend: str = "inductor",
    dynamic: bool | None = False,
    **kwargs: Any,
) -> dict[str, float]:
    """Compile ``fn`` with ``torch.compile(fullgraph=True)``, run it on ``args`` / ``kwargs`` and compare every
    tensor it returns with the eager result.

    ``torch.autograd.grad`` and ``Tensor.backward`` inside ``fn`` are traced (Dynamo's ``trace_autograd_ops``
    is on while compiling), so an energy model's forces and stress and a whole training step compile into one
    graph. The eager reference runs first, on the same arguments (it also fills the tables that some functions
    build on their first call, e.g. :func:`escn.o3.spherical_harmonics` for l <= 4, whose construction
    cannot be traced).

    Args:
        fn: a function or module; returns a tensor or any pytree of tensors (and plain values, compared with ==).
        atol: largest allowed absolute difference of any output element.
        backend: the ``torch.compile`` backend (``"eager"`` checks the capture alone, ``"aot_eager"`` adds
            AOTAutograd, ``"inductor"`` generates code).
        dynamic: passed to ``torch.compile``.

    Returns:
        ``{output path: max |compiled - eager|}``.

    Raises:
        AssertionError: naming the graph break (reason and user code location, as Dynamo reports it) when
            ``fn`` does not compile into one graph, or naming the outputs that differ by more than ``atol``.
    """
    import torch._dynamo

    ref = fn(*args, **kwargs)
    compiled = torch.compile(fn, fullgraph=True, backend=backend, dynamic=dynamic)
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        try:
            got = compiled(*args, **kwargs)
        except (torch._dynamo.exc.Unsupported, torch._dynamo.exc.UserError) as exc:
            raise AssertionError(
                f"graph break in {getattr(fn, '__qualname__', type(fn).__name__)} under "
                f"torch.compile(fullgraph=True):\n{exc}"
            ) from exc
    diffs = dict(_max_differences(got, ref))
    bad = {k: v for k, v in diffs.items() if not v <= atol}
    if bad:
        raise AssertionError(f"compiled and eager outputs differ by more than {atol:g}: {bad} (all: {diffs})")
    return diffs
