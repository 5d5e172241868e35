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

For orders up to 3 the same polynomials are evaluated as one matmul of the distinct monomials against
coefficients fitted once from the recursion (exact to rounding): fewer kernel launches, which is what the cost
is made of at low orders.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Sequence, Union, cast

import torch

from escn._util import has_values, outside_fake_mode
from escn.o3._irreps_parse import parse_irreps

if TYPE_CHECKING:
    from escn.o3.irreps import Irreps

_NORMALIZATIONS = ("integral", "component", "norm")

LSpec = Union[int, Sequence[int], str, "Irreps"]


def _parse_ls(l: LSpec) -> list[int]:
    """The list of orders requested by ``l`` (int, list of ints, irreps string or ``Irreps``)."""
    if isinstance(l, bool):
        raise TypeError(f"l must be an int, a list of ints or Irreps, got bool {l!r}")
    if isinstance(l, int):
        ls = [l]
    elif isinstance(l, str) or type(l).__name__ == "Irreps":
        # an irreps string, or an Irreps (escn's or e3nn's: a sequence of (mul, ir) with ir.l, ir.p)
        terms = parse_irreps(l) if isinstance(l, str) else [(mul, ir.l, ir.p) for mul, ir in cast(Any, l)]
        ls = []
        for mul, li, p in terms:
            if p != (-1) ** li:
                text = "+".join(f"{m}x{lj}{'e' if pj == 1 else 'o'}" for m, lj, pj in terms)
                raise ValueError(
                    f"l: spherical harmonics have parity (-1)^l, but irreps {text!r} contain {li}{'e' if p == 1 else 'o'}"
                )
            ls.extend([li] * mul)
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
def _recursion_coefficients(
    lmax: int,
) -> tuple[tuple[float, ...], tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]:
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
    # one reduction in the common case: NaN/inf propagate into the sum; confirm exactly before raising. Values are
    # read in eager mode only (not while compiling, exporting or running on meta / fake tensors)
    if has_values(x) and not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite entries")


