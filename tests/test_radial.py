"""Tests of escn.nn.radial: e3nn-compatible embeddings, Bessel basis, cutoff, radial MLP.

All correctness checks run in float64. Comparisons with e3nn (a test-only oracle)
skip when it is not installed.
"""

import math

import pytest
import torch

from escn.nn.radial import (
    BASES,
    BesselBasis,
    PolynomialCutoff,
    RadialMLP,
    second_moment_scale,
    soft_one_hot_linspace,
    soft_unit_step,
)

DT = torch.float64
INTERVALS = [(0.0, 1.8, 10), (-0.5, 1.5, 4), (1.0, 2.0, 1), (0.0, 3.0, 2), (-2.0, -1.0, 7)]


def _points(start: float, end: float, number: int) -> torch.Tensor:
    """Points inside, exactly at the ends and at the centres, and outside [start, end]."""
    width = end - start
    grid = torch.linspace(start - width, end + width, 601, dtype=DT)
    centres = torch.linspace(start, end, number + 2, dtype=DT)
    special = torch.tensor(
        [start, end, start + 1e-9, end - 1e-9, start - 1e-9, end + 1e-9, start - 10 * width, end + 10 * width],
        dtype=DT,
    )
    return torch.cat([grid, centres, special])


def _cases():
    for start, end, number in INTERVALS:
        for basis in BASES:
            for cutoff in (True, False):
                if number == 1 and not cutoff and basis in ("gaussian", "cosine", "smooth_finite"):
                    continue  # spacing undefined; covered by test_number_one_without_cutoff
                yield start, end, number, basis, cutoff


CASES = list(_cases())


# --------------------------------------------------------------------------- #
# soft_one_hot_linspace / soft_unit_step
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("start,end,number,basis,cutoff", CASES)
def test_soft_one_hot_matches_e3nn(start, end, number, basis, cutoff):
    pytest.importorskip("e3nn")
    from e3nn.math import soft_one_hot_linspace as ref_fn

    x = _points(start, end, number)
    ours = soft_one_hot_linspace(x, start, end, number, basis, cutoff)
    assert ours.shape == (x.shape[0], number)
    assert ours.dtype == DT
    assert torch.isfinite(ours).all()

    if number == 1 and not cutoff:
        # e3nn indexes the second linspace point even when it does not use it.
        with pytest.raises(IndexError):
            ref_fn(x, start, end, number, basis, cutoff)
        return
    ref = ref_fn(x, start, end, number, basis, cutoff)
    if basis == "bessel":
        # e3nn gives 0/0 = nan at x == start; we give the limit (checked separately).
        keep = x != start
        ours, ref = ours[keep], ref[keep]
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("start,end,number,basis,cutoff", CASES)
def test_soft_one_hot_gradients_finite(start, end, number, basis, cutoff):
    x = _points(start, end, number).requires_grad_(True)
    y = soft_one_hot_linspace(x, start, end, number, basis, cutoff)
    weights = torch.linspace(-1, 1, number, dtype=DT)
    (grad,) = torch.autograd.grad((y * weights).sum(), x)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("start,end,number,basis,cutoff", [c for c in CASES if c[2] > 1 or c[4]])
