"""torch.func transforms (grad, jacrev, vmap and their compositions) over the layers and the energy model on both
executors, and over the compiled operators themselves: float64 results equal to torch.autograd on the "torch"
executor (or per-sample loops) to 1e-10, relative to max(1, |reference|)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.func import grad, jacrev, jvp, vmap

from escn import native
from escn.data import AtomsGraph, collate
from escn.models.escn import ESCN
from escn.nn import SO2Conv, TFNConv
from escn.nn.edge_rotation import EdgeRotation
from escn.nn.functional import silu
from escn.o3 import Irreps
from escn.o3.edge_frame import edge_frame

pytestmark = pytest.mark.usefixtures("float64_default", "single_thread")

EXECUTORS = ["native", "torch"]
TOL = 1e-10
IRREPS_IN, IRREPS_OUT = "2x0e + 2x1o + 1x2e", "2x0e + 1x1o + 1x2e"


@pytest.fixture
def no_vmap_fallback():
    """Turn off PyTorch's generic vmap fallback (a per-sample loop for operators without a vmap rule) so that an
    operator without its own rule raises under vmap instead."""
    old = torch._C._functorch._is_vmap_fallback_enabled()
    torch._C._functorch._set_vmap_fallback_enabled(False)
    try:
        yield
    finally:
        torch._C._functorch._set_vmap_fallback_enabled(old)


def _executor(executor: str) -> str:
    if executor == "native" and not native.available():
        pytest.skip(f"compiled kernels unavailable: {native.unavailable_reason()}")
    return executor


def _close(got, ref, what=""):
    got, ref = torch.as_tensor(got), torch.as_tensor(ref)
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    scale = max(float(ref.detach().abs().max()), 1.0) if ref.numel() else 1.0
    err = float((got - ref).detach().abs().max()) if ref.numel() else 0.0
    assert err <= TOL * scale, f"{what}: differs by {err:.3e} (scale {scale:.3e})"


def _graph(n: int = 5, e: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (e,), generator=g)
    dst = (src + torch.randint(1, n, (e,), generator=g)) % n
    return src, dst, torch.randn(e, 3, generator=g), g


def _conv(layout: str, executor: str) -> SO2Conv:
    torch.manual_seed(0)
    if layout == "tfn":
        return SO2Conv.from_tfn(TFNConv(IRREPS_IN, IRREPS_OUT, 2), executor=executor)
    return SO2Conv(IRREPS_IN, IRREPS_OUT, mmax=1, executor=executor)


def _model(executor: str, activation: str) -> ESCN:
    torch.manual_seed(0)
    return ESCN(
        num_atom_types=3,
        lmax=2,
        mmax=1,
        channels=4,
        num_layers=2,
        cutoff=3.0,
        num_radial=4,
        radial_hidden=8,
        activation=activation,
        executor=executor,
    )


def _batch():
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(6, 3, generator=g) * 4.0
    cell = torch.tensor([[4.0, 0.0, 0.0], [0.3, 4.2, 0.0], [0.0, 0.2, 3.9]])
    graph = AtomsGraph(pos=pos, atom_types=torch.randint(0, 3, (6,), generator=g), cell=cell)
    return collate([graph]).with_radius_graph(3.0)


# ------------------------------------------------------------------------------------------ energy model
@pytest.mark.parametrize("activation", ["gate", "s2"])
@pytest.mark.parametrize("executor", EXECUTORS)
def test_energy_gradient_by_torch_func_is_minus_the_forces(executor, activation):
    """grad and jacrev of the energy w.r.t. positions (float64) equal -forces of the torch executor's autograd."""
    batch = _batch()
    forces = _model("torch", activation).eval()(batch)["forces"]
    model = _model(_executor(executor), activation).eval()

    def energy(pos):
        return model(dataclasses.replace(batch, pos=pos), compute_forces=False)["energy"]

    _close(grad(lambda p: energy(p).sum())(batch.pos), -forces, "grad")
    _close(jacrev(energy)(batch.pos)[0], -forces, "jacrev")


