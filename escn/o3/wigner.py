"""Wigner-D matrices and Wigner 3j symbols in e3nn's real basis (see :mod:`escn.o3.spherical_harmonics`).

Wigner-D: ``D^l(R)`` satisfies ``Y^l(R x) = D^l(R) Y^l(x)`` and ``D^1(R) = R``. Rotations about the
polar axis y act on the pairs ``(+m, -m)`` as plane rotations by ``m * angle``, so they cost O(l).
A rotation about x is the y rotation conjugated by a fixed matrix ``J^l = D^l(Q)``, where ``Q`` is the
quarter turn about z carrying y onto x. ``J^l`` is computed once per order by exact quadrature of
spherical-harmonic products (no matrix exponentials, no Euler-angle poles in the constants) and cached.
Then ``D(alpha, beta, gamma) = Y(alpha) J Y(beta) J^T Y(gamma)`` — the Euler chain of e3nn's convention.

Wigner 3j: from the Racah formula in exact rational arithmetic, carried to this real basis, normalised
to unit Frobenius norm, with e3nn's sign.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from escn._util import outside_fake_mode
from escn.o3.rotation import _as_tensor, matrix_to_angles
from escn.o3.spherical_harmonics import spherical_harmonics_blocks

Tensor = torch.Tensor

# Q: quarter turn about z with Q e_y = e_x, so that Q R_y(t) Q^T = R_x(t).
_Q = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def _check_l(l: int, name: str = "l") -> None:
    if isinstance(l, bool) or not isinstance(l, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(l).__name__}")
    if l < 0:
        raise ValueError(f"{name} must be >= 0, got {l}")


@lru_cache(maxsize=None)
def _sphere_quadrature(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Points (n, 3) and weights (n,) integrating every polynomial of degree <= ``degree`` on the
    unit sphere exactly (Gauss-Legendre in the polar coordinate times a uniform azimuth grid)."""
    n_polar = degree // 2 + 1
    n_azimuth = degree + 1
    y, w = np.polynomial.legendre.leggauss(n_polar)
    phi = 2 * np.pi * np.arange(n_azimuth) / n_azimuth
    rho = np.sqrt(1 - y**2)
    pts = np.stack(
        [np.outer(rho, np.sin(phi)), np.repeat(y[:, None], n_azimuth, 1), np.outer(rho, np.cos(phi))], -1
    ).reshape(-1, 3)
    weights = np.repeat(w[:, None] * (2 * np.pi / n_azimuth), n_azimuth, 1).reshape(-1)
    return pts, weights


def wigner_D_of_fixed_matrix(l: int, R: np.ndarray) -> np.ndarray:
    """``D^l(R)`` in float64 for one fixed 3x3 orthogonal matrix, by exact quadrature:
    ``D_ij = int Y_i(R x) Y_j(x) dx`` with integral-normalised harmonics. Returns (2l+1, 2l+1)."""
    pts, w = _sphere_quadrature(2 * l)
    x = torch.from_numpy(pts)
    y_x = spherical_harmonics_blocks(l, x, normalize=False, normalization="integral")[l].numpy()
    y_rx = spherical_harmonics_blocks(l, x @ torch.from_numpy(np.asarray(R, dtype=np.float64)).T, False, "integral")[
        l
    ].numpy()
    return (y_rx * w[:, None]).T @ y_x


@lru_cache(maxsize=None)
def _J_float64(l: int) -> Tensor:
    return torch.from_numpy(wigner_D_of_fixed_matrix(l, _Q))


_J_CACHE: dict[tuple[int, torch.dtype, torch.device], Tensor] = {}