_TABLES: dict[tuple[int, torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


@outside_fake_mode
def _tables(lmax: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full-width recursion rows, each (lmax+1, lmax+1) indexed [l, m]: ``a`` and ``-b`` (zero where the
    term is absent) and the constant ``A^l_l`` placed at [l, l]."""
    key = (lmax, dtype, device)
    if key not in _TABLES:
        diag, a, b = _recursion_coefficients(lmax)
        A = torch.zeros(lmax + 1, lmax + 1, dtype=torch.float64)
        B = torch.zeros(lmax + 1, lmax + 1, dtype=torch.float64)
        C = torch.zeros(lmax + 1, lmax + 1, dtype=torch.float64)
        for l in range(lmax + 1):
            C[l, l] = diag[l]
            for m in range(l):
                A[l, m] = a[l][m]
                if m <= l - 2:
                    B[l, m] = -b[l][m]
        _TABLES[key] = (
            A.to(dtype=dtype, device=device),
            B.to(dtype=dtype, device=device),
            C.to(dtype=dtype, device=device),
        )
    return _TABLES[key]


@lru_cache(maxsize=None)
def _output_index(ls: tuple[int, ...], lmax: int, normalization: str) -> tuple[list[int], list[int], list[float]]:
    """For every output component (l, m) of the requested orders: its index into the flattened
    [l, |m|] Legendre table, into cat(cos(0..L), sin(1..L)), and its normalisation factor."""
    leg, cs, scale = [], [], []
    for l in ls:
        f = {"component": 1.0, "norm": 1.0 / math.sqrt(2 * l + 1), "integral": 1.0 / math.sqrt(4 * math.pi)}[
            normalization
        ]
        for m in range(-l, l + 1):
            leg.append(l * (lmax + 1) + abs(m))
            cs.append(m if m >= 0 else lmax + abs(m))
            scale.append(f)
    return leg, cs, scale


def _spherical_harmonics_flat(
    ls: tuple[int, ...], x: torch.Tensor, normalize: bool, normalization: str
) -> torch.Tensor:
    """(N, 3) -> (N, sum(2l+1)): the requested orders concatenated. Two fused multiply-adds per order on
    (N, lmax+1) rows, then two gathers and one multiply for all components at once."""
    lmax = max(ls)
    if normalize:
        x = torch.nn.functional.normalize(x, dim=-1)
    xx, yy, zz = x.unbind(-1)
    N = x.shape[0]
    Atab, Btab, Ctab = _tables(lmax, x.dtype, x.device)
    # (z + i x)^m for m = 1..lmax by the angle-addition recursion
    cos = [torch.ones_like(zz)]
    sin: list[torch.Tensor] = []
    c, s_ = zz, xx
    for m in range(1, lmax + 1):
        cos.append(c)
        sin.append(s_)
        if m < lmax:
            c, s_ = zz * c - xx * s_, zz * s_ + xx * c
    cs = torch.stack(cos + sin, dim=-1)  # (N, 2 lmax + 1)
    # normalised associated Legendre rows A^l_m(y, r^2), full width lmax+1 (zero for m > l)
    rows = [Ctab[0].expand(N, lmax + 1)]
    y_col = yy.unsqueeze(-1)
    # |x|^2 also after normalising: 1, except 0 for zero vectors, whose Y^l (l >= 1) must stay 0 as in e3nn
    r2 = (x * x).sum(-1, keepdim=True)
    for l in range(1, lmax + 1):
        new = torch.addcmul(Ctab[l], rows[-1] * y_col, Atab[l])
        if l >= 2:
            prev2 = rows[-2] * r2
            new = torch.addcmul(new, prev2, Btab[l])
        rows.append(new)
    table = torch.stack(rows, dim=1).reshape(N, (lmax + 1) ** 2)
    leg, csi, scale = _output_index_tensors(ls, lmax, normalization, x.dtype, x.device)
    # torch.gather with a broadcast index: much faster than index_select along dim 1 on CPU
    out = torch.gather(table, 1, leg.expand(N, leg.shape[0])) * torch.gather(cs, 1, csi.expand(N, csi.shape[0]))
    if scale is not None:
        out = out * scale
    return out


# Orders <= 4: one matmul of the distinct monomials of degree 1..4 against a coefficient matrix obtained from
# the recursion above (a least-squares solve on sample points, exact to rounding), plus a constant row for
# l = 0. About half the kernel launches of the recursion, which is what bounds the cost at these orders.
# The gradient is analytic (:class:`_SmallOrders`): each monomial's derivative is an integer times a monomial of
# one degree less, so the whole vector-Jacobian product is one more small matmul, written in differentiable ops
# so that second derivatives (force training) still work.
_SMALL_LMAX = 4
_SMALL_COEFFICIENTS: dict[tuple, tuple[torch.Tensor, ...]] = {}
_NORMALIZE_EPS = 1e-12  # as torch.nn.functional.normalize


def _monomials(x: torch.Tensor, lmax: int) -> torch.Tensor:
    """(N, 3) -> (N, K): the distinct monomials of degree 1..lmax (lmax <= 4) of the rows of x, in the order
    of :func:`_monomial_exponents`. Built on the transpose (3, N), whose rows are contiguous, so that the final
    concatenation is a few block copies (concatenating (N, 3) pieces along dim 1 cost more than everything
    else together); the result is a transposed view."""
    if lmax < 2:
        return x
    t = x.T.contiguous()  # (3, N): rows x, y, z
    sq = t * t
    shifted = t.roll(-1, dims=0)  # (y, z, x)
    parts = [t, sq, t * shifted]  # x^2 y^2 z^2, xy yz zx
    if lmax >= 3:
        back = t.roll(1, dims=0)  # (z, x, y)
        cube, xyz = sq * t, t[:1] * shifted[:1] * t[2:]
        parts += [cube, sq * shifted, sq * back, xyz]
        if lmax >= 4:  # x^4.., x^3 y.., x^3 z.., x^2 y^2.., x^2 y z..
            parts += [cube * t, cube * shifted, cube * back, sq * sq.roll(-1, dims=0), xyz * t]
    return torch.cat(parts, dim=0).T


def _monomial_exponents(lmax: int) -> list[tuple[int, int, int]]:
    """Exponents ``(a, b, c)`` of the columns ``x^a y^b z^c`` of :func:`_monomials`, read off the function
    itself: at the rows (2,1,1), (1,2,1), (1,1,2) each column is exactly a power of two."""
    if lmax < 1:
        return []
    probes = _monomials(torch.ones(3, 3, dtype=torch.float64) + torch.eye(3, dtype=torch.float64), lmax)
    return [(int(a), int(b), int(c)) for a, b, c in torch.log2(probes).round().T.tolist()]


@outside_fake_mode
def _small_coefficients(
    ls: tuple[int, ...], normalization: str, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """``(constant (C,), coefficients (K, C), derivative map (C, 3 K'), rows (C,), values (C,))``:
    ``Y = constant + monomials(x) @ coefficients``; the vector-Jacobian product of ``g`` (N, C) is
    ``sum_k' (g @ map)[:, j, k'] L[:, k']`` with ``L = [1, monomials of degree < max(ls)]`` (N, K'); at
    ``max(ls) = 1``, ``x @ coefficients = x[:, rows] * values``."""
    key = (ls, normalization, dtype, device)
    if key not in _SMALL_COEFFICIENTS:
        lmax = max(ls)
        # points of norm 0.5..1.5, and each order fitted on the monomials of its own degree (Y^l is homogeneous
        # of degree l): a well-conditioned square-ish solve per order whose other entries are exactly zero
        gen = torch.Generator().manual_seed(0)
        points = torch.nn.functional.normalize(torch.randn(256, 3, generator=gen, dtype=torch.float64), dim=1)
        points = points * (0.5 + torch.rand(256, 1, generator=gen, dtype=torch.float64))
        Y = _spherical_harmonics_flat(ls, points, False, normalization)
        F = _monomials(points, lmax)
        degree = torch.tensor([sum(e) for e in _monomial_exponents(lmax)])
        constant = torch.zeros(Y.shape[1], dtype=torch.float64)
        C = torch.zeros(F.shape[1], Y.shape[1], dtype=torch.float64)
        col = 0
        for l in ls:
            block = slice(col, col + 2 * l + 1)
            if l == 0:
                constant[col] = Y[0, col]
            else:
                rows_l = (degree == l).nonzero().flatten()
                C[rows_l, block] = torch.linalg.lstsq(F[:, rows_l], Y[:, block]).solution
            col += 2 * l + 1
        C[C.abs() < 1e-12] = 0.0  # structural zeros exact (e.g. Y^l(y) = 0 off m = 0); true entries are O(1)
        residual = (F @ C + constant - Y).abs().max().item()
        if residual > 1e-12:  # pragma: no cover - the monomials span every Y^l with l <= 4
            raise RuntimeError(f"small-order spherical harmonics fit failed (residual {residual:.1e})")
        lower = [(0, 0, 0)] + _monomial_exponents(lmax - 1)
        A = torch.zeros(F.shape[1], 3, len(lower), dtype=torch.float64)  # d monomial_k / d x_j = A[k, j] . L
        for k, e in enumerate(_monomial_exponents(lmax)):
            for j in range(3):
                if e[j]:
                    d = [v - (i == j) for i, v in enumerate(e)]
                    A[k, j, lower.index((d[0], d[1], d[2]))] = e[j]
        vjp = C.T @ A.reshape(F.shape[1], -1)
        # orders <= 1: each column is a constant or one coordinate times a number (u @ C = u[:, rows] * values)
        rows = C.abs().argmax(dim=0)
        values = C.gather(0, rows[None])[0]
        if lmax == 1 and not torch.equal(
            F @ C, F[:, rows] * values
        ):  # pragma: no cover - Y^1 ~ one coordinate per column
            raise RuntimeError("first-order coefficients mix coordinates")
        tensors = tuple(t.to(dtype=dtype, device=device).contiguous() for t in (constant, C, vjp, values))
        _SMALL_COEFFICIENTS[key] = tensors[:3] + (rows.to(device), tensors[3])
    return _SMALL_COEFFICIENTS[key]


def _unit_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x / max(|x|, eps), max(|x|, eps))`` row-wise, as torch.nn.functional.normalize."""
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(_NORMALIZE_EPS)
    return x / norm, norm


def _small_orders_vjp(
    x: torch.Tensor, grad: torch.Tensor, lmax: int, vjp: torch.Tensor, normalize: bool
) -> torch.Tensor:
    """Gradient of ``sum(grad * Y(x))`` with respect to ``x`` for the monomial evaluation (differentiable)."""
    N = x.shape[0]
    u, norm = _unit_rows(x) if normalize else (x, x.new_ones(()))
    lower = _monomials(u, lmax - 1) if lmax >= 2 else u[:, :0]
    L = torch.cat([torch.ones_like(u[:, :1]), lower], dim=1)  # (N, K')
    g = torch.bmm((grad @ vjp).view(N, 3, L.shape[1]), L.unsqueeze(2)).squeeze(2)  # d/du, (N, 3)
    if not normalize:
        return g
    # through u = x / max(|x|, eps): the radial part is removed where |x| > eps (elsewhere the clamp is flat)
    radial = (u * g).sum(dim=1, keepdim=True) * (norm > _NORMALIZE_EPS)
    return (g - u * radial) / norm


def _small_orders_value(
    x: torch.Tensor, lmax: int, normalize: bool, constant: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """``constant + monomials(x / |x| or x) @ C`` (no autograd of its own)."""
    return torch.addmm(constant, _monomials(_unit_rows(x)[0] if normalize else x, lmax), C)


class _SmallOrders(torch.autograd.Function):
    """``Y = constant + monomials(x / |x|) @ C`` with the analytic gradient of :func:`_small_orders_vjp`
    (``forward`` and ``setup_context`` apart and a generated vmap rule: the form ``torch.func`` accepts)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: torch.Tensor, lmax: int, normalize: bool, constant: torch.Tensor, C: torch.Tensor, vjp: torch.Tensor
    ) -> torch.Tensor:  # type: ignore[override]
        return _small_orders_value(x, lmax, normalize, constant, C)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        x, lmax, normalize, _, _, vjp = inputs
        ctx.save_for_backward(x, vjp)
        ctx.lmax, ctx.normalize = lmax, normalize

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, vjp = ctx.saved_tensors
        return _small_orders_vjp(x, grad, ctx.lmax, vjp, ctx.normalize), None, None, None, None, None


def _spherical_harmonics_small(
    ls: tuple[int, ...], x: torch.Tensor, normalize: bool, normalization: str
) -> torch.Tensor:
    """As :func:`_spherical_harmonics_flat` for orders <= 4 (needs ``max(ls) >= 1``)."""
    constant, C, vjp, rows, values = _small_coefficients(ls, normalization, x.dtype, x.device)
    if max(ls) == 1:  # every column is a constant or one coordinate times a number: no matmul (2x faster than addmm)
        u = _unit_rows(x)[0] if normalize else x
        return torch.addcmul(constant, torch.gather(u, 1, rows.expand(u.shape[0], rows.shape[0])), values)
    if not (x.requires_grad and torch.is_grad_enabled()):
        return _small_orders_value(x, max(ls), normalize, constant, C)
    return _SmallOrders.apply(x, max(ls), normalize, constant, C, vjp)


_INDEX_TENSORS: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}


@outside_fake_mode
def _output_index_tensors(
    ls: tuple[int, ...], lmax: int, normalization: str, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`_output_index` as cached tensors (the scale is None for component normalisation)."""
    key = (ls, lmax, normalization, dtype, device)
    if key not in _INDEX_TENSORS:
        leg, csi, scale = _output_index(ls, lmax, normalization)
        scale_t = None if normalization == "component" else torch.tensor(scale, dtype=dtype, device=device)
        _INDEX_TENSORS[key] = (torch.tensor(leg, device=device), torch.tensor(csi, device=device), scale_t)
    return _INDEX_TENSORS[key]


def _spherical_harmonics_any(ls: tuple[int, ...], x: torch.Tensor, normalize: bool, normalization: str) -> torch.Tensor:
    """(N, 3) -> (N, sum(2l+1)): the monomial matmul for orders <= 4, the recursion otherwise."""
    if 1 <= max(ls) <= _SMALL_LMAX:
        return _spherical_harmonics_small(ls, x, normalize, normalization)
    return _spherical_harmonics_flat(ls, x, normalize, normalization)


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
    if isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 0:
        raise ValueError(f"lmax must be >= 0 (an int), got {lmax!r}")
    flat = _spherical_harmonics_any(tuple(range(lmax + 1)), x.reshape(-1, 3), normalize, normalization)
    flat = flat.reshape(x.shape[:-1] + (flat.shape[-1],))
    return list(torch.split(flat, [2 * l + 1 for l in range(lmax + 1)], dim=-1))


def spherical_harmonics(l: LSpec, x: torch.Tensor, normalize: bool, normalization: str = "integral") -> torch.Tensor:
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
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    flat = _spherical_harmonics_any(tuple(ls), x.reshape(-1, 3), normalize, normalization)
    return flat.reshape(x.shape[:-1] + (flat.shape[-1],))