@pytest.mark.parametrize("executor", ["native"])
def test_force_loss_parameter_gradient_by_torch_func(executor):
    """grad over the parameters of a force loss, the forces themselves a torch.func.grad (second-order derivative
    operators under grad(grad)): equal to a force-training step's gradients on the torch executor."""
    batch = _batch()
    target = torch.randn(batch.pos.shape, generator=torch.Generator().manual_seed(1))
    ref_model = _model("torch", "s2").train()
    ref_loss = ((ref_model(batch)["forces"] - target) ** 2).sum()
    names = [n for n, p in ref_model.named_parameters() if p.requires_grad]
    ref = dict(
        zip(
            names,
            torch.autograd.grad(ref_loss, [dict(ref_model.named_parameters())[n] for n in names], allow_unused=True),
        )
    )

    model = _model(_executor(executor), "s2").train()

    def loss(params):
        def energy(pos):
            out = torch.func.functional_call(
                model, params, (dataclasses.replace(batch, pos=pos),), {"compute_forces": False}
            )
            return out["energy"].sum()

        return ((-grad(energy)(batch.pos) - target) ** 2).sum()

    got = grad(loss)({n: p.detach() for n, p in model.named_parameters() if n in ref})
    for n in names:
        if ref[n] is not None:
            _close(got[n], ref[n], n)


# ------------------------------------------------------------------------------------------ layers
@pytest.mark.parametrize("layout", ["so2", "tfn"])
@pytest.mark.parametrize("executor", EXECUTORS)
def test_so2conv_grad_wrt_features_weights_and_edge_vectors(executor, layout):
    src, dst, vec, g = _graph()
    ref_conv, conv = _conv(layout, "torch"), _conv(layout, _executor(executor))
    x = Irreps(IRREPS_IN).randn(5, -1, generator=g)
    w = torch.randn(len(src), conv.weight_numel, generator=g)
    c = torch.randn(5, Irreps(IRREPS_OUT).dim, generator=g)

    def f(layer):
        return lambda x, w, v: (torch.sin(layer(x, src, dst, v, w)) * c).sum()

    leaves = [t.clone().requires_grad_() for t in (x, w, vec)]
    ref = torch.autograd.grad(f(ref_conv)(*leaves), leaves)
    got = grad(f(conv), argnums=(0, 1, 2))(x, w, vec)
    for name, a, b in zip(("x", "weight", "edge_vec"), got, ref):
        _close(a, b, name)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_edge_rotation_grad_and_jacrev_wrt_features_and_edge_vectors(executor):
    src, dst, vec, g = _graph()
    groups = [(0, 2), (1, 3), (2, 1)]
    ref_rot, rot = EdgeRotation(groups, 1, executor="torch"), EdgeRotation(groups, 1, executor=_executor(executor))
    x = torch.randn(len(vec), sum(M * (2 * l + 2) for l, M in groups), generator=g)

    def round_trip(r):
        def f(x, v):
            frame = edge_frame(v, 2, 1, rows_lmax=r.rows_lmax(x))
            y = r.to_frame(x, frame)
            return r.from_frame(torch.tanh(y), frame)

        return f

    leaves = [t.clone().requires_grad_() for t in (x, vec)]
    ref = torch.autograd.grad((round_trip(ref_rot)(*leaves) ** 2).sum(), leaves)
    got = grad(lambda x, v: (round_trip(rot)(x, v) ** 2).sum(), argnums=(0, 1))(x, vec)
    _close(got[0], ref[0], "x")
    _close(got[1], ref[1], "edge_vec")
    J = jacrev(lambda v: round_trip(rot)(x, v)[:3].sum(0))(vec)
    J_ref = torch.autograd.functional.jacobian(lambda v: round_trip(ref_rot)(x, v)[:3].sum(0), vec)
    _close(J, J_ref, "jacrev")


@pytest.mark.usefixtures("no_vmap_fallback")
@pytest.mark.parametrize("layout", ["so2", "tfn"])
@pytest.mark.parametrize("executor", EXECUTORS)
def test_so2conv_vmap_over_node_features_and_weights(executor, layout):
    src, dst, vec, g = _graph()
    ref_conv, conv = _conv(layout, "torch"), _conv(layout, _executor(executor))
    xs = Irreps(IRREPS_IN).randn(3, 5, -1, generator=g)
    ws = torch.randn(3, len(src), conv.weight_numel, generator=g)
    got = vmap(lambda x: conv(x, src, dst, vec, ws[0]))(xs)
    _close(got, torch.stack([ref_conv(x, src, dst, vec, ws[0]) for x in xs]), "vmap over x")
    got = vmap(lambda x, w: conv(x, src, dst, vec, w))(xs, ws)
    _close(got, torch.stack([ref_conv(x, src, dst, vec, w) for x, w in zip(xs, ws)]), "vmap over x and weights")