def test_soft_one_hot_gradients_match_e3nn(start, end, number, basis, cutoff):
    pytest.importorskip("e3nn")
    from e3nn.math import soft_one_hot_linspace as ref_fn

    weights = torch.linspace(-1, 1, number, dtype=DT)
    x = _points(start, end, number).requires_grad_(True)
    (grad,) = torch.autograd.grad((soft_one_hot_linspace(x, start, end, number, basis, cutoff) * weights).sum(), x)
    x2 = x.detach().clone().requires_grad_(True)
    (ref_grad,) = torch.autograd.grad((ref_fn(x2, start, end, number, basis, cutoff) * weights).sum(), x2)
    keep = torch.isfinite(ref_grad)
    if basis == "bessel":
        # Near x == start e3nn differentiates sin(ax)/x directly, which cancels
        # catastrophically; we use the series there.  Compare away from it.
        keep &= (x.detach() - start).abs() > 1e-3
    torch.testing.assert_close(grad[keep], ref_grad[keep], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("basis", ["gaussian", "smooth_finite", "fourier", "bessel"])
def test_soft_one_hot_gradcheck(basis):
    # Smooth bases (no cutoff indicator): first and second derivatives vs finite differences.
    x = torch.tensor([-0.3, 0.0, 1e-7, 0.2, 0.77, 1.4], dtype=DT, requires_grad=True)
    fn = lambda t: soft_one_hot_linspace(t, 0.0, 1.5, 5, basis, False)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("number", [1, 3, 10])
def test_smooth_finite_strictly_zero_outside(number):
    start, end = 0.0, 1.8
    beyond = torch.cat([torch.tensor([end, end + 1e-12, end + 1e-3]), torch.linspace(end, 50.0, 1000)]).to(DT)
    below = -beyond + start + end
    for x in (beyond, below):
        x = x.clone().requires_grad_(True)
        y = soft_one_hot_linspace(x, start, end, number, "smooth_finite", True)
        assert (y == 0).all()
        (g,) = torch.autograd.grad(y.sum(), x)
        assert (g == 0).all()
    # and positive inside
    inside = torch.linspace(0.01, 1.79, 50, dtype=DT)
    assert (soft_one_hot_linspace(inside, start, end, number, "smooth_finite", True).sum(-1) > 0).all()


def test_cutoff_bases_vanish_outside():
    x = torch.tensor([-5.0, -0.5, 1.5, 2.0, 9.0], dtype=DT)
    for basis in ("cosine", "smooth_finite", "fourier", "bessel"):
        y = soft_one_hot_linspace(x, -0.5, 1.5, 4, basis, True)
        assert (y[[0, 3, 4]] == 0).all(), basis
        # At the ends the centre spacing is rounded, so cosine is cos(pi/2 * (1 - 1e-16)) ~ 5e-16 (as in e3nn).
        assert y[[1, 2]].abs().max() < 1e-15, basis


def test_bessel_embedding_limit_at_start():
    start, end, number = 0.5, 2.5, 6
    x = torch.tensor([start], dtype=DT, requires_grad=True)
    c = end - start
    n = torch.arange(1, number + 1, dtype=DT)
    y = soft_one_hot_linspace(x, start, end, number, "bessel", False)
    torch.testing.assert_close(y[0], math.sqrt(2 / c) * n * math.pi / c, rtol=1e-14, atol=0)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(g).all() and g.abs().max() < 1e-12  # even function of x - start
    yc = soft_one_hot_linspace(x, start, end, number, "bessel", True)
    assert (yc == 0).all()


def test_soft_unit_step_matches_e3nn():
    x = torch.cat([torch.linspace(-3, 10, 1001), torch.tensor([0.0, 1e-3, 2e-3, 1e-300, -1e-300])]).to(DT)
    y = soft_unit_step(x)
    expected = torch.where(x > 0, torch.exp(-1 / x), torch.zeros_like(x))
    torch.testing.assert_close(y, expected, rtol=1e-15, atol=0)

    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(soft_unit_step(xg).sum(), xg)
    assert torch.isfinite(g).all()  # including x = 1e-300 (e3nn's backward: 0/0 there)

    pytest.importorskip("e3nn")
    from e3nn.math import soft_unit_step as ref_fn

    torch.testing.assert_close(y, ref_fn(x), rtol=1e-15, atol=0)
    mid = x[(x.abs() > 1e-100)].clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(ref_fn(mid).sum(), mid)
    (g_ours,) = torch.autograd.grad(soft_unit_step(mid).sum(), mid)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-13, atol=1e-300)


def test_soft_one_hot_shapes_and_dtype():
    x = torch.rand(3, 4, dtype=DT)
    assert soft_one_hot_linspace(x, 0.0, 1.0, 5, "gaussian", True).shape == (3, 4, 5)
    x32 = x.float()
    y = soft_one_hot_linspace(x32, 0.0, 1.0, 5, "smooth_finite", True)
    assert y.dtype == torch.float32
    # float32 agrees with float64 to float32 precision (tolerance 1e-5)
    torch.testing.assert_close(
        y.double(), soft_one_hot_linspace(x32.double(), 0.0, 1.0, 5, "smooth_finite", True), rtol=1e-5, atol=1e-5
    )


