"""Spherical harmonics: equal to e3nn 0.6.0 for l <= 12, self-consistent (equivariance, parity,
normalisation) up to l = 24, measured float32 accuracy, and clear errors on bad input."""

from __future__ import annotations

import math

import pytest
import torch

from escn import o3

pytestmark = pytest.mark.usefixtures("single_thread")

NORMALIZATIONS = ["integral", "component", "norm"]


def _vectors(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=dtype)


def _moderate_vectors(n: int, seed: int) -> torch.Tensor:
    """Vectors with norms in [0.5, 1.5]: Y^l (normalize=False) is a degree-l polynomial, so its
    scale is |x|^l; keeping |x| near 1 makes an absolute 1e-12 tolerance meaningful up to l = 12."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    return x * (0.5 + torch.rand(n, 1, generator=g, dtype=torch.float64))


def _error(ours: torch.Tensor, ref: torch.Tensor, x: torch.Tensor, ls, normalize: bool) -> float:
    """Max |ours - ref|, each block of order l divided by max(1, |x|)^l when not normalising
    (a degree-l polynomial: its rounding error scales like its size |x|^l)."""
    if normalize:
        return float((ours - ref).abs().max())
    degree = torch.cat([torch.full((2 * l + 1,), float(l), dtype=x.dtype) for l in ls])
    scale = x.norm(dim=-1, keepdim=True).clamp(min=1) ** degree
    return float(((ours - ref) / scale).abs().max())


# ------------------------------------------------------------------------------------- vs e3nn


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_matches_e3nn_every_l(e3nn_o3, normalization, normalize):
    x = _moderate_vectors(300, seed=1)
    # include the axes and a near-pole vector, where angle-based formulas are delicate
    x = torch.cat(
        [
            x,
            torch.eye(3, dtype=x.dtype),
            -torch.eye(3, dtype=x.dtype),
            torch.tensor([[1e-9, 1.0, -1e-9]], dtype=x.dtype),
        ]
    )
    for l in range(13):
        ours = o3.spherical_harmonics(l, x, normalize, normalization)
        ref = e3nn_o3.spherical_harmonics(l, x, normalize, normalization)
        assert ours.shape == ref.shape == (x.shape[0], 2 * l + 1)
        assert _error(ours, ref, x, [l], normalize) <= 1e-12, (l, normalization, normalize)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_matches_e3nn_large_vectors_relative(e3nn_o3, normalization):
    # normalize=False on vectors of norm up to ~5: compare relative to the block's scale |x|^l
    x = _vectors(200, seed=2) * 2
    for l in range(13):
        ours = o3.spherical_harmonics(l, x, False, normalization)
        ref = e3nn_o3.spherical_harmonics(l, x, False, normalization)
        scale = x.norm(dim=-1, keepdim=True) ** l
        assert ((ours - ref) / scale).abs().max() <= 1e-12, l


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize(
    "ls",
    [[0], [12], [0, 1, 2], [3, 1, 4, 1, 5], [12, 0, 7], list(range(13))],
    ids=lambda ls: "-".join(map(str, ls)),
)
def test_matches_e3nn_list_of_ls(e3nn_o3, ls, normalization, normalize):
    x = _moderate_vectors(100, seed=3)
    ours = o3.spherical_harmonics(ls, x, normalize, normalization)
    ref = e3nn_o3.spherical_harmonics(ls, x, normalize, normalization)
    assert ours.shape == ref.shape == (100, sum(2 * l + 1 for l in ls))
    assert _error(ours, ref, x, ls, normalize) <= 1e-12


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize(
    "irreps", ["0e", "1o", "1x0e+1x1o+1x2e", "0e + 1o + 2e + 3o", "2x1o+3x2e", "12e", "5o+0e+12e+3o"]
)
def test_matches_e3nn_irreps_strings(e3nn_o3, irreps, normalization, normalize):
    x = _moderate_vectors(100, seed=4)
    ref = e3nn_o3.spherical_harmonics(irreps, x, normalize, normalization)
    for spec in (irreps, o3.Irreps(irreps)):
        ours = o3.spherical_harmonics(spec, x, normalize, normalization)
        assert ours.shape == ref.shape
        assert _error(ours, ref, x, o3.Irreps(irreps).ls, normalize) <= 1e-12


def test_default_normalization_is_integral_like_e3nn(e3nn_o3):
    x = _vectors(50, seed=5)
    ours = o3.spherical_harmonics([0, 1, 2, 6], x, normalize=True)
    ref = e3nn_o3.spherical_harmonics([0, 1, 2, 6], x, normalize=True)
    assert (ours - ref).abs().max() <= 1e-12
    assert (ours - o3.spherical_harmonics([0, 1, 2, 6], x, True, "integral")).abs().max() == 0


def test_batch_shapes_and_blocks():
    x = _vectors(24, seed=6).reshape(2, 3, 4, 3)
    y = o3.spherical_harmonics([0, 2, 5], x, True)
    assert y.shape == (2, 3, 4, 1 + 5 + 11)
    blocks = o3.spherical_harmonics_blocks(5, x, True)
    assert [b.shape[-1] for b in blocks] == [2 * l + 1 for l in range(6)]
    assert torch.equal(y, torch.cat([blocks[0], blocks[2], blocks[5]], -1))
    assert o3.spherical_harmonics([], x, True).shape == (2, 3, 4, 0)


# ---------------------------------------------------------------------------- self-consistency

LMAX_HIGH = 24


def test_basis_conventions():
    x = _vectors(100, seed=7)
    u = torch.nn.functional.normalize(x, dim=-1)
    # Y^1 is proportional to (x, y, z) in this order
    y1 = o3.spherical_harmonics(1, x, True, "component")
    assert (y1 - math.sqrt(3) * u).abs().max() <= 1e-14
    # Y^l(e_y) vanishes except at m = 0 (index l), where it is sqrt(2l+1) (component)
    ey = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    for l, block in enumerate(o3.spherical_harmonics_blocks(LMAX_HIGH, ey, True, "component")):
        expected = torch.zeros(2 * l + 1, dtype=torch.float64)
        expected[l] = math.sqrt(2 * l + 1)
        assert (block[0] - expected).abs().max() <= 1e-12, l


def test_normalisations_up_to_l24():
    x = _vectors(500, seed=8)
    comp = o3.spherical_harmonics_blocks(LMAX_HIGH, x, True, "component")
    norm = o3.spherical_harmonics_blocks(LMAX_HIGH, x, True, "norm")
    integ = o3.spherical_harmonics_blocks(LMAX_HIGH, x, True, "integral")
    for l in range(LMAX_HIGH + 1):
        assert (comp[l].pow(2).sum(-1) - (2 * l + 1)).abs().max() <= 1e-10 * (2 * l + 1), l
        assert (norm[l].norm(dim=-1) - 1).abs().max() <= 1e-12, l
        assert (integ[l] - comp[l] / math.sqrt(4 * math.pi)).abs().max() <= 1e-13 * math.sqrt(2 * l + 1), l


def test_integral_normalisation_is_orthonormal_on_the_sphere():
    # exact quadrature for polynomials of degree <= 2 * 16 on the sphere
    from escn.o3.wigner import _sphere_quadrature

    lmax = 16
    pts, w = _sphere_quadrature(2 * lmax)
    Y = o3.spherical_harmonics(list(range(lmax + 1)), torch.from_numpy(pts), False, "integral")
    gram = Y.T @ (Y * torch.from_numpy(w)[:, None])
    assert (gram - torch.eye(Y.shape[1], dtype=gram.dtype)).abs().max() <= 1e-12


def test_homogeneous_polynomial_without_normalize():
    x = _vectors(100, seed=9)
    c = 1.7
    for l, (a, b) in enumerate(
        zip(
            o3.spherical_harmonics_blocks(LMAX_HIGH, c * x, False, "norm"),
            o3.spherical_harmonics_blocks(LMAX_HIGH, x, False, "norm"),
        )
    ):
        scale = (c * x.norm(dim=-1, keepdim=True)) ** l
        assert ((a - c**l * b) / scale).abs().max() <= 1e-12, l
    # and normalize=True is normalize=False at the unit vector
    u = torch.nn.functional.normalize(x, dim=-1)
    assert (
        o3.spherical_harmonics(list(range(LMAX_HIGH + 1)), x, True)
        - o3.spherical_harmonics(list(range(LMAX_HIGH + 1)), u, False)
    ).abs().max() <= 1e-12


def test_equivariance_up_to_l24():
    g = torch.Generator().manual_seed(10)
    x = _vectors(200, seed=10)
    R = o3.rand_matrix(4, dtype=torch.float64, generator=g)
    for r in R:
        Y_rx = o3.spherical_harmonics_blocks(LMAX_HIGH, x @ r.T, True, "component")
        Y_x = o3.spherical_harmonics_blocks(LMAX_HIGH, x, True, "component")
        for l in range(LMAX_HIGH + 1):
            D = o3.wigner_D_from_matrix(l, r)
            assert (Y_rx[l] - Y_x[l] @ D.T).abs().max() <= 1e-10, l


def test_parity_up_to_l24():
    x = _vectors(200, seed=11)
    for l, (a, b) in enumerate(
        zip(
            o3.spherical_harmonics_blocks(LMAX_HIGH, -x, True, "component"),
            o3.spherical_harmonics_blocks(LMAX_HIGH, x, True, "component"),
        )
    ):
        assert (a - (-1) ** l * b).abs().max() <= 1e-12, l


def test_gradcheck():
    x = _vectors(6, seed=12).requires_grad_(True)
    for normalize in (True, False):
        assert torch.autograd.gradcheck(lambda v: o3.spherical_harmonics([0, 1, 3, 8], v, normalize, "component"), (x,))


def test_float32_accuracy():
    """Largest error of float32 against float64 evaluated on the same (float32) inputs."""
    x32 = _vectors(10_000, seed=13, dtype=torch.float32)
    x64 = x32.double()
    err = {}
    for l in (12, 24):
        y32 = o3.spherical_harmonics(l, x32, True, "component")
        y64 = o3.spherical_harmonics(l, x64, True, "component")
        assert y32.dtype == torch.float32
        err[l] = float((y32.double() - y64).abs().max())
    # measured (component normalisation, values up to |Y| ~ 5 at l = 12 and ~ 7 at l = 24):
    #   l = 12: 3.9e-5, l = 24: 1.2e-4; the worst vectors sit next to +-y, where the three-term
    #   recursion in l (double characteristic root at |y| = 1) accumulates ~ l^2/2 roundings.
    #   e3nn 0.6.0 (explicit polynomials) gives 5.4e-6 at l = 12 on the same inputs.
    assert err[12] <= 2e-4, err
    assert err[24] <= 6e-4, err


# ----------------------------------------------------------------------------------- bad input


def test_bad_input_errors():
    x = _vectors(5, seed=14)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\), got \(5, 4\)"):
        o3.spherical_harmonics(2, torch.zeros(5, 4, dtype=torch.float64), True)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        o3.spherical_harmonics(2, torch.zeros((), dtype=torch.float64), True)
    with pytest.raises(ValueError, match="orders must be >= 0, got -1"):
        o3.spherical_harmonics(-1, x, True)
    with pytest.raises(ValueError, match="orders must be >= 0, got -2"):
        o3.spherical_harmonics([1, -2], x, True)
    with pytest.raises(ValueError, match="lmax must be >= 0"):
        o3.spherical_harmonics_blocks(-1, x, True)
    with pytest.raises(TypeError, match="l must be an int"):
        o3.spherical_harmonics(2.0, x, True)
    with pytest.raises(TypeError, match="l must be an int"):
        o3.spherical_harmonics(True, x, True)
    with pytest.raises(TypeError, match="every entry must be an int, got 1.5"):
        o3.spherical_harmonics([0, 1.5], x, True)
    with pytest.raises(ValueError, match="normalization must be one of .*got 'unit'"):
        o3.spherical_harmonics(2, x, True, "unit")
    with pytest.raises(ValueError, match="parity"):
        o3.spherical_harmonics("1e", x, True)
    with pytest.raises(TypeError, match="floating-point"):
        o3.spherical_harmonics(1, torch.ones(5, 3, dtype=torch.int64), True)
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        o3.spherical_harmonics(1, bad, True)
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        o3.spherical_harmonics(1, bad, False)


@pytest.mark.parametrize("ls", [(1,), (2,), (3,), (4,), (0, 1, 2, 3), (3, 1, 1, 0), (2, 0), (0, 1, 2, 3, 4), (4, 2)])
@pytest.mark.parametrize("normalization", ["component", "norm", "integral"])
def test_low_order_matmul_path_equals_the_recursion(ls, normalization):
    """Orders <= 4 are evaluated as a monomial matmul; values, gradients and second derivatives equal the recursion's."""
    from escn.o3.spherical_harmonics import _spherical_harmonics_flat, _spherical_harmonics_small

    x = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x[0] = 0.0  # zero vector: only Y^0 survives
    for normalize in (True, False):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        a = _spherical_harmonics_flat(ls, xa, normalize, normalization)
        b = _spherical_harmonics_small(ls, xb, normalize, normalization)
        assert (a - b).abs().max() <= 1e-14 * a.abs().max().clamp(min=1.0)
        w = torch.randn_like(a)
        (ga,) = torch.autograd.grad((a * w).sum(), xa, retain_graph=True)
        (gb,) = torch.autograd.grad((b * w).sum(), xb, retain_graph=True)
        assert (ga[1:] - gb[1:]).abs().max() <= 1e-13 * ga[1:].abs().max().clamp(
            min=1.0
        )  # at 0 both are normalize's 1/eps-sized gradient
        assert torch.allclose(ga[0], gb[0], rtol=1e-9, atol=0)
        if max(ls) == 1 and not normalize:
            continue  # linear in x: no second derivative
        # second derivatives (force training): the analytic gradient of the matmul path is differentiable again
        (ga,) = torch.autograd.grad((a * w).sum(), xa, create_graph=True)
        (gb,) = torch.autograd.grad((b * w).sum(), xb, create_graph=True)
        probe = torch.randn_like(ga)
        probe[0] = 0.0
        (ha,) = torch.autograd.grad((ga * probe).sum(), xa)
        (hb,) = torch.autograd.grad((gb * probe).sum(), xb)
        assert ha[1:].abs().max() > 1e-3 and (ha[1:] - hb[1:]).abs().max() <= 1e-12 * ha[1:].abs().max().clamp(min=1.0)


