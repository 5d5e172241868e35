"""Edge frames: the rotation carries each edge onto +y, its Wigner-D rows are the rows of the full
D of that rotation, gradients are finite and correct everywhere (poles included), float32 accuracy,
clear errors on bad edges (check_edge_vectors), and a frame built without reading a value (one traced graph)."""

from __future__ import annotations

import math

import pytest
import torch

from escn import o3
from escn.o3.edge_frame import check_edge_vectors, edge_frame

pytestmark = pytest.mark.usefixtures("single_thread")

CHART = 1 / math.sqrt(2)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _special_edges(dtype=torch.float64) -> torch.Tensor:
    """The axes, edges 1e-9 off +-y, and edges just inside either side of the chart boundary."""
    eye = torch.eye(3, dtype=dtype)
    off_y = torch.tensor(
        [
            [1e-9, 1.0, 0.0],
            [0.0, 1.0, 1e-9],
            [-1e-9, 1.0, 1e-9],
            [1e-9, -1.0, 0.0],
            [0.0, -1.0, -1e-9],
            [1e-9, -1.0, 1e-9],
        ],
        dtype=dtype,
    )
    s = math.sin(math.pi / 4 - 1e-3)
    c = math.cos(math.pi / 4 - 1e-3)
    near_boundary = torch.tensor([[c, s, 0.0], [s, c, 0.0], [0.0, -c, s], [0.0, -s, c]], dtype=dtype)
    return torch.cat([eye, -eye, off_y, near_boundary, 3.7 * eye[1:2], 0.2 * eye[0:1]])


def _random_edges(n: int, seed: int) -> torch.Tensor:
    """Random edges of lengths ~0.3..3, kept 1e-3 away from the chart boundary |n_y| = 1/sqrt(2)
    (the frame's roll jumps there, so finite differences must not straddle it)."""
    g = _gen(seed)
    v = torch.randn(3 * n, 3, dtype=torch.float64, generator=g)
    v = v * (0.3 + 2.7 * torch.rand(3 * n, 1, dtype=torch.float64, generator=g))
    ny = (v[:, 1] / v.norm(dim=-1)).abs()
    return v[(ny - CHART).abs() > 1e-3][:n]


def _all_edges() -> torch.Tensor:
    return torch.cat([_random_edges(60, seed=0), _special_edges()])


# ------------------------------------------------------------------------------------ rotation


def test_rotation_carries_edge_onto_y():
    v = _all_edges()
    f = edge_frame(v, lmax=2)
    R = f.rotation
    assert R.shape == (v.shape[0], 3, 3)
    expected = v.norm(dim=-1, keepdim=True) * torch.tensor([0.0, 1.0, 0.0], dtype=v.dtype)
    assert (torch.einsum("eij,ej->ei", R, v) - expected).abs().max() <= 1e-12
    assert (R @ R.transpose(-1, -2) - torch.eye(3, dtype=v.dtype)).abs().max() <= 1e-12
    assert (torch.linalg.det(R) - 1).abs().max() <= 1e-12
    assert bool(f.valid.all())
    # the chart flag is set exactly where |n_y| > 1/sqrt(2)
    ny = (v[:, 1] / v.norm(dim=-1)).abs()
    assert torch.equal(f.chart, ny > CHART)


def test_frames_of_rotated_edges_differ_by_a_roll_about_y():
    v = _all_edges()
    Q = o3.rand_matrix(dtype=torch.float64, generator=_gen(1))
    R_v = edge_frame(v, 1).rotation
    R_qv = edge_frame(v @ Q.T, 1).rotation
    roll = R_qv @ Q @ R_v.transpose(-1, -2)  # must fix e_y
    assert (roll[:, :, 1] - torch.tensor([0.0, 1.0, 0.0], dtype=v.dtype)).abs().max() <= 1e-12


# ----------------------------------------------------------------------------------- D rows


@pytest.mark.parametrize("lmax", [6, 24])
def test_wigner_rows_equal_full_D_of_rotation(lmax):
    v = _all_edges()
    f = edge_frame(v, lmax)
    assert f.lmax == lmax and f.mmax == lmax and f.num_edges == v.shape[0]
    blocks = f.wigner_blocks()
    assert len(blocks) == lmax + 1
    ls = range(lmax + 1) if lmax <= 6 else (0, 1, 2, 7, 12, 17, 23, 24)
    for l in ls:
        D = o3.wigner_D_from_matrix(l, f.rotation)
        assert blocks[l].shape == (v.shape[0], 2 * l + 1, 2 * l + 1)
        assert (blocks[l] - D).abs().max() <= 1e-10, l
    # D^1 of the frame is the frame's rotation matrix itself
    assert (blocks[1] - f.rotation).abs().max() <= 1e-13