@pytest.mark.usefixtures("no_vmap_fallback")
@pytest.mark.parametrize("executor", EXECUTORS)
def test_edge_rotation_vmap_over_a_batch_of_rotations(executor):
    """The same features rotated into the frames of a batch of edge-vector sets (frames built inside vmap)."""
    src, dst, vec, g = _graph()
    groups = [(0, 2), (1, 3), (2, 1)]
    ref_rot, rot = EdgeRotation(groups, 1, executor="torch"), EdgeRotation(groups, 1, executor=_executor(executor))
    x = torch.randn(len(vec), sum(M * (2 * l + 2) for l, M in groups), generator=g)
    vecs = torch.randn(4, len(vec), 3, generator=g)

    def to_frame(r):
        return lambda v: r.to_frame(x, edge_frame(v, 2, 1, rows_lmax=r.rows_lmax(x)))

    _close(vmap(to_frame(rot))(vecs), torch.stack([to_frame(ref_rot)(v) for v in vecs]), "vmap over edge vectors")


@pytest.mark.parametrize("layout", ["so2", "tfn"])
@pytest.mark.parametrize("executor", EXECUTORS)
def test_nested_vmap_grad_of_a_force_loss(executor, layout):
    """Per-sample gradients w.r.t. the per-edge weights of a loss on edge-vector "forces" (grad inside: second-order
    derivative operators), as vmap(grad(.)) and as grad of a vmapped sum, against torch.autograd per sample."""
    src, dst, vec, g = _graph()
    ref_conv, conv = _conv(layout, "torch"), _conv(layout, _executor(executor))
    xs = Irreps(IRREPS_IN).randn(2, 5, -1, generator=g)
    w = torch.randn(len(src), conv.weight_numel, generator=g)

    def loss(w, x):
        f = grad(lambda v: (conv(x, src, dst, v, w) ** 2).sum())(vec)
        return (f**2).sum()

    wr = w.clone().requires_grad_()

    def ref_grad(x):
        v = vec.clone().requires_grad_()
        (f,) = torch.autograd.grad((ref_conv(x, src, dst, v, wr) ** 2).sum(), v, create_graph=True)
        return torch.autograd.grad((f**2).sum(), wr)[0]

    ref = torch.stack([ref_grad(x) for x in xs])
    _close(vmap(grad(loss), in_dims=(None, 0))(w, xs), ref, "vmap(grad)")
    _close(grad(lambda w: vmap(loss, in_dims=(None, 0))(w, xs).sum())(w), ref.sum(0), "grad(vmap)")


@pytest.mark.parametrize("executor", EXECUTORS)
def test_silu_under_grad_vmap_and_second_order(executor):
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))
    ex = _executor(executor)
    f = lambda t: silu(t, ex).sum()  # noqa: E731
    ref = torch.func.grad(lambda t: torch.nn.functional.silu(t).sum())
    _close(grad(f)(x), ref(x), "grad")
    _close(vmap(grad(f))(x), vmap(ref)(x), "vmap(grad)")
    _close(vmap(lambda t: silu(t, ex))(x), torch.nn.functional.silu(x), "vmap")
    H = jacrev(grad(f))(x[0, 0])
    _close(H, torch.diag(jacrev(ref)(x[0, 0]).diagonal()), "jacrev(grad)")


# ------------------------------------------------------------------------------------------ the operators
def _rotation_args(g, E=7):
    rot = EdgeRotation([(0, 2), (1, 3), (2, 1)], 1, executor="native")
    plan = rot._native_plan
    x, y = torch.randn(E, plan.x_dim, generator=g), torch.randn(E, plan.y_dim, generator=g)
    t = [torch.randn(E, plan.lmax + 2, generator=g) for _ in range(4)]
    return x, t, y, list(plan.op_args(torch.float64))


