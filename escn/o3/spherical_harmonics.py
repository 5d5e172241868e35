"""Real spherical harmonics in e3nn's basis, by a stable recursion valid at any order.

Basis (identical to e3nn's): the special (polar) axis is **y**; inside the block of order ``l``
(size ``2l+1``) the entry at index ``l + m`` holds order ``m``; ``m > 0`` entries are the
``cos(m phi)`` functions and ``m < 0`` the ``sin(|m| phi)`` ones, with the azimuth ``phi`` measured
from the z axis towards the x axis. ``Y^1(x, y, z)`` is proportional to ``(x, y, z)``.

Method: write ``Y^l_{+m} = A^l_m(y, r^2) Re((z + i x)^m)`` and ``Y^l_{-m} = A^l_m(y, r^2) Im((z + i x)^m)``,
where ``A^l_m`` is a normalised associated-Legendre polynomial. ``A^l_m`` follows the three-term
recursion in ``l`` with precomputed normalised coefficients, so every intermediate value stays of
order ``sqrt(2l+1)`` (no factorials, no overflow, no cancellation): it is accurate in float64 far
beyond l = 24 and usable in float32. The recursion is vectorised over ``m`` so the cost is O(L)
kernel launches, each over all vectors at once. Everything is a polynomial in ``x``, hence
differentiable everywhere (``normalize=True`` divides by ``|x|`` first).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence, Union

import torch

_NORMALIZATIONS = ("integral", "component", "norm")

LSpec = Union[int, Sequence[int], str, "Irreps"]


def _parse_ls(l: LSpec) -> list[int]:
    """The list of orders requested by ``l`` (int, list of ints, irreps string or ``Irreps``)."""
    if isinstance(l, bool):
        raise TypeError(f"l must be an int, a list of ints or Irreps, got bool {l!r}")
    if isinstance(l, int):
        ls = [l]
    elif isinstance(l, str) or type(l).__name__ == "Irreps":
        from escn.o3.irreps import Irreps

        irreps = Irreps(l)
        ls = []
        for mul, ir in irreps:
            if ir.p != (-1) ** ir.l:
                raise ValueError(
                    f"l: spherical harmonics have parity (-1)^l, but irreps {str(irreps)!r} contain {ir}"
                )
            ls.extend([ir.l] * mul)
    elif isinstance(l, (list, tuple)):
        ls = []
        for item in l:
            if isinstance(item, bool) or not isinstance(item, int):
                raise TypeError(f"l: every entry must be an int, got {item!r} in {l!r}")
            ls.append(item)
    else:
        raise TypeError(f"l must be an int, a list of ints, an irreps string or Irreps, got {type(l).__name__}")
    for li in ls:
        if li < 0:
            raise ValueError(f"l: orders must be >= 0, got {li} in {l!r}")
    return ls


@lru_cache(maxsize=None)
def _recursion_coefficients(lmax: int) -> tuple[tuple[float, ...], tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]:
    """Coefficients of the normalised recursion (component normalisation).

    Returns ``(diag, a, b)``: ``diag[m] = A^m_m`` (a constant), and for ``l >= 1``
    ``A^l_m = a[l][m] * y * A^{l-1}_m - b[l][m] * r^2 * A^{l-2}_m`` for ``m <= l - 1``
    (``b[l][l-1]`` unused: that term is absent).
    """
    diag = [1.0]
    for m in range(1, lmax + 1):
        ratio = math.sqrt((2 * m + 1) / (2 * m))
        if m == 1:
            ratio *= math.sqrt(2.0)  # K^m_m carries sqrt(2) for m > 0 only
        diag.append(diag[-1] * ratio)
    a: list[tuple[float, ...]] = [()]
    b: list[tuple[float, ...]] = [()]
    for l in range(1, lmax + 1):
        a.append(tuple(math.sqrt((2 * l + 1) * (2 * l - 1) / ((l - m) * (l + m))) for m in range(l)))
        b.append(
            tuple(
                math.sqrt((2 * l + 1) * (l + m - 1) * (l - m - 1) / ((2 * l - 3) * (l - m) * (l + m)))
                if m <= l - 2
                else 0.0
                for m in range(l)
            )
        )
    return tuple(diag), tuple(a), tuple(b)


def _check_vectors(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (..., 3), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite entries")


def spherical_harmonics_blocks(
    lmax: int, x: torch.Tensor, normalize: bool, normalization: str = "integral"
) -> list[torch.Tensor]:
    """Spherical harmonics of every order ``0..lmax`` as a list of blocks.

    Args:
        lmax: highest order (>= 0).
        x: vectors, shape ``(..., 3)``.
        normalize: divide ``x`` by its norm first (zero vectors stay zero).
        normalization: ``"integral"``, ``"component"`` or ``"norm"`` (see :func:`spherical_harmonics`).

    Returns:
        ``[Y^0, ..., Y^lmax]`` with ``Y^l`` of shape ``(..., 2l+1)``.
    """
    _check_vectors(x)
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    if lmax < 0:
        raise ValueError(f"lmax must be >= 0, got {lmax}")
    if normalize:
        x = torch.nn.functional.normalize(x, dim=-1)
    xx, yy, zz = x.unbind(-1)
    r2 = None if normalize else (x * x).sum(-1)
    diag, a, b = _recursion_coefficients(lmax)
    opts = dict(dtype=x.dtype, device=x.device)

    # cos/sin parts: (z + i x)^m, m = 0..lmax
    cos = [torch.ones_like(zz)]
    sin = [torch.zeros_like(zz)]
    for _ in range(1, lmax + 1):
        c, s = cos[-1], sin[-1]
        cos.append(zz * c - xx * s)
        sin.append(zz * s + xx * c)

    ones = torch.ones_like(yy).unsqueeze(-1)
    blocks: list[torch.Tensor] = []
    a_prev2: torch.Tensor | None = None
    a_prev = ones * diag[0]  # A^0, shape (..., 1)
    legendre = [a_prev]
    for l in range(1, lmax + 1):
        coef_a = torch.tensor(a[l], **opts)
        head = coef_a * yy.unsqueeze(-1) * a_prev  # (..., l), m = 0..l-1
        if l >= 2:
            assert a_prev2 is not None
            coef_b = torch.tensor(b[l][: l - 1], **opts)
            tail = coef_b * a_prev2[..., : l - 1]
            if r2 is not None:
                tail = tail * r2.unsqueeze(-1)
            head = torch.cat([head[..., : l - 1] - tail, head[..., l - 1 :]], dim=-1)
        a_new = torch.cat([head, ones * diag[l]], dim=-1)  # (..., l+1)
        legendre.append(a_new)
        a_prev2, a_prev = a_prev, a_new

    cos_t = torch.stack(cos, dim=-1)  # (..., lmax+1)
    sin_t = torch.stack(sin, dim=-1)
    scale = {"component": lambda l: 1.0, "norm": lambda l: 1.0 / math.sqrt(2 * l + 1),
             "integral": lambda l: 1.0 / math.sqrt(4 * math.pi)}[normalization]
    for l in range(lmax + 1):
        A = legendre[l]
        neg = (A[..., 1:] * sin_t[..., 1 : l + 1]).flip(-1)  # m = -l..-1
        pos = A * cos_t[..., : l + 1]  # m = 0..l
        block = torch.cat([neg, pos], dim=-1)
        s = scale(l)
        blocks.append(block if s == 1.0 else block * s)
    return blocks


def spherical_harmonics(
    l: LSpec, x: torch.Tensor, normalize: bool, normalization: str = "integral"
) -> torch.Tensor:
    """Real spherical harmonics ``Y^l(x)`` in e3nn's basis and ordering.

    Args:
        l: an order, a list of orders, or irreps of parity ``(-1)^l`` (e.g. ``"1x0e+1x1o+1x2e"``).
        x: vectors, shape ``(..., 3)``; any floating dtype.
        normalize: if True, evaluate at ``x / |x|``; otherwise ``Y^l`` is the homogeneous
            polynomial of degree ``l`` evaluated at ``x``.
        normalization: ``"integral"`` (default, as e3nn: each function has unit L2 norm on the
            sphere), ``"component"`` (``|Y^l(u)|^2 = 2l+1`` for unit ``u``) or ``"norm"``
            (``|Y^l(u)| = 1``).

    Returns:
        Tensor of shape ``(..., sum(2l+1))``, the blocks concatenated in the order requested.

    Satisfies ``Y(R x) = D(R) Y(x)`` with :func:`escn.o3.wigner_D`, and ``Y(-x) = (-1)^l Y(x)``.
    """
    ls = _parse_ls(l)
    _check_vectors(x)
    if not ls:
        return x.new_zeros(x.shape[:-1] + (0,))
    blocks = spherical_harmonics_blocks(max(ls), x, normalize, normalization)
    return torch.cat([blocks[li] for li in ls], dim=-1)