@pytest.mark.parametrize("lmax", [1, 2, 3, 4])
def test_low_order_monomials_match_their_exponents_and_pass_gradcheck(lmax):
    """The monomial columns are x^a y^b z^c with the listed exponents (the analytic gradient relies on it), and
    the matmul path's first and second derivatives pass finite-difference checks (normalised or not)."""
    from escn.o3.spherical_harmonics import _monomial_exponents, _monomials, _spherical_harmonics_small

    x = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    exps = torch.tensor(_monomial_exponents(lmax), dtype=torch.float64)
    assert len(set(_monomial_exponents(lmax))) == len(exps) == {1: 3, 2: 9, 3: 19, 4: 34}[lmax]
    assert (_monomials(x, lmax) - (x[:, None, :] ** exps).prod(-1)).abs().max() <= 1e-14
    ls = tuple(range(lmax + 1))
    for normalize in (True, False):
        f = lambda t: _spherical_harmonics_small(ls, t, normalize, "component")  # noqa: E731
        xs = x.clone().requires_grad_()
        assert torch.autograd.gradcheck(f, (xs,)) and torch.autograd.gradgradcheck(f, (xs,))


@pytest.mark.parametrize("lmax", [2, 3, 6, 12])
def test_zero_vector_with_normalize_keeps_only_l0(lmax):
    """normalize=True leaves zero vectors at zero, so every Y^l with l >= 1 vanishes there (as in e3nn)."""
    from escn.o3 import spherical_harmonics

    y = spherical_harmonics(list(range(lmax + 1)), torch.zeros(2, 3, dtype=torch.float64), True, "component")
    assert y[:, 0].eq(1.0).all()
    assert y[:, 1:].abs().max() == 0.0
