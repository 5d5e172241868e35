"""The S2 activation's fused grid operators (``torch.ops.escn.s2_silu_grid*``, escn/native/s2_grid_kernel.py):
the separable tables of S2Grid, opcheck, gradcheck / gradgradcheck, values and derivatives of orders 1-3 equal
to the two-GEMM PyTorch path (1e-12 in float64), float32 bounds, thread splits, argument errors, and the s2
model with the kernels equal to executor="torch" (energies, forces, force-loss gradients)."""

from __future__ import annotations

import pytest
import torch

from escn import native
from escn.data import AtomsGraph, collate
from escn.models import ESCN
from escn.native import build, s2_grid_kernel
from escn.nn.s2_activation import S2Grid

OPS = torch.ops.escn
DTYPES = [torch.float32, torch.float64]


@pytest.fixture(autouse=True)
def _native_kernels():
    if build.compiler() is None:
        pytest.skip("no C compiler")
    assert native.available(), native.unavailable_reason()


def _rand(*shape, dtype=torch.float64, seed=0, scale=1.0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_(requires_grad)


def _stage_grid(lmax=4, mmax=2, resolution=None) -> S2Grid:
    """A grid whose coefficients are in the stage order of the model (per signed order, l ascending)."""
    coefficients = [(l, 0) for l in range(lmax + 1)]
    for m in range(1, mmax + 1):
        coefficients += [(l, m) for l in range(m, lmax + 1)] + [(l, -m) for l in range(m, lmax + 1)]
    return S2Grid(lmax, mmax, resolution, coefficients=coefficients).double()


def _tables(grid: S2Grid, channels: int, scale: float = 1.3, dtype=torch.float64):
    lat = torch.stack([grid.to_latitude, grid.from_latitude * scale]).to(dtype)
    az = grid.azimuth.to(dtype)
    return lat, az, s2_grid_kernel.grid_plan(channels, lat, az, grid.azimuth_rows)


# ---------------------------------------------------------------------------------------------- tables
@pytest.mark.parametrize("args", [(6, 2, None), (4, None, None), (3, 1, (5, 3)), (2, 2, (3, 1)), (0, 0, None)])
def test_grid_tables_factorise(args):
    """to_grid and from_grid are the products of the latitude and azimuth factors (float64 round-off)."""
    grid = S2Grid(*args).double()
    azk = grid.azimuth[grid.azimuth_rows]
    K = grid.num_coefficients
    to_grid = (grid.to_latitude[:, :, None] * azk[:, None, :]).reshape(K, -1)
    from_grid = (grid.from_latitude[:, :, None] * azk[:, None, :]).reshape(K, -1).T
    assert (to_grid - grid.to_grid).abs().max() < 1e-14
    assert (from_grid - grid.from_grid).abs().max() < 1e-16
    assert grid.azimuth.shape == (len(grid.azimuth_orders), grid.res_alpha)
    assert sorted(grid.azimuth_orders) == list(range(-grid.mmax, grid.mmax + 1))


# ---------------------------------------------------------------------------------------------- values
@pytest.mark.parametrize("channels", [1, 5, 16, 20])
@pytest.mark.parametrize("k_in, k_out", [(None, None), (5, None), (None, 5), (5, 5)])
def test_silu_stages_kernel_equals_the_gemm_path(channels, k_in, k_out):
    """Values and derivatives of orders 1-2 (losses mixing them, cotangents as variables) equal the two-GEMM
    PyTorch path to 1e-12 in float64 (order 3: 1e-11), for prefixes of the coefficients in and out and channel counts past and
    short of one vector."""
    grid = _stage_grid()
    K = grid.num_coefficients
    K_in = K if k_in is None else k_in
    x = _rand(9, K_in * channels, seed=1, scale=2, requires_grad=True)

    def run(executor):
        y = grid.silu_stages(x, channels, k_out, 1.3, executor)
        d1 = torch.autograd.grad((y * y.detach().cos()).sum(), x, create_graph=True)[0]
        d2 = torch.autograd.grad(d1.pow(2).sum() + (d1 * y.sum()).sum(), x, create_graph=True)[0]
        d3 = torch.autograd.grad(d2.sin().sum(), x)[0]
        return y, d1, d2, d3

    got, ref = run("native"), run("torch")
    assert got[0].shape == (9, (K if k_out is None else k_out) * channels)
    for a, b, bar in zip(got, ref, (1e-12, 1e-12, 1e-12, 1e-11)):  # d3: a sine of values in the thousands
        assert (a - b).abs().max() <= bar * max(1.0, float(b.detach().abs().max()))


def test_silu_stages_float32_is_close():
    grid = _stage_grid().float()
    x = _rand(30, grid.num_coefficients * 16, dtype=torch.float32, seed=2, requires_grad=True)
    y = grid.silu_stages(x, 16, None, 1.3, "native")
    ref = grid.double().silu_stages(x.detach().double(), 16, None, 1.3, "torch")
    assert (y.double() - ref).abs().max() <= 2e-6 * max(1.0, float(ref.abs().max()))


def test_family_members_equal_the_reference():
    """Each compiled member (orders 0-2, both sides) and the fused backward equal the PyTorch formula."""
    grid = _stage_grid()
    C, K = 3, grid.num_coefficients
    lat, az, plan = _tables(grid, C)
    x, u, w = (_rand(7, K * C, seed=s) for s in (1, 2, 3))
    v = _rand(7, 4 * C, seed=4)
    cases = [
        ([], [], 0, 1, K),
        ([u], [1], 1, 0, K),
        ([u], [0], 1, 1, 4),
        ([u, v], [1, 0], 2, 0, K),
        ([v, w], [0, 1], 2, 1, 6),
    ]
    for us, sides, order, out_side, K_out in cases:
        got = OPS.s2_silu_grid(x, *(list(us) + [None, None])[:2], lat, az, plan, [order, out_side, K_out, *sides])
        ref = s2_grid_kernel.grid_silu_torch(x, us, sides, order, out_side, K_out, lat, az, plan)
        assert (got - ref).abs().max() <= 1e-12 * max(1.0, float(ref.abs().max()))
    d_u, d_x = OPS.s2_silu_grid_backward(x, v, w, lat, az, plan, [1, 1, K, 0])
    ref_u = s2_grid_kernel.grid_silu_torch(x, [w], [1], 1, 0, 4, lat, az, plan)
    ref_x = s2_grid_kernel.grid_silu_torch(x, [v, w], [0, 1], 2, 0, K, lat, az, plan)
    assert (d_u - ref_u).abs().max() <= 1e-12 * float(ref_u.abs().max())
    assert (d_x - ref_x).abs().max() <= 1e-12 * float(ref_x.abs().max())


def test_gradcheck_and_gradgradcheck():
    grid = _stage_grid(3, 1)
    C = 2
    lat, az, plan = _tables(grid, C)
    K = grid.num_coefficients
    x = _rand(3, K * C, seed=5, requires_grad=True)
    u = _rand(3, K * C, seed=6, requires_grad=True)
    w = _rand(3, 3 * C, seed=7, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: s2_grid_kernel.grid_silu(x, lat, az, plan, K), (x,))
    assert torch.autograd.gradgradcheck(lambda x: s2_grid_kernel.grid_silu(x, lat, az, plan, 3), (x,))
    f1 = lambda x, u: OPS.s2_silu_grid(x, u, None, lat, az, plan, [1, 0, K, 1])  # noqa: E731
    assert torch.autograd.gradcheck(f1, (x, u))
    assert torch.autograd.gradgradcheck(f1, (x, u))
    fb = lambda x, u, w: OPS.s2_silu_grid_backward(x, u, w, lat, az, plan, [1, 1, 3, 0])  # noqa: E731
    assert torch.autograd.gradcheck(fb, (x, u, w))


@pytest.mark.parametrize("dtype", DTYPES)
def test_ops_pass_opcheck(dtype):
    grid = _stage_grid()
    C, K = 5, grid.num_coefficients
    lat, az, plan = _tables(grid, C, dtype=dtype)
    x = _rand(6, K * C, dtype=dtype, seed=1, requires_grad=True)
    u = _rand(6, 5 * C, dtype=dtype, seed=2, requires_grad=True)
    w = _rand(6, K * C, dtype=dtype, seed=3, requires_grad=True)
    cases = [
        (OPS.s2_silu_grid.default, (x, None, None, lat, az, plan, [0, 1, K])),
        (OPS.s2_silu_grid.default, (x[:, : 5 * C], None, None, lat, az, plan, [0, 1, 5])),
        (OPS.s2_silu_grid.default, (x, u, None, lat, az, plan, [1, 0, K, 1])),
        (OPS.s2_silu_grid.default, (x, u, w, lat, az, plan, [2, 0, 7, 1, 0])),
        (OPS.s2_silu_grid_backward.default, (x, u, w, lat, az, plan, [1, 1, K, 0])),
        (OPS.s2_silu_grid.default, (x[:0], None, None, lat, az, plan, [0, 1, K])),
    ]
    for op, args in cases:
        result = torch.library.opcheck(op, args)
        assert all(v == "SUCCESS" for v in result.values()), (op, result)


def test_same_bits_on_one_and_two_threads():
    grid = _stage_grid(6, 2).float()
    x = _rand(300, grid.num_coefficients * 16, dtype=torch.float32, seed=8)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = grid.silu_stages(x, 16, None, 1.3, "native")
        torch.set_num_threads(2)
        two = grid.silu_stages(x, 16, None, 1.3, "native")
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one, two)


