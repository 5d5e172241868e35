"""TFNConv against e3nn's convolution, SO2Conv.from_tfn against TFNConv, and equivariance of both."""

from __future__ import annotations

import math

import pytest
import torch

from escn.nn import SO2Conv, TFNConv
from escn.o3 import Irreps, matrix_x
from escn.testing import CARTESIAN_POINTS, equivariance_error

TOL = 1e-10


pytestmark = pytest.mark.usefixtures("float64_default")  # shared fixture in conftest.py


def natural(L: int, mul: int = 1) -> str:
    return "+".join(f"{mul}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(L + 1))


def random_graph(num_nodes: int, num_edges: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(num_nodes, 3, generator=g)
    src = torch.randint(0, num_nodes, (num_edges,), generator=g)
    dst = torch.randint(0, num_nodes, (num_edges,), generator=g)
    keep = src != dst
    return pos, src[keep], dst[keep]


# ---------------------------------------------------------------- TFNConv == e3nn's guide convolution
@pytest.mark.parametrize(
    "irreps_in, irreps_out, lmax_filter",
    [
        ("10x0e + 10x1e", "20x0e + 10x1e", 2),  # the guide's own
        ("10x0e + 10x1e", "20x0e + 10x1e", 1),
        ("3x0e + 2x1o + 2x2e", "2x0e + 3x1o + 1x2e + 1x3o", 3),
        ("2x0o + 1x1e + 2x3e", "1x0e + 2x1e + 1x2o", 4),
        ("4x0e + 4x0o + 2x1o + 2x1e + 1x2e", "2x0e + 2x0o + 2x1o + 2x1e + 1x2o", 4),
    ],
)
def test_tfn_equals_e3nn_guide_convolution(irreps_in, irreps_out, lmax_filter):
    e3nn_o3 = pytest.importorskip("e3nn.o3")
    torch.manual_seed(0)
    pos, src, dst = random_graph(20, 120)
    edge_vec = pos[dst] - pos[src]
    tp = e3nn_o3.FullyConnectedTensorProduct(
        irreps_in, e3nn_o3.Irreps.spherical_harmonics(lmax_filter), irreps_out, shared_weights=False
    )
    conv = TFNConv(irreps_in, irreps_out, lmax_filter, avg_num_neighbors=6.0)
    assert conv.weight_numel == tp.weight_numel
    x = Irreps(irreps_in).randn(20, -1)
    w = torch.randn(len(src), tp.weight_numel)
    sh = e3nn_o3.spherical_harmonics(
        e3nn_o3.Irreps.spherical_harmonics(lmax_filter), edge_vec, True, normalization="component"
    )
    expected = torch.zeros(20, tp.irreps_out.dim).index_add_(0, dst, tp(x[src], sh, w)) / math.sqrt(6.0)
    got = conv(x, src, dst, edge_vec, w)
    assert (got - expected).abs().max() <= TOL


# ---------------------------------------------------------------- SO2Conv.from_tfn == TFNConv
MIXED = [
    ("8x0e + 4x0o + 8x1o + 4x1e + 2x2e", "3x0e + 2x0o + 2x1o + 2x1e + 1x2e + 1x2o", 4),
    ("2x0e + 1x1o + 1x2e + 1x3o + 1x4e + 1x5o + 1x6e", "1x0e + 1x1e + 1x2o + 1x3e + 1x4o + 1x5e + 1x6e", 12),
    ("1x6e + 1x5o + 1x3e", "1x6o + 1x4e + 1x0e + 1x2e", 6),  # small lmax_filter: a TFN subspace
    ("2x1o + 1x2o", "2x1e + 1x2o + 1x3o", 2),
]


# both evaluations of TFN-layout weights: the compiled kernel (escn.native) and PyTorch ops
EXECUTORS = [pytest.param("native", id="native"), pytest.param("torch", id="torch")]


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("irreps_in, irreps_out, lmax_filter", MIXED)
def test_so2_from_tfn_equals_tfn_values_and_gradients(irreps_in, irreps_out, lmax_filter, executor):
    torch.manual_seed(1)
    pos, src, dst = random_graph(10, 50, seed=1)
    tfn = TFNConv(irreps_in, irreps_out, lmax_filter)
    so2 = SO2Conv.from_tfn(tfn, executor=executor)
    assert so2.weight_numel == tfn.weight_numel
    x = Irreps(irreps_in).randn(10, -1).requires_grad_()
    v = (pos[dst] - pos[src]).requires_grad_()
    w = torch.randn(len(src), tfn.weight_numel, requires_grad=True)
    a = tfn(x, src, dst, v, w)
    b = so2(x, src, dst, v, w)
    assert a.abs().max() > 0.1  # a nontrivial function
    assert (a - b).abs().max() <= TOL
    cot = torch.randn_like(a)
    ga = torch.autograd.grad(a, (x, v, w), cot)
    gb = torch.autograd.grad(b, (x, v, w), cot)
    for name, p, q in zip(("x", "edge_vec", "weight"), ga, gb):
        assert (p - q).abs().max() <= 1e-8, name


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize(
    "irreps_in, irreps_out, lmax_filter",
    [("4x0e + 4x1o + 4x2e", "4x0e + 4x1o + 4x2e", 4), MIXED[0]],  # one weight-block size, and several
)
def test_so2_from_tfn_double_backward_equals_tfn(irreps_in, irreps_out, lmax_filter, executor):
    """Force training differentiates gradients: the second derivatives of SO2Conv.from_tfn equal TFN's."""
    torch.manual_seed(2)
    pos, src, dst = random_graph(8, 30, seed=2)
    tfn = TFNConv(irreps_in, irreps_out, lmax_filter)
    so2 = SO2Conv.from_tfn(tfn, executor=executor)
    x = Irreps(irreps_in).randn(8, -1).requires_grad_()
    v = (pos[dst] - pos[src]).requires_grad_()
    w = torch.randn(len(src), tfn.weight_numel, requires_grad=True)
    cot = torch.randn(8, Irreps(irreps_out).dim)
    probe = torch.randn_like(v)
    second = []
    for conv in (tfn, so2):
        (gv,) = torch.autograd.grad((conv(x, src, dst, v, w) * cot).sum(), v, create_graph=True)
        second.append(torch.autograd.grad((gv * probe).sum(), (x, v, w)))
    for name, p, q in zip(("x", "edge_vec", "weight"), *second):
        assert p.abs().max() > 1e-3, name
        assert (p - q).abs().max() <= 1e-9, name


def test_so2_weight_space_equals_tfn_weight_space_with_unlimited_filter():
    """With lmax_filter >= l_in + l_out the TFN -> SO(2) weight map is square and invertible:
    both parametrise the same functions (a square linear map per (l1, l3))."""
    irreps_in, irreps_out = "2x0e + 1x0o + 1x1o + 2x1e + 1x2e", "1x0e + 1x0o + 2x1o + 1x1e + 1x2o"
    tfn = TFNConv(irreps_in, irreps_out, lmax_filter=4)
    so2 = SO2Conv.from_tfn(tfn)
    free = SO2Conv(irreps_in, irreps_out)
    assert free.weight_numel == tfn.weight_numel
    T = so2._tfn_to_so2(torch.eye(tfn.weight_numel))  # (n_tfn, n_so2)
    assert T.shape == (tfn.weight_numel, free.weight_numel)
    s = torch.linalg.svdvals(T)
    assert s.min() > 1e-3 * s.max()


def test_so2_reduction_sparsity_facts():
    """The facts the SO(2) layer rests on, in this basis: Y^l(y) is zero except at m = 0, and the 3j
    slice at m2 = 0 couples m3 = m1 (even l-sum, equal for +-m) or m3 = -m1 (odd, opposite signs)."""
    from escn.o3 import spherical_harmonics, wigner_3j

    for l in range(9):
        y = spherical_harmonics(l, torch.tensor([0.0, 1.0, 0.0]), True, "component")
        assert (y[torch.arange(2 * l + 1) != l].abs().max() if l else torch.tensor(0.0)) <= 1e-14
    for l1 in range(5):
        for l3 in range(5):
            for lf in range(abs(l1 - l3), l1 + l3 + 1):
                C = wigner_3j(l1, lf, l3)[:, lf, :]  # (m1, m3)
                for m1 in range(-l1, l1 + 1):
                    for m3 in range(-l3, l3 + 1):
                        v = C[l1 + m1, l3 + m3]
                        if (l1 + lf + l3) % 2 == 0:
                            if m3 != m1:
                                assert abs(v) < 1e-14
                            elif abs(m1) <= min(l1, l3):
                                assert abs(v - C[l1 - m1, l3 - m3]) < 1e-14
                        else:
                            if m3 != -m1 or m1 == 0:
                                assert abs(v) < 1e-14
                            else:
                                assert abs(v + C[l1 - m1, l3 - m3]) < 1e-14


# ---------------------------------------------------------------- equivariance
def conv_on_positions(conv, src, dst, weight):
    """A function of (node features, positions) so that every input is transformed by the helper."""

    def fn(x, pos):
        return conv(x, src, dst, pos[dst] - pos[src], weight)

    return fn


@pytest.mark.parametrize("L", list(range(1, 13)))
@pytest.mark.parametrize("mmax", ["L", 2])
def test_so2_conv_equivariance(L, mmax):
    mm = L if mmax == "L" else min(2, L)
    irreps_in = natural(L) + "+1x0o+1x1e"  # natural and pseudo classes together
    irreps_out = natural(L) + "+1x0o+1x1e+1x2o"
    pos, src, dst = random_graph(6, 24, seed=L)
    for shared in (False, True):
        conv = SO2Conv(irreps_in, irreps_out, mmax=mm, shared_weights=shared)
        w = torch.randn(len(src), conv.weight_numel)
        x = Irreps(irreps_in).randn(6, -1)
        errs = equivariance_error(
            conv_on_positions(conv, src, dst, w), [x, pos], [irreps_in, CARTESIAN_POINTS], irreps_out
        )
        assert max(errs.values()) <= TOL, (shared, errs)
        # a pseudo-scalar output must flip sign under inversion: check the helper sees parity at all
        assert conv(x, src, dst, pos[dst] - pos[src], w).abs().max() > 1e-3


@pytest.mark.parametrize("L", [1, 2, 3, 4])
def test_tfn_conv_equivariance(L):
    irreps_in = natural(L, 2) + "+1x1e"
    irreps_out = natural(L) + "+1x0o"
    pos, src, dst = random_graph(6, 20, seed=L)
    conv = TFNConv(irreps_in, irreps_out, lmax_filter=L)
    w = torch.randn(len(src), conv.weight_numel)
    x = Irreps(irreps_in).randn(6, -1)
    errs = equivariance_error(conv_on_positions(conv, src, dst, w), [x, pos], [irreps_in, CARTESIAN_POINTS], irreps_out)
    assert max(errs.values()) <= TOL, errs


def test_parity_matters():
    """Declaring the output with the wrong parity must show a reflection error: the layer's O(3)
    behaviour is real, not an artefact of the check."""
    pos, src, dst = random_graph(6, 20)
    conv = SO2Conv("2x0e+1x1o", "1x0o+1x1e+1x0e")
    w = torch.randn(len(src), conv.weight_numel)
    x = Irreps("2x0e+1x1o").randn(6, -1)
    errs = equivariance_error(
        conv_on_positions(conv, src, dst, w), [x, pos], ["2x0e+1x1o", CARTESIAN_POINTS], "1x0e+1x1o+1x0e"
    )
    assert errs["rotation"] <= TOL and errs["reflection"] > 1e-2


@pytest.mark.parametrize("direction", [1.0, -1.0])
@pytest.mark.parametrize("offset", [0.0, 1e-9])
def test_edges_on_and_next_to_the_poles(direction, offset):
    """Rotate a generic configuration so that one edge lies exactly on (or 1e-9 from) +-y:
    the output equals the rotated generic output and gradients stay finite."""
    L = 4
    irreps = natural(L) + "+1x1e"
    pos, src, dst = random_graph(5, 16, seed=3)
    conv = SO2Conv(irreps, irreps, mmax=2)
    w = torch.randn(len(src), conv.weight_numel)
    x = Irreps(irreps).randn(5, -1)
    e = pos[dst[0]] - pos[src[0]]
    # rotation taking e onto direction * y (plus a small tilt about x)
    target = torch.tensor([0.0, direction, 0.0])
    u = e / e.norm()
    axis = torch.linalg.cross(u, target)
    s, c = axis.norm(), (u * target).sum()
    K = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]]) / s
    R = torch.eye(3) + s * K + (1 - c) * K @ K
    R = matrix_x(torch.tensor(offset)) @ R
    pos_r = pos @ R.T
    v_r = (pos_r[dst] - pos_r[src]).requires_grad_()
    assert (v_r[0] / v_r[0].norm() - target).abs().max() <= 2e-9
    D_in = Irreps(irreps).D_from_matrix(R)
    out_r = conv(x @ D_in.T, src, dst, v_r, w)
    out = conv(x, src, dst, pos[dst] - pos[src], w)
    assert (out_r - out @ D_in.T).abs().max() <= TOL
    (g,) = torch.autograd.grad(out_r.pow(2).sum(), v_r)
    assert torch.isfinite(g).all()