@outside_fake_mode
def J_matrix(l: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """``J^l = D^l(Q)``, the fixed (2l+1, 2l+1) matrix with ``D^l(R_x(t)) = J^l D^l(R_y(t)) (J^l)^T``."""
    _check_l(l)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    key = (l, dtype, dev)
    if key not in _J_CACHE:
        _J_CACHE[key] = _J_float64(l).to(dtype=dtype, device=dev)
    return _J_CACHE[key]


def cos_sin_multiples(c: Tensor, s: Tensor, lmax: int) -> tuple[Tensor, Tensor]:
    """``cos(m t), sin(m t)`` for ``m = 0..lmax`` from ``c = cos t``, ``s = sin t`` (shape (...)),
    by the angle-addition recursion (polynomial in c and s). Returns two tensors of shape (..., lmax+1)."""
    cos = [torch.ones_like(c)]
    sin = [torch.zeros_like(c)]
    for _ in range(lmax):
        c_prev, s_prev = cos[-1], sin[-1]
        cos.append(c_prev * c - s_prev * s)
        sin.append(s_prev * c + c_prev * s)
    return torch.stack(cos, -1), torch.stack(sin, -1)


def rot_y_diagonals(cos_m: Tensor, sin_m: Tensor, l: int) -> tuple[Tensor, Tensor]:
    """Diagonal and anti-diagonal of ``D^l(R_y(t))`` from ``cos(m t), sin(m t)`` of shape (..., >= l+1).

    ``D^l(R_y(t)) v = v * diag - flip(v) * anti`` and ``M D^l(R_y(t)) = M * diag + flip(M) * anti``
    (``flip`` reverses the last axis: m -> -m). Returns two tensors of shape (..., 2l+1)."""
    c = cos_m[..., : l + 1]
    s = sin_m[..., : l + 1]
    diag = torch.cat([c[..., 1:].flip(-1), c], -1)
    anti = torch.cat([-s[..., 1:].flip(-1), s], -1)
    return diag, anti


def wigner_D_y(l: int, angle: Tensor | float) -> Tensor:
    """``D^l(R_y(angle))``, shape ``angle.shape + (2l+1, 2l+1)``."""
    _check_l(l)
    a = _as_tensor(angle, "angle")
    m = torch.arange(-l, l + 1, dtype=a.dtype, device=a.device)
    ang = a[..., None] * m  # (..., 2l+1) holds m*t
    eye = torch.eye(2 * l + 1, dtype=a.dtype, device=a.device)
    anti_eye = eye.flip(-1)
    # D[m, m] = cos(m t); D[-m, m] = sin(m t) for m > 0 i.e. column m gets +sin at row -m
    return torch.cos(ang)[..., None, :] * eye + (torch.sin(ang)[..., None, :] * anti_eye)


def wigner_D(l: int, alpha: Tensor | float, beta: Tensor | float, gamma: Tensor | float) -> Tensor:
    """Wigner-D matrix of order ``l`` for the rotation ``R_y(alpha) R_x(beta) R_y(gamma)``.

    Angles broadcast together; result shape ``(..., 2l+1, 2l+1)``. Equal to e3nn's ``wigner_D``.
    """
    _check_l(l)
    a, b, c = torch.broadcast_tensors(_as_tensor(alpha, "alpha"), _as_tensor(beta, "beta"), _as_tensor(gamma, "gamma"))
    J = J_matrix(l, a.dtype, a.device)
    return wigner_D_y(l, a) @ J @ wigner_D_y(l, b) @ J.T @ wigner_D_y(l, c)


def wigner_D_from_matrix(l: int, R: Tensor) -> Tensor:
    """``D^l(R)`` for rotations ``R`` of shape ``(..., 3, 3)``; result ``(..., 2l+1, 2l+1)``."""
    return wigner_D(l, *matrix_to_angles(R))


# --------------------------------------------------------------------------------------------- 3j


@lru_cache(maxsize=None)
def _factorial(n: int) -> int:
    return math.factorial(n)


def _clebsch_gordan_complex(l1: int, l2: int, l3: int) -> np.ndarray:
    """Condon-Shortley Clebsch-Gordan coefficients <l1 m1 l2 m2 | l3 m3> as a
    (2l1+1, 2l2+1, 2l3+1) float64 array, by the Racah formula evaluated in exact rationals."""
    f = _factorial
    out = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
    pref_num = (2 * l3 + 1) * f(l3 + l1 - l2) * f(l3 - l1 + l2) * f(l1 + l2 - l3)
    pref_den = f(l1 + l2 + l3 + 1)
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            m3 = m1 + m2
            if abs(m3) > l3:
                continue
            kmin = max(0, l2 - l3 - m1, l1 - l3 + m2)
            kmax = min(l1 + l2 - l3, l1 - m1, l2 + m2)
            if kmin > kmax:
                continue
            # Common multiple of every term's denominator: each factorial below is >= the
            # corresponding factorial of any term, so the sum is an exact integer over `common`.
            common = (
                f(kmax)
                * f(l1 + l2 - l3 - kmin)
                * f(l1 - m1 - kmin)
                * f(l2 + m2 - kmin)
                * f(l3 - l2 + m1 + kmax)
                * f(l3 - l1 - m2 + kmax)
            )
            total = 0
            for k in range(kmin, kmax + 1):
                den = (
                    f(k)
                    * f(l1 + l2 - l3 - k)
                    * f(l1 - m1 - k)
                    * f(l2 + m2 - k)
                    * f(l3 - l2 + m1 + k)
                    * f(l3 - l1 - m2 + k)
                )
                total += (-1) ** k * (common // den)
            if total == 0:
                continue
            sq_num = pref_num * f(l3 + m3) * f(l3 - m3) * f(l1 - m1) * f(l1 + m1) * f(l2 - m2) * f(l2 + m2)
            # value = total / common * sqrt(sq_num / pref_den); exact integer ratios, correctly rounded
            out[l1 + m1, l2 + m2, l3 + m3] = (total / common) * math.sqrt(sq_num / pref_den)
    return out


def _real_from_complex(l: int) -> np.ndarray:
    """Unitary U with (real basis of this library) = U @ (complex Condon-Shortley basis), (2l+1, 2l+1)."""
    U = np.zeros((2 * l + 1, 2 * l + 1), dtype=np.complex128)
    U[l, l] = 1.0
    r = 1 / math.sqrt(2)
    for m in range(1, l + 1):
        U[l + m, l + m] = (-1) ** m * r
        U[l + m, l - m] = r
        U[l - m, l + m] = (-1) ** m * r / 1j
        U[l - m, l - m] = -r / 1j
    return U


@lru_cache(maxsize=None)
def _wigner_3j_float64(l1: int, l2: int, l3: int) -> Tensor:
    cg = _clebsch_gordan_complex(l1, l2, l3)
    U1, U2, U3 = _real_from_complex(l1), _real_from_complex(l2), _real_from_complex(l3)
    C = np.einsum("abc,ia->ibc", cg, U1.conj())
    C = np.einsum("ibc,jb->ijc", C, U2.conj())
    C = np.einsum("ijc,kc->ijk", C, U3)
    # The invariant is real up to a global phase i^(l1+l2+l3).
    C = C * (1j) ** (-(l1 + l2 + l3) % 4)
    C = C.real * (-1) ** l3  # e3nn's sign convention
    C = C / np.linalg.norm(C)
    return torch.from_numpy(np.ascontiguousarray(C))


def wigner_3j(
    l1: int, l2: int, l3: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> Tensor:
    """The real Wigner 3j tensor of shape (2l1+1, 2l2+1, 2l3+1) with unit Frobenius norm,
    invariant under ``D^l1 (x) D^l2 (x) D^l3``; zero-free only when the triangle inequality holds
    (``ValueError`` otherwise). Equal to e3nn's ``wigner_3j``."""
    for name, l in (("l1", l1), ("l2", l2), ("l3", l3)):
        _check_l(l, name)
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        raise ValueError(f"wigner_3j: (l1, l2, l3) = ({l1}, {l2}, {l3}) violates |l1 - l2| <= l3 <= l1 + l2")
    C = _wigner_3j_float64(int(l1), int(l2), int(l3))
    return C.to(dtype=dtype or torch.get_default_dtype(), device=device)