def test_wigner_rows_rotate_Y_of_edge_onto_Y_of_y():
    v = _all_edges()
    lmax = 24
    f = edge_frame(v, lmax)
    Y_v = o3.spherical_harmonics_blocks(lmax, v, True, "component")
    Y_y = o3.spherical_harmonics_blocks(lmax, torch.tensor([[0.0, 1.0, 0.0]], dtype=v.dtype), True, "component")
    for l in range(lmax + 1):
        rotated = torch.einsum("eij,ej->ei", f.wigner_rows(l), Y_v[l])
        assert (rotated - Y_y[l]).abs().max() <= 1e-10, l


@pytest.mark.parametrize("mmax", [0, 1, 3])
def test_mmax_keeps_only_rows_with_small_m(mmax):
    v = _all_edges()
    lmax = 8
    full = edge_frame(v, lmax)
    cut = edge_frame(v, lmax, mmax=mmax)
    assert cut.mmax == mmax
    assert torch.equal(cut.rotation, full.rotation)
    for l in range(lmax + 1):
        k = min(l, mmax)
        rows = cut.wigner_rows(l)
        assert cut.rows(l) == 2 * k + 1
        assert rows.shape == (v.shape[0], 2 * k + 1, 2 * l + 1)
        assert (rows - full.wigner_rows(l)[:, l - k : l + k + 1]).abs().max() <= 1e-13, l


def test_dtype_follows_input():
    f = edge_frame(torch.randn(5, 3, generator=_gen(2)), lmax=3)
    assert f.rotation.dtype == torch.float32
    assert all(b.dtype == torch.float32 for b in f.wigner_blocks())


# ---------------------------------------------------------------------------------- gradients


def _scalar_per_edge(
    v: torch.Tensor, lmax: int, mmax: int, weights: list[torch.Tensor], w_rot: torch.Tensor
) -> torch.Tensor:
    """A fixed random linear functional of every wigner row and of the rotation, per edge: (E,)."""
    f = edge_frame(v, lmax, mmax=mmax)
    out = (f.rotation * w_rot).sum((-1, -2))
    for l in range(lmax + 1):
        out = out + (f.wigner_rows(l) * weights[l]).sum((-1, -2))
    return out


@pytest.mark.parametrize("lmax,mmax", [(6, 6), (10, 2)])
def test_gradients_equal_central_differences(lmax, mmax):
    v = _all_edges()
    g = _gen(3)
    weights = [torch.randn(2 * min(l, mmax) + 1, 2 * l + 1, dtype=v.dtype, generator=g) for l in range(lmax + 1)]
    w_rot = torch.randn(3, 3, dtype=v.dtype, generator=g)

    x = v.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_scalar_per_edge(x, lmax, mmax, weights, w_rot).sum(), x)
    assert bool(torch.isfinite(grad).all())

    # edges are independent: perturb one coordinate of every edge at once
    h = 1e-6
    fd = torch.empty_like(v)
    with torch.no_grad():
        for k in range(3):
            step = torch.zeros_like(v)
            step[:, k] = h
            f_plus = _scalar_per_edge(v + step, lmax, mmax, weights, w_rot)
            f_minus = _scalar_per_edge(v - step, lmax, mmax, weights, w_rot)
            fd[:, k] = (f_plus - f_minus) / (2 * h)
    # the derivative scales like 1 / |v|: compare relative to the gradient's size per edge
    scale = grad.norm(dim=-1, keepdim=True).clamp(min=1)
    err = ((grad - fd) / scale).abs().max(dim=-1).values
    assert err.max() <= 1e-6, (err.max(), v[err.argmax()])