def test_shared_weights_are_parameters_and_follow_dtype():
    conv = SO2Conv("4x0e+2x1o+1x2e", "4x0e+2x1o+1x2e", mmax=1, shared_weights=True)
    names = [n for n, _ in conv.named_parameters()]
    assert names == ["weight"]
    conv32 = conv.float()
    pos, src, dst = random_graph(5, 12)
    x = Irreps("4x0e+2x1o+1x2e").randn(5, -1).float()
    out = conv32(
        x, src, dst, (pos[dst] - pos[src]).float(), torch.ones(len(src), conv.weight_numel, dtype=torch.float32)
    )
    assert out.dtype == torch.float32


def test_float32_matches_float64():
    """float32 measured max relative deviation ~1e-6 at L = 6 (stated bound 1e-4)."""
    irreps = natural(6, 2)
    pos, src, dst = random_graph(10, 60)
    conv = SO2Conv(irreps, irreps)
    w = torch.randn(len(src), conv.weight_numel)
    x = Irreps(irreps).randn(10, -1)
    ref = conv(x, src, dst, pos[dst] - pos[src], w)
    c32 = SO2Conv(irreps, irreps).float()
    out = c32(x.float(), src, dst, (pos[dst] - pos[src]).float(), w.float())
    rel = ((out.double() - ref).abs().max() / ref.abs().max()).item()
    assert rel <= 1e-4, rel