def test_guide_embedding_second_moment():
    # The e3nn guide's embedding: smooth_finite with cutoff, times sqrt(N), on [0, r_max].
    n, r_max = 10, 1.8
    r = torch.linspace(0, r_max, 100001, dtype=DT)
    emb = soft_one_hot_linspace(r, 0.0, r_max, n, "smooth_finite", True).mul(n**0.5)
    assert abs(emb.pow(2).mean().item() - 1.0) < 0.1


# --------------------------------------------------------------------------- #
# BesselBasis
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("r_max,num_basis", [(5.0, 8), (1.8, 3), (0.7, 1)])
def test_bessel_basis_values(r_max, num_basis):
    basis = BesselBasis(r_max, num_basis).double()
    r = torch.cat([torch.linspace(0.05, 2 * r_max, 400, dtype=DT), torch.tensor([r_max], dtype=DT)])
    y = basis(r)
    assert y.shape == (r.shape[0], num_basis) and y.dtype == DT
    n = torch.arange(1, num_basis + 1, dtype=DT)
    expected = math.sqrt(2 / r_max) * torch.sin(n * math.pi * r[:, None] / r_max) / r[:, None]
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)

    pytest.importorskip("e3nn")
    from e3nn.math import soft_one_hot_linspace as ref_fn

    if num_basis == 1:
        return  # e3nn raises IndexError for number=1 without cutoff
    torch.testing.assert_close(y, ref_fn(r, 0.0, r_max, num_basis, "bessel", False), rtol=1e-12, atol=1e-12)


def test_bessel_basis_at_zero():
    r_max, num_basis = 4.0, 6
    basis = BesselBasis(r_max, num_basis).double()
    n = torch.arange(1, num_basis + 1, dtype=DT)
    a = n * math.pi / r_max
    pref = math.sqrt(2 / r_max)

    r = torch.tensor([0.0, 1e-300, 1e-12, -1e-12], dtype=DT, requires_grad=True)
    y = basis(r)
    assert torch.isfinite(y).all()
    limit = n * math.pi * math.sqrt(2 / r_max) / r_max
    for row in y:
        torch.testing.assert_close(row, limit, rtol=1e-14, atol=0)

    # d/dr at 0 is 0 (even function); d2/dr2 at 0 is -pref * a**3 / 3.
    for k in range(num_basis):
        (g,) = torch.autograd.grad(y[0, k], r, create_graph=True, retain_graph=True)
        assert torch.isfinite(g).all()
        assert g[0].abs() < 1e-14
        (g2,) = torch.autograd.grad(g[0], r, retain_graph=True)
        torch.testing.assert_close(g2[0], -pref * a[k] ** 3 / 3, rtol=1e-12, atol=1e-12)

    x = torch.tensor([-0.01, 0.0, 1e-6, 0.02, 0.5, 2.0], dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(basis, (x,))
    assert torch.autograd.gradgradcheck(basis, (x,))


def test_bessel_basis_trainable_and_dtype():
    fixed = BesselBasis(3.0, 4)
    assert "n" in dict(fixed.named_buffers()) and len(list(fixed.parameters())) == 0
    trainable = BesselBasis(3.0, 4, trainable=True)
    assert [name for name, _ in trainable.named_parameters()] == ["n"]
    r = torch.rand(7)
    trainable(r).sum().backward()
    assert trainable.n.grad is not None and torch.isfinite(trainable.n.grad).all()
    assert fixed.double().freqs.dtype == DT and fixed(r.double()).dtype == DT
    # float32-built modules converted with .double() carry exact n*pi (no float32 rounding)
    t64 = BesselBasis(3.0, 4, trainable=True).double()
    assert t64.n.dtype == DT
    torch.testing.assert_close(t64.freqs, torch.arange(1, 5, dtype=DT) * math.pi, rtol=1e-16, atol=0)
    assert fixed(torch.rand(2, 5, dtype=DT)).shape == (2, 5, 4)


# --------------------------------------------------------------------------- #
# PolynomialCutoff
# --------------------------------------------------------------------------- #
def test_polynomial_cutoff_values():
    r_max = 2.5
    cut = PolynomialCutoff(r_max)  # p = 6
    r = torch.linspace(0, 2 * r_max, 1001, dtype=DT)
    d = r / r_max
    expected = torch.where(d < 1, 1 - 28 * d**6 + 48 * d**7 - 21 * d**8, torch.zeros_like(d))
    torch.testing.assert_close(cut(r), expected, rtol=1e-12, atol=1e-12)
    assert cut(torch.tensor(0.0, dtype=DT)) == 1.0
    beyond = torch.tensor([r_max, r_max * (1 + 1e-15), 10.0, 1e200], dtype=DT, requires_grad=True)
    out = cut(beyond)
    assert (out == 0).all()
    (g,) = torch.autograd.grad(out.sum(), beyond)
    assert (g == 0).all()
    assert cut(torch.rand(3, 4, dtype=DT)).shape == (3, 4)


def _derivatives(fn, r: torch.Tensor):
    r = r.clone().requires_grad_(True)
    u = fn(r)
    (du,) = torch.autograd.grad(u.sum(), r, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), r)
    return u.detach(), du.detach(), d2u