def test_gradcheck_at_poles_and_random_edges():
    v = torch.cat([_random_edges(2, seed=4), _special_edges()[3:10]]).requires_grad_(True)

    def fn(x):
        f = edge_frame(x, 2, mmax=1)
        return (f.rotation, *f.wigner_blocks())

    assert torch.autograd.gradcheck(fn, (v,), eps=1e-6, atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------------------------- float32


def test_float32_accuracy():
    """float32 frames against float64 frames of the same (float32) edges."""
    v32 = torch.randn(1000, 3, generator=_gen(5))
    v32 = torch.cat([v32, _special_edges(torch.float32)])
    err = {}
    for l in (12, 24):
        f32 = edge_frame(v32, l)
        f64 = edge_frame(v32.double(), l)
        err[l] = float((f32.wigner_rows(l).double() - f64.wigner_rows(l)).abs().max())
        err["rotation"] = float((f32.rotation.double() - f64.rotation).abs().max())
    # measured on 1,000 random edges + the special edges: l = 12: 9.4e-7, l = 24: 1.9e-6,
    # rotation: 1.5e-7 (no angles are formed, so poles cost nothing extra)
    assert err[12] <= 5e-6, err
    assert err[24] <= 1e-5, err
    assert err["rotation"] <= 1e-6, err


# ----------------------------------------------------------------------------------- bad input


def test_zero_length_edges():
    v = _random_edges(5, seed=6)
    v[2] = 0.0
    with pytest.raises(
        ValueError, match=r"edge_vec has 1 zero-length edge\(s\) \(first at edge 2\).*mask_zero_edges=True"
    ):
        check_edge_vectors(v)
    # edge_frame reads no values: without masking the zero-length edge's frame is non-finite, the others exact
    plain = edge_frame(v, 4, mmax=2)
    assert plain.valid.tolist() == [True, True, False, True, True]
    assert not bool(torch.isfinite(plain.rotation[2]).all()) and bool(
        torch.isfinite(plain.rotation[[0, 1, 3, 4]]).all()
    )

    x = v.clone().requires_grad_(True)
    f = edge_frame(x, 4, mmax=2, mask_zero_edges=True)
    assert f.valid.tolist() == [True, True, False, True, True]
    outs = [f.rotation, *f.wigner_blocks()]
    assert all(bool(torch.isfinite(o).all()) for o in outs)
    # the masked edge still gets a proper rotation, and valid edges are unaffected by masking
    assert (f.rotation[2] @ f.rotation[2].T - torch.eye(3, dtype=v.dtype)).abs().max() <= 1e-12
    keep = [0, 1, 3, 4]
    ref = edge_frame(v[keep], 4, mmax=2)
    assert torch.equal(f.rotation[keep], ref.rotation) and torch.equal(plain.rotation[keep], ref.rotation)
    # gradients are finite, and zero for the masked edge
    (grad,) = torch.autograd.grad(sum(o.sum() for o in outs), x)
    assert bool(torch.isfinite(grad).all())
    assert torch.equal(grad[2], torch.zeros(3, dtype=v.dtype))


def test_bad_input_errors():
    v = _random_edges(4, seed=7)
    bad = v.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"edge_vec contains NaN or infinite entries \(first at edge 1\)"):
        check_edge_vectors(bad)
    bad[1, 0] = float("inf")
    with pytest.raises(ValueError, match="vec contains NaN or infinite"):
        check_edge_vectors(bad, name="vec")
    with pytest.raises(ValueError, match=r"edge_vec must have shape \(E, 3\), got \(4, 2\)"):
        check_edge_vectors(v[:, :2])
    with pytest.raises(TypeError, match="edge_vec must be a floating-point tensor"):
        check_edge_vectors(v.long())
    check_edge_vectors(v)
    check_edge_vectors(v[:0])
    with pytest.raises(ValueError, match="rows_lmax must be an int >= -1, got -2"):
        edge_frame(v, 2, rows_lmax=-2)
    with pytest.raises(ValueError, match="rows_lmax must be an int >= -1, got True"):
        edge_frame(v, 2, rows_lmax=True)
    with pytest.raises(ValueError, match=r"edge_vec must have shape \(E, 3\), got \(4, 2\)"):
        edge_frame(v[:, :2], 2)
    with pytest.raises(ValueError, match=r"edge_vec must have shape \(E, 3\), got \(3,\)"):
        edge_frame(v[0], 2)
    with pytest.raises(TypeError, match="floating-point"):
        edge_frame(v.long(), 2)
    with pytest.raises(ValueError, match="lmax must be an int >= 0, got -1"):
        edge_frame(v, -1)
    with pytest.raises(ValueError, match="lmax must be an int >= 0, got 2.0"):
        edge_frame(v, 2.0)
    with pytest.raises(ValueError, match="mmax must be an int in 0..lmax=2, got 3"):
        edge_frame(v, 2, mmax=3)
    with pytest.raises(ValueError, match="mmax must be an int in 0..lmax=2, got -1"):
        edge_frame(v, 2, mmax=-1)
    f = edge_frame(v, 2)
    with pytest.raises(ValueError, match=r"l must be in 0..2, got 3"):
        f.wigner_rows(3)
    # an empty batch is fine
    empty = edge_frame(v[:0], 3)
    assert empty.num_edges == 0 and empty.wigner_rows(3).shape == (0, 7, 7)


# ------------------------------------------------------------------------------------ tracing


@pytest.mark.parametrize("mask_zero_edges", [False, True])
def test_edge_frame_traces_into_one_graph(mask_zero_edges):
    """No host synchronisation and no branch on a value: torch.compile(fullgraph=True) traces edge_frame
    whole (a graph break would be an error) and gives eager mode's numbers bit for bit."""
    import torch._dynamo

    torch._dynamo.reset()
    v = _all_edges()
    v[3] = 0.0

    def frame_tensors(vec):
        f = edge_frame(vec, 4, 2, mask_zero_edges=mask_zero_edges, rows_lmax=3)
        return (f.rotation, f.cos_alpha, f.sin_alpha, f.cos_beta, f.sin_beta, f.chart, f.valid, *f.standard_rows)

    compiled = torch.compile(frame_tensors, fullgraph=True, backend="eager", dynamic=False)
    got, ref = compiled(v), frame_tensors(v)
    assert len(got) == len(ref) == 11
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype and torch.equal(a.nan_to_num(), b.nan_to_num())  # unmasked: NaN at edge 3
    torch._dynamo.reset()