# ---------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    conv = SO2Conv("2x0e+1x1o", "1x0e+1x1o")
    pos, src, dst = random_graph(4, 10)
    v = pos[dst] - pos[src]
    x = Irreps("2x0e+1x1o").randn(4, -1)
    w = torch.randn(len(src), conv.weight_numel)
    with pytest.raises(ValueError, match="x must have shape"):
        conv(x[:, :4], src, dst, v, w)
    with pytest.raises(ValueError, match="edge_src holds indices outside"):
        conv(x, src + 10, dst, v, w)
    with pytest.raises(ValueError, match="edge_dst holds indices outside"):
        conv(x, src, dst - 10, v, w)
    with pytest.raises(ValueError, match="weight must have shape"):
        conv(x, src, dst, v, w[:, :-1])
    with pytest.raises(ValueError, match="edge_vec must have shape"):
        conv(x, src, dst, v[:-1], w)
    with pytest.raises(TypeError, match="edge_src must be an int64"):
        conv(x, src.double(), dst, v, w)
    with pytest.raises(ValueError, match="zero-length"):
        conv(x, src, dst, torch.zeros_like(v), w)
    with pytest.raises(ValueError, match="NaN"):
        conv(x, src, dst, v * float("nan"), w)
    with pytest.raises(ValueError, match="parity must be"):
        SO2Conv("2x0q", "1x0e")
    with pytest.raises(ValueError, match="mmax"):
        SO2Conv("1x0e", "1x0e", mmax=-1)
    with pytest.raises(ValueError, match="lmax_filter"):
        TFNConv("1x0e", "1x0e", lmax_filter=-2)
    with pytest.raises(TypeError, match="TFNConv"):
        SO2Conv.from_tfn(conv)  # type: ignore[arg-type]