@pytest.mark.parametrize("p", [1, 2, 3, 6, 9, 4.5])
@pytest.mark.parametrize("r_max", [1.0, 5.0])
def test_polynomial_cutoff_is_c2_at_r_max(p, r_max):
    cut = PolynomialCutoff(r_max, p=p)
    eps = 1e-9
    r = torch.tensor([r_max - eps, r_max + eps, r_max], dtype=DT)
    u, du, d2u = _derivatives(cut, r)
    # left and right limits of value, first and second derivative agree (tolerance 1e-6)
    for q in (u, du, d2u):
        assert torch.isfinite(q).all()
        assert abs(q[0] - q[1]) < 1e-6
        assert q[1] == 0 and q[2] == 0
    # the third derivative jumps: the envelope is C2, not C3 (sanity check of the test)
    rl = torch.tensor([r_max - 1e-3], dtype=DT, requires_grad=True)
    (g1,) = torch.autograd.grad(cut(rl).sum(), rl, create_graph=True)
    (g2,) = torch.autograd.grad(g1.sum(), rl, create_graph=True)
    (g3,) = torch.autograd.grad(g2.sum(), rl)
    assert g3.abs().item() > 1e-3 / r_max**3


def test_polynomial_cutoff_gradcheck():
    cut = PolynomialCutoff(2.0, p=5)
    r = torch.tensor([0.0, 0.3, 1.0, 1.9, 2.5], dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(cut, (r,))
    assert torch.autograd.gradgradcheck(cut, (r,))


# --------------------------------------------------------------------------- #
# RadialMLP
# --------------------------------------------------------------------------- #
MLP_CONFIGS = [
    dict(hs=[10, 16, 7], act=torch.nn.functional.silu),
    dict(hs=[10, 16, 7], act=torch.relu),
    dict(hs=[4, 32, 32, 5], act=torch.tanh),
    dict(hs=[4, 8, 5], act=torch.nn.SiLU()),
    dict(hs=[6, 3], act=None),
    dict(hs=[6, 9, 9, 3], act=None),
    dict(hs=[6, 3], act=torch.relu, out_act=True),
    dict(hs=[3, 12, 12, 2], act=torch.nn.functional.gelu, variance_in=2, variance_out=3, out_act=True),
    dict(hs=[3, 12, 2], act=torch.abs, variance_in=0.5, variance_out=4),
]


@pytest.mark.parametrize("cfg", MLP_CONFIGS, ids=lambda c: str(c["hs"]))
def test_radial_mlp_from_e3nn_matches(cfg):
    pytest.importorskip("e3nn")
    from e3nn.nn import FullyConnectedNet

    cfg = dict(cfg)
    hs, act = cfg.pop("hs"), cfg.pop("act")
    torch.manual_seed(0)
    fc = FullyConnectedNet(hs, act, **cfg).double()
    mlp = RadialMLP.from_e3nn(fc)
    for mine, layer in zip(mlp.weights, fc):
        assert torch.equal(mine, layer.weight)
        assert mine.data_ptr() != layer.weight.data_ptr()  # copied, not shared
    x = torch.randn(257, hs[0], dtype=DT)
    y, y_ref = mlp(x), fc(x)
    assert y.dtype == DT and y.shape == (257, hs[-1])
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)

    # gradients agree too
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(mlp(xg).pow(2).sum(), xg)
    xg2 = x.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(fc(xg2).pow(2).sum(), xg2)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)