def test_bad_arguments_are_named():
    grid = _stage_grid()
    C, K = 2, grid.num_coefficients
    lat, az, plan = _tables(grid, C)
    x = _rand(4, K * C)
    with pytest.raises(ValueError, match="x must have shape"):
        OPS.s2_silu_grid(x[:, :-1], None, None, lat, az, plan, [0, 1, K])
    with pytest.raises(ValueError, match="K_out must be in"):
        OPS.s2_silu_grid(x, None, None, lat, az, plan, [0, 1, K + 1])
    with pytest.raises(ValueError, match="len\\(us\\) = order"):
        OPS.s2_silu_grid(x, None, None, lat, az, plan, [1, 1, K, 0])
    with pytest.raises(ValueError, match="us\\[0\\] must have shape"):
        OPS.s2_silu_grid(x, x[:2], None, lat, az, plan, [1, 1, K, 0])
    with pytest.raises(TypeError, match="lat must have the dtype of x"):
        OPS.s2_silu_grid(x, None, None, lat.float(), az, plan, [0, 1, K])
    with pytest.raises(ValueError, match="lat must have shape"):
        OPS.s2_silu_grid(x, None, None, lat[:, :-1], az, plan, [0, 1, K])
    with pytest.raises(ValueError, match="must not require grad"):
        OPS.s2_silu_grid(x, None, None, lat.clone().requires_grad_(), az, plan, [0, 1, K])
    with pytest.raises(ValueError, match="w must have shape"):
        OPS.s2_silu_grid_backward(x, x, x[:, :C], lat, az, plan, [1, 1, K, 0])
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        OPS.s2_silu_grid(x.to(torch.bfloat16), None, None, lat, az, plan, [0, 1, K])