@pytest.mark.parametrize("shared", [False, True])
def test_so2_conv_mmax_zero_is_equivariant_and_nontrivial(shared):
    """mmax = 0 keeps only m = 0 in the edge frame (the cheapest eSCN setting): still exactly
    O(3)-equivariant, and l > 0 outputs are still produced (by rotating back)."""
    irreps = natural(4, 2) + "+1x1e+1x0o"
    pos, src, dst = random_graph(6, 24, seed=7)
    conv = SO2Conv(irreps, irreps, mmax=0, shared_weights=shared)
    w = torch.randn(len(src), conv.weight_numel)
    x = Irreps(irreps).randn(6, -1)
    errs = equivariance_error(conv_on_positions(conv, src, dst, w), [x, pos], [irreps, CARTESIAN_POINTS], irreps)
    assert max(errs.values()) <= TOL, errs
    out = conv(x, src, dst, pos[dst] - pos[src], w)
    l4 = Irreps(irreps).slices()[4]
    assert out[:, l4].abs().max() > 1e-3


@pytest.mark.parametrize("layer", ["so2", "shared", "tfn_layout", "tfn"])
def test_message_plus_index_add_equals_forward(layer):
    """``message`` (per-edge messages for custom aggregation, e.g. torch-scatter) sums to ``forward``."""
    irreps_in, irreps_out = "3x0e+2x1o+1x1e+1x2e+1x3o", "2x0e+1x0o+2x1o+1x2e+1x3o"
    if layer == "so2":
        conv = SO2Conv(irreps_in, irreps_out, mmax=2)
    elif layer == "shared":
        conv = SO2Conv(irreps_in, irreps_out, shared_weights=True)
    elif layer == "tfn_layout":
        conv = SO2Conv.from_tfn(TFNConv(irreps_in, irreps_out, 3))
    else:
        conv = TFNConv(irreps_in, irreps_out, 3)
    pos, src, dst = random_graph(8, 40, seed=11)
    # include edges exactly on +-y so both charts are exercised
    pos[1] = pos[0] + torch.tensor([0.0, 0.7, 0.0])
    pos[2] = pos[0] + torch.tensor([0.0, -0.4, 0.0])
    src = torch.cat([src, torch.tensor([0, 0])])
    dst = torch.cat([dst, torch.tensor([1, 2])])
    v = pos[dst] - pos[src]
    x = Irreps(irreps_in).randn(8, -1)
    w = torch.randn(len(src), conv.weight_numel)
    out = conv(x, src, dst, v, w)
    msgs = conv.message(x[src], v, w)
    assert msgs.shape == (len(src), Irreps(irreps_out).dim)
    assert (torch.zeros_like(out).index_add_(0, dst, msgs) - out).abs().max() <= TOL