def test_radial_mlp_same_init_as_e3nn_and_close_scale():
    e3nn = pytest.importorskip("e3nn")
    from e3nn.nn import FullyConnectedNet

    hs = [8, 32, 4]
    torch.manual_seed(123)
    fc = FullyConnectedNet(hs, torch.nn.functional.silu)
    torch.manual_seed(123)
    mlp = RadialMLP(hs)
    for mine, layer in zip(mlp.weights, fc):
        assert torch.equal(mine, layer.weight)
    # e3nn's constant is a 1e6-sample Monte Carlo estimate; ours is a quadrature.
    for act in (torch.nn.functional.silu, torch.tanh, torch.relu, torch.sigmoid):
        ref = e3nn.math.normalize2mom(act).cst
        assert abs(second_moment_scale(act) - ref) < 5e-3


def test_second_moment_scale_exact_cases():
    assert abs(second_moment_scale(torch.relu) - math.sqrt(2)) < 1e-10
    assert abs(second_moment_scale(lambda z: z) - 1.0) < 1e-10
    assert abs(second_moment_scale(torch.abs) - 1.0) < 1e-10
    assert abs(second_moment_scale(lambda z: z * z) - 1 / math.sqrt(3)) < 1e-10
    assert abs(second_moment_scale(torch.sign) - 1.0) < 1e-8  # discontinuous, at a grid node


def test_radial_mlp_preserves_second_moment():
    # Averaged over 32 weight draws (a single draw fluctuates by ~20% at these widths,
    # the 4000-sample estimate per draw by < 1%); tolerance: the mean output second
    # moment is within 0.1 of the target.
    torch.manual_seed(0)
    for act, variance_out in [(torch.nn.functional.silu, 1.0), (torch.relu, 1.0), (torch.tanh, 2.0)]:
        moments = []
        scale = second_moment_scale(act)
        for _ in range(32):
            mlp = RadialMLP([16, 128, 128, 32], act, variance_out=variance_out, act_scale=scale).double()
            x = torch.randn(4000, 16, dtype=DT)
            with torch.no_grad():
                moments.append(mlp(x).pow(2).mean().item())
        mean = sum(moments) / len(moments)
        assert abs(mean / variance_out - 1.0) < 0.1, (act, mean)


def test_radial_mlp_dtype_following_and_shapes():
    mlp = RadialMLP([5, 12, 3])
    assert all(w.dtype == torch.get_default_dtype() for w in mlp.weights)
    assert mlp(torch.randn(2, 7, 5)).shape == (2, 7, 3)
    mlp = mlp.double()
    assert all(w.dtype == DT for w in mlp.weights)
    y = mlp(torch.randn(4, 5, dtype=DT))
    assert y.dtype == DT
    assert mlp.to(torch.float32)(torch.randn(4, 5)).dtype == torch.float32
    with pytest.raises(TypeError, match="dtype"):
        mlp(torch.randn(4, 5, dtype=DT))
    with pytest.raises(ValueError, match=r"\(\.\.\., 5\)"):
        mlp(torch.randn(4, 6))
    # trainable
    mlp(torch.randn(4, 5)).sum().backward()
    assert all(w.grad is not None for w in mlp.weights)
    # state dict round trip
    other = RadialMLP([5, 12, 3])
    other.load_state_dict(mlp.state_dict())
    x = torch.randn(3, 5)
    assert torch.equal(other(x), mlp(x))