@pytest.mark.usefixtures("no_vmap_fallback")
def test_operator_vmap_rules_equal_per_sample_calls():
    """Each operator's vmap rule, over every row operand and (loop fallback) a plan operand, equals the operator
    called per sample: bit for bit (the rows are computed as without vmap)."""
    _executor("native")
    g = torch.Generator().manual_seed(0)
    ops = torch.ops.escn
    x, t, y, plan = _rotation_args(g)
    B = 3
    xb, yb, tb = (
        torch.randn(B, *x.shape, generator=g),
        torch.randn(B, *y.shape, generator=g),
        torch.randn(B, *t[0].shape, generator=g),
    )
    mats = torch.stack([plan[1] * (1 + k) for k in range(B)])
    cases = [
        (ops.rotate_to_frame, lambda a, c, m: (a, c, *t[1:], plan[0], m, plan[2]), (xb, tb, mats)),
        (ops.rotate_from_frame, lambda a, c, m: (a, *t[:3], c, plan[0], m, plan[2]), (yb, tb, mats)),
        (
            ops.rotation_adjoint,
            lambda a, c, m: (x, *t[:2], c, t[3], a, plan[0], m, plan[2], [True, True, False]),
            (yb, tb, mats),
        ),
    ]
    for op, args, batched in cases:
        for in_dims in [(0, None, None), (None, 0, None), (0, 0, None), (1, None, None), (None, None, 0), (0, 0, 0)]:
            moved = [b.movedim(0, d) if d is not None else b[0] for b, d in zip(batched, in_dims)]
            got = vmap(lambda a, c, m: op(*args(a, c, m)), in_dims=in_dims)(*moved)
            for k in range(B):
                one = op(*args(*(b[k] if d is not None else b[0] for b, d in zip(batched, in_dims))))
                for a, b in zip(got if isinstance(got, tuple) else (got,), one if isinstance(one, tuple) else (one,)):
                    assert torch.equal(a[k], b), (op, in_dims)

    conv = _conv("tfn", "native")
    targs = conv._native_plan.op_args()
    r, w = torch.randn(B, 7, conv.rot_in.rot_dim, generator=g), torch.randn(B, 7, conv.weight_numel, generator=g)
    gy = torch.randn(B, 7, conv.rot_out.rot_dim, generator=g)
    for op, ins in [
        (ops.tfn_frame_map, (r, w)),
        (ops.tfn_frame_map_input_grad, (gy, w)),
        (ops.tfn_frame_map_weight_grad, (r, gy)),
        (ops.tfn_frame_map_backward, (gy, r, w)),
    ]:
        got = vmap(lambda *a: op(*a, *targs), in_dims=(0,) + (None,) * (len(ins) - 1))(ins[0], *(i[0] for i in ins[1:]))
        for k in range(B):
            one = op(ins[0][k], *(i[0] for i in ins[1:]), *targs)
            for a, b in zip(got if isinstance(got, tuple) else (got,), one if isinstance(one, tuple) else (one,)):
                assert torch.equal(a[k], b), op
    s = torch.randn(B, 4, 5, generator=g)
    for op, n in [(ops.silu, 1), (ops.silu_grad, 2), (ops.silu_grad2, 3), (ops.silu_grad_backward, 3)]:
        got = vmap(lambda a, *rest: op(a, *rest), in_dims=(1,) + (None,) * (n - 1))(s.movedim(0, 1), *(s[1],) * (n - 1))
        for k in range(B):
            one = op(s[k], *(s[1],) * (n - 1))
            for a, b in zip(got if isinstance(got, tuple) else (got,), one if isinstance(one, tuple) else (one,)):
                assert torch.equal(a[k], b), op


def test_forward_mode_raises_and_names_the_alternatives():
    _executor("native")
    src, dst, vec, g = _graph()
    conv = _conv("tfn", "native")
    x = Irreps(IRREPS_IN).randn(5, -1, generator=g)
    w = torch.randn(len(src), conv.weight_numel, generator=g)
    with pytest.raises(
        NotImplementedError, match=r"escn::\w+ has no forward-mode derivative.*jacrev.*executor='torch'"
    ):
        jvp(lambda x: conv(x, src, dst, vec, w), (x,), (x,))
    # the torch executor has forward mode
    ref = jvp(lambda x: _conv("tfn", "torch")(x, src, dst, vec, w), (x,), (x,))
    _close(ref[0], conv(x, src, dst, vec, w), "jvp primal")