def test_convolutions_with_no_edges_return_zeros():
    irreps = "4x0e + 4x1o + 2x2e"
    tfn = TFNConv(irreps, irreps, 2)
    layers = [(tfn, tfn.weight_numel), (SO2Conv.from_tfn(tfn), tfn.weight_numel)]
    shared = SO2Conv(irreps, irreps, mmax=1, shared_weights=True)
    layers.append((shared, shared.weight_numel))
    none = torch.zeros(0, dtype=torch.long)
    for conv, numel in layers:
        x = Irreps(irreps).randn(3, -1).requires_grad_()
        out = conv(x, none, none, torch.zeros(0, 3), torch.zeros(0, numel))
        assert out.shape == (3, Irreps(irreps).dim) and out.abs().max() == 0.0
        out.sum().backward()
        assert x.grad.abs().max() == 0.0


@pytest.mark.parametrize("executor", EXECUTORS)
def test_tfn_weight_map_in_the_edge_frame_is_differentiable_twice(executor):
    """Both evaluations of TFN-layout weights in the edge frame (the compiled kernel; PyTorch ops with weight
    columns regrouped per output, one batched matmul each) pass gradcheck and gradgradcheck w.r.t. both the
    edge-frame input and the weights, with unequal multiplicities and an output entry that no path reaches."""
    tfn = TFNConv("2x0e + 1x1o + 1x2e", "1x0e + 2x1o + 1x3o + 1x0o", lmax_filter=1)
    layer = SO2Conv.from_tfn(tfn, executor=executor).double()
    assert [len(ks) for ks in layer._paths_into][-1] == 0  # 0o: no path with filters up to l = 1 reaches it
    g = torch.Generator().manual_seed(3)
    rot = torch.randn(3, layer.rot_in.rot_dim, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(3, tfn.weight_numel, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(layer.frame_map, (rot, w))
    assert torch.autograd.gradgradcheck(layer.frame_map, (rot, w))