def test_module_activation_follows_to():
    act = torch.nn.PReLU(init=0.1)
    mlp = RadialMLP([3, 8, 2], act)
    assert mlp.double().act.weight.dtype == DT
    assert mlp(torch.randn(5, 3, dtype=DT)).dtype == DT


# --------------------------------------------------------------------------- #
# input validation
# --------------------------------------------------------------------------- #
def test_number_one_without_cutoff():
    x = torch.rand(5, dtype=DT)
    for basis in ("gaussian", "cosine", "smooth_finite"):
        with pytest.raises(ValueError, match="number"):
            soft_one_hot_linspace(x, 0.0, 1.0, 1, basis, False)
    for basis in ("fourier", "bessel"):
        assert soft_one_hot_linspace(x, 0.0, 1.0, 1, basis, False).shape == (5, 1)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(x=torch.arange(5)), TypeError, "x must be a real floating-point"),
        (dict(x=[0.1, 0.2]), TypeError, "x must be a torch.Tensor"),
        (dict(number=0), ValueError, "number must be >= 1"),
        (dict(number=2.0), TypeError, "number must be an int"),
        (dict(start=1.0, end=1.0), ValueError, "end must be greater than start"),
        (dict(start=2.0, end=1.0), ValueError, "end must be greater than start"),
        (dict(end=float("nan")), ValueError, "end must be finite"),
        (dict(basis="gauss"), ValueError, "basis must be one of"),
        (dict(basis=None), ValueError, "basis must be one of"),
        (dict(cutoff=None), TypeError, "cutoff must be a bool"),
        (dict(cutoff=1), TypeError, "cutoff must be a bool"),
    ],
)
def test_soft_one_hot_bad_inputs(kwargs, exc, match):
    args = dict(x=torch.rand(4, dtype=DT), start=0.0, end=1.0, number=3, basis="gaussian", cutoff=True)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        soft_one_hot_linspace(**args)


def test_module_bad_inputs():
    with pytest.raises(TypeError, match="x must be a real floating-point"):
        soft_unit_step(torch.tensor([1, 2]))
    for r_max in (0.0, -1.0):
        with pytest.raises(ValueError, match="r_max must be > 0"):
            BesselBasis(r_max, 4)
        with pytest.raises(ValueError, match="r_max must be > 0"):
            PolynomialCutoff(r_max)
    with pytest.raises(ValueError, match="num_basis must be >= 1"):
        BesselBasis(1.0, 0)
    with pytest.raises(TypeError, match="r has dtype torch.int64; supported: torch.float32 and torch.float64"):
        BesselBasis(1.0, 3)(torch.tensor([1, 2]))
    for p in (0, 0.5, -2):
        with pytest.raises(ValueError, match="p must be >= 1"):
            PolynomialCutoff(1.0, p=p)
    with pytest.raises(TypeError, match="r has dtype torch.int64; supported: torch.float32 and torch.float64"):
        PolynomialCutoff(1.0)(torch.tensor([1, 2]))
    for dims in ([], [4]):
        with pytest.raises(ValueError, match="dims must have at least 2 entries"):
            RadialMLP(dims)
    with pytest.raises(ValueError, match=r"dims\[1\] must be >= 1"):
        RadialMLP([3, 0, 2])
    with pytest.raises(TypeError, match=r"dims\[0\] must be an int"):
        RadialMLP([3.0, 2])
    with pytest.raises(TypeError, match="act must be callable"):
        RadialMLP([3, 2], act="silu")
    with pytest.raises(ValueError, match="variance_in must be > 0"):
        RadialMLP([3, 2], variance_in=0)
    with pytest.raises(TypeError, match="x has dtype torch.int64; supported: torch.float32 and torch.float64"):
        RadialMLP([3, 2])(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="fc must be an e3nn.nn.FullyConnectedNet"):
        RadialMLP.from_e3nn(torch.nn.Linear(3, 2))