# ---------------------------------------------------------------------------------------------- the model
def test_s2_model_kernels_equal_torch_executor(float64_default):
    """The s2 model (first block with m = 0 inputs only, last block with m = 0 outputs only, a middle block
    with all coefficients; 20 channels: past one vector of lanes) gives the same energies, forces and force-loss
    gradients with the kernels as with executor="torch" (1e-10), and the kernels run."""
    kw = dict(
        num_atom_types=3,
        lmax=4,
        mmax=2,
        channels=20,
        num_layers=3,
        cutoff=3.0,
        num_radial=6,
        radial_hidden=16,
        activation="s2",
    )
    torch.manual_seed(0)
    reference = ESCN(executor="torch", **kw)
    model = ESCN(**kw)
    model.load_state_dict(reference.state_dict())
    g = torch.Generator().manual_seed(3)
    pos = torch.randn(12, 3, generator=g) * 1.4
    types = torch.randint(0, 3, (12,), generator=g)
    batch = collate([AtomsGraph(pos=pos, atom_types=types)]).with_radius_graph(3.0)
    calls = []
    original = s2_grid_kernel._run
    s2_grid_kernel._run = lambda mode, *a, **k: calls.append(mode) or original(mode, *a, **k)
    try:
        for train in (False, True):
            results = []
            for m in (reference, model):
                m.train(train)
                m.zero_grad()
                out = m(batch)
                grads = []
                if train:
                    (out["energy"].sum() + (out["forces"] ** 2).sum()).backward()
                    grads = [p.grad.clone() for p in m.parameters() if p.grad is not None]
                results.append([out["energy"].detach(), out["forces"].detach(), *grads])
            for a, b in zip(*results):
                assert (a - b).abs().max() <= 1e-10 * max(float(a.abs().max()), 1.0)
    finally:
        s2_grid_kernel._run = original
    assert {0, 1, 3} <= set(calls)  # forward, force backward, and the fused double backward ran
