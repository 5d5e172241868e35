"""The compiled kernels as PyTorch operators (``torch.ops.escn.*``): opcheck (schema, autograd registration,
FakeTensor, AOT dispatch), exact derivatives of every order against the PyTorch-ops path, and tracing by
torch.compile (no graph break), make_fx, FakeTensorMode and torch.export (with a save/load round trip)."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from escn import native
from escn.native import build, rotation_kernel, tfn_kernel
from escn.nn import SO2Conv, TFNConv

TOL = 1e-12
DTYPES = [torch.float32, torch.float64]
ROTATION_OPS = ("rotate_to_frame", "rotate_from_frame", "rotation_adjoint")
TFN_OPS = ("tfn_frame_map", "tfn_frame_map_input_grad", "tfn_frame_map_weight_grad", "tfn_frame_map_backward")
# (want_from_frame, want_table_grads, want_to_frame) of escn::rotation_adjoint
ADJOINT_FLAGS = [
    (True, True, False),
    (False, True, True),
    (False, True, False),
    (True, False, True),
    (True, True, True),
]


@pytest.fixture(autouse=True)
def _native_kernels():
    if build.compiler() is None:
        pytest.skip("no C compiler")
    assert native.available(), native.unavailable_reason()


def _float64(make):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return make()
    finally:
        torch.set_default_dtype(old)


def _rotation(groups=((1, 3), (2, 2), (3, 17)), mmax=2):
    """An EdgeRotation factorised at every order (dense_lmax=-1), so its PyTorch path reads the four tables
    exactly as the kernel does (l >= 1: the m = 0 phase enters both; the PyTorch path skips it at l = 0)."""
    from escn.nn.edge_rotation import EdgeRotation

    return _float64(lambda: EdgeRotation(list(groups), mmax, dense_lmax=-1, executor="native"))


def _rotation_operands(plan, E, dtype, seed=0, extra_columns=1):
    """Features x, edge-frame rows y and four independent tables (each its own variable)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_()

    x, y = rnd(E, plan.x_dim), rnd(E, plan.y_dim)
    tables = tuple(rnd(E, plan.lmax + 1 + extra_columns) for _ in range(4))
    return x, y, tables


def _frame(tables):
    return SimpleNamespace(cos_alpha=tables[0], sin_alpha=tables[1], cos_beta=tables[2], sin_beta=tables[3])


def _tfn_layer(dtype=torch.float64):
    return _float64(
        lambda: SO2Conv.from_tfn(TFNConv("8x0e + 4x0o + 3x1o + 4x1e + 2x2e", "3x0e + 2x1o + 2x1e + 1x2e", 2))
    ).to(dtype)


def _tfn_operands(layer, E, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_()

    return rnd(E, layer.rot_in.rot_dim), rnd(E, layer.weight_numel), rnd(E, layer.rot_out.rot_dim)


def _assert_close(got, ref, tol=TOL, what=""):
    assert got is not None and ref is not None, what
    scale = max(float(ref.detach().abs().max()), 1.0)
    assert float((got - ref).detach().abs().max()) <= tol * scale, what


# ---------------------------------------------------------------------------------------------- opcheck
@pytest.mark.parametrize("dtype", DTYPES)
def test_rotation_ops_pass_opcheck(dtype):
    """Schema, autograd registration, FakeTensor shapes/strides and AOT dispatch (with dynamic shapes, forward and
    backward compared with eager) of each rotation operator, with an order 0 block and extra table columns."""
    plan = _rotation(((0, 2), (1, 3), (2, 1)), 1)._native_plan
    x, y, t = _rotation_operands(plan, 5, dtype)
    args = plan.op_args(dtype)
    cases = [
        (torch.ops.escn.rotate_to_frame.default, (x, *t, *args)),
        (torch.ops.escn.rotate_from_frame.default, (y, *t, *args)),
    ]
    cases += [(torch.ops.escn.rotation_adjoint.default, (x, *t, y, *args, list(flags))) for flags in ADJOINT_FLAGS]
    for op, op_args in cases:
        result = torch.library.opcheck(op, op_args)
        assert set(result.values()) == {"SUCCESS"}, (op, result)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tfn_ops_pass_opcheck(dtype):
    layer = _tfn_layer(dtype)
    x, w, gy = _tfn_operands(layer, 4, dtype)
    args = layer._native_plan.op_args()
    ops = torch.ops.escn
    cases = [
        (ops.tfn_frame_map.default, (x, w, *args)),
        (ops.tfn_frame_map_input_grad.default, (gy, w, *args)),
        (ops.tfn_frame_map_weight_grad.default, (x, gy, *args)),
        (ops.tfn_frame_map_backward.default, (gy, x, w, *args)),
    ]
    for op, op_args in cases:
        result = torch.library.opcheck(op, op_args)
        assert set(result.values()) == {"SUCCESS"}, (op, result)


# ------------------------------------------------------------------- derivatives vs the PyTorch-ops path
def test_rotation_ops_equal_torch_ops_to_second_order():
    """Values, gradients w.r.t. x, y and each of the four tables, and second derivatives (gradients of
    <gradient, probe>), on the operators and on EdgeRotation's PyTorch ops, float64, tables as free variables."""
    rot = _rotation()
    plan = rot._native_plan
    x, y, t = _rotation_operands(plan, 9, torch.float64, seed=1)
    g = torch.Generator().manual_seed(2)
    c_to = torch.randn(9, plan.y_dim, generator=g, dtype=torch.float64)
    c_from = torch.randn(9, plan.x_dim, generator=g, dtype=torch.float64)
    inputs = [x, y, *t]
    probes = [torch.randn(a.shape, generator=g, dtype=torch.float64) for a in inputs]
    results = []
    for use_ops in (True, False):
        if use_ops:
            to, back = rotation_kernel.rotate_to_frame(plan, x, t), rotation_kernel.rotate_from_frame(plan, y, t)
        else:
            to, back = rot._to_frame_ops(x, _frame(t)), rot._from_frame_ops(y, _frame(t))
        # to then from: every slot meets every other one
        loss = (
            (to * c_to).sum()
            + (back * c_from).sum()
            + (to.sin() * rotation_kernel.rotate_to_frame(plan, back, t)).sum()
        )
        first = torch.autograd.grad(loss, inputs, create_graph=True)
        second = torch.autograd.grad(sum((a * p).sum() for a, p in zip(first, probes)), inputs)
        results.append((to, back, *first, *second))
    assert results[1][2].abs().max() > 0.1
    for k, (a, b) in enumerate(zip(*results)):
        _assert_close(a, b, what=k)


def test_rotation_ops_third_derivatives_equal_torch_ops():
    rot = _rotation(((1, 2), (2, 1)), 1)
    plan = rot._native_plan
    x, _, t = _rotation_operands(plan, 4, torch.float64, seed=3)
    g = torch.Generator().manual_seed(4)
    cot = torch.randn(4, plan.x_dim, generator=g, dtype=torch.float64)
    p1 = [torch.randn(a.shape, generator=g, dtype=torch.float64) for a in t]
    results = []
    for use_ops in (True, False):

        def rotate(v, tables, back=False):
            if use_ops:
                return (rotation_kernel.rotate_from_frame if back else rotation_kernel.rotate_to_frame)(plan, v, tables)
            return (rot._from_frame_ops if back else rot._to_frame_ops)(v, _frame(tables))

        out = rotate(rotate(x, t) ** 2, t, back=True)
        g1 = torch.autograd.grad((out * cot).sum(), t, create_graph=True)
        g2 = torch.autograd.grad(sum((a * p).sum() for a, p in zip(g1, p1)), [x, *t], create_graph=True)
        g3 = torch.autograd.grad(sum((a * a).sum() for a in g2), [x, *t])
        results.append((*g1, *g2, *g3))
    for k, (a, b) in enumerate(zip(*results)):
        assert b.abs().max() > 1e-3, k
        _assert_close(a, b, what=k)


def test_rotation_ops_gradcheck_and_gradgradcheck():
    """float64 finite differences of each operator in every differentiable argument (order 0 block included)."""
    plan = _rotation(((0, 1), (1, 2), (2, 1)), 1)._native_plan
    x, y, t = _rotation_operands(plan, 2, torch.float64, seed=5)
    args = plan.op_args(torch.float64)
    ops = torch.ops.escn

    def to_frame(x, *t):
        return ops.rotate_to_frame(x, *t, *args)

    def from_frame(y, *t):
        return ops.rotate_from_frame(y, *t, *args)

    assert torch.autograd.gradcheck(to_frame, (x, *t))
    assert torch.autograd.gradgradcheck(to_frame, (x, *t))
    assert torch.autograd.gradcheck(from_frame, (y, *t))
    assert torch.autograd.gradgradcheck(from_frame, (y, *t))
    for flags in ADJOINT_FLAGS:

        def adjoint(x, y, *t, flags=flags):
            out = ops.rotation_adjoint(x, *t, y, *args, list(flags))
            return tuple(o for o in out if o.numel())

        assert torch.autograd.gradcheck(adjoint, (x, y, *t)), flags
        if flags in ((True, True, True), (False, True, False)):  # every term of its backward formula
            assert torch.autograd.gradgradcheck(adjoint, (x, y, *t)), flags


def test_rotation_adjoint_parts_equal_the_single_operators():
    """Each part of the fused escn::rotation_adjoint equals its own operator; parts not asked for are empty."""
    plan = _rotation()._native_plan
    x, y, t = _rotation_operands(plan, 11, torch.float64, seed=6, extra_columns=3)
    args = plan.op_args(torch.float64)
    with torch.no_grad():
        frm = torch.ops.escn.rotate_from_frame(y, *t, *args)
        to = torch.ops.escn.rotate_to_frame(x, *t, *args)
    xs = x.detach().requires_grad_()
    ts = tuple(a.detach().requires_grad_() for a in t)
    grads = torch.autograd.grad((torch.ops.escn.rotate_to_frame(xs, *ts, *args) * y.detach()).sum(), ts)
    for flags in ADJOINT_FLAGS:
        with torch.no_grad():
            out = torch.ops.escn.rotation_adjoint(x, *t, y, *args, list(flags))
        want = [flags[0], *(flags[1],) * 4, flags[2]]
        refs = [frm, *grads, to]
        for k, (o, w, r) in enumerate(zip(out, want, refs)):
            if w:
                assert (o - r).abs().max() <= TOL * r.abs().max(), (flags, k)
            else:
                assert o.shape == (0,), (flags, k)
    assert grads[0][:, plan.lmax + 1 :].abs().max() == 0  # columns past lmax: no dependence


def test_tfn_ops_equal_torch_ops_and_pass_gradcheck():
    layer = _tfn_layer()
    x, w, gy = _tfn_operands(layer, 6, torch.float64, seed=7)
    args = layer._native_plan.op_args()
    ops = torch.ops.escn
    ref = layer.set_executor("torch").frame_map(x, w)
    ref_gx, ref_gw = torch.autograd.grad(ref, (x, w), gy)
    layer.set_executor("native")
    with torch.no_grad():
        got = [
            ops.tfn_frame_map(x, w, *args),
            ops.tfn_frame_map_input_grad(gy, w, *args),
            ops.tfn_frame_map_weight_grad(x, gy, *args),
            *ops.tfn_frame_map_backward(gy, x, w, *args),
        ]
    for k, (a, b) in enumerate(zip(got, [ref, ref_gx, ref_gw, ref_gx, ref_gw])):
        assert b.abs().max() > 0.1
        _assert_close(a, b, what=k)
    layer = _float64(lambda: SO2Conv.from_tfn(TFNConv("2x0e + 1x1o + 1x2e", "1x0e + 2x1o + 1x3o", 1)))
    args = layer._native_plan.op_args()
    small = _tfn_operands(layer, 2, torch.float64, seed=8)
    fns = [
        lambda x, w, gy: ops.tfn_frame_map(x, w, *args),
        lambda x, w, gy: ops.tfn_frame_map_input_grad(gy, w, *args),
        lambda x, w, gy: ops.tfn_frame_map_weight_grad(x, gy, *args),
        lambda x, w, gy: ops.tfn_frame_map_backward(gy, x, w, *args),
    ]
    for k, fn in enumerate(fns):
        assert torch.autograd.gradcheck(fn, small), k
        assert torch.autograd.gradgradcheck(fn, small), k


# -------------------------------------------------------------------------- tracing and compilation
def _capturing_backend(graphs: list):
    """An AOT-autograd backend (runs the traced graphs eagerly) that keeps the forward and backward graphs."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def keep(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    return aot_autograd(fw_compiler=keep, bw_compiler=keep)


def _escn_ops(gm) -> set[str]:
    return {
        str(n.target).split(".")[1]
        for n in gm.graph.nodes
        if n.op == "call_function" and str(n.target).startswith("escn.")
    }


def test_compile_fullgraph_through_the_layers_keeps_the_ops_and_the_numbers():
    """torch.compile(fullgraph=True) of EdgeRotation.to_frame / from_frame and SO2Conv.frame_map (kernel paths):
    no graph break (fullgraph raises on one), the escn operators in the forward and backward graphs, and the
    values and gradients of eager mode."""
    from escn.o3.edge_frame import edge_frame

    rot = _rotation(((0, 2), (1, 3), (4, 2)), 2)
    rot.dense_lmax = 3  # the layer's default; the kernel path does not use it
    layer = _tfn_layer()
    g = torch.Generator().manual_seed(9)
    vec = torch.randn(10, 3, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(10, rot.full_dim, generator=g, dtype=torch.float64, requires_grad=True)
    r, w, _ = _tfn_operands(layer, 10, torch.float64, seed=10)
    frame = edge_frame(vec, 4, 2)
    assert rot._use_native(x, frame) and layer._use_native(r, w)

    def f(x, frame, r, w):
        back = rot.from_frame(rot.to_frame(x, frame).tanh(), frame)
        return back, layer.frame_map(r, w)

    graphs: list = []
    compiled = torch.compile(f, backend=_capturing_backend(graphs), fullgraph=True)
    got, ref = compiled(x, frame, r, w), f(x, frame, r, w)
    inputs = [x, vec, r, w]
    g_got = torch.autograd.grad(sum(o.square().sum() for o in got), inputs, retain_graph=True)
    g_ref = torch.autograd.grad(sum(o.square().sum() for o in ref), inputs)
    for k, (a, b) in enumerate(zip((*got, *g_got), (*ref, *g_ref))):
        _assert_close(a, b, what=k)
    assert len(graphs) == 2  # one forward, one backward graph
    assert _escn_ops(graphs[0]) == {"rotate_to_frame", "rotate_from_frame", "tfn_frame_map"}
    assert _escn_ops(graphs[1]) == {"rotation_adjoint", "tfn_frame_map_backward"}


@pytest.mark.parametrize("name", ROTATION_OPS + TFN_OPS)
def test_compile_fullgraph_of_each_op_forward_and_backward(name):
    """Each operator called directly under torch.compile(fullgraph=True, backend="aot_eager"), forward and
    backward, equals eager mode."""
    plan = _rotation(((0, 1), (1, 2), (2, 17)), 2)._native_plan
    x, y, t = _rotation_operands(plan, 7, torch.float64, seed=11)
    layer = _tfn_layer()
    tx, tw, tgy = _tfn_operands(layer, 7, torch.float64, seed=12)
    ra, ta = plan.op_args(torch.float64), layer._native_plan.op_args()
    op = getattr(torch.ops.escn, name)
    calls = {
        "rotate_to_frame": (lambda x, y, *t: op(x, *t, *ra), (x, y, *t)),
        "rotate_from_frame": (lambda x, y, *t: op(y, *t, *ra), (x, y, *t)),
        "rotation_adjoint": (lambda x, y, *t: op(x, *t, y, *ra, [True, True, True]), (x, y, *t)),
        "tfn_frame_map": (lambda x, w, gy: op(x, w, *ta), (tx, tw, tgy)),
        "tfn_frame_map_input_grad": (lambda x, w, gy: op(gy, w, *ta), (tx, tw, tgy)),
        "tfn_frame_map_weight_grad": (lambda x, w, gy: op(x, gy, *ta), (tx, tw, tgy)),
        "tfn_frame_map_backward": (lambda x, w, gy: op(gy, x, w, *ta), (tx, tw, tgy)),
    }
    fn, inputs = calls[name]

    def loss(*a):
        out = fn(*a)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return sum((o * o).sum() for o in out)

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    got, ref = compiled(*inputs), loss(*inputs)
    _assert_close(got, ref)
    for a, b in zip(
        torch.autograd.grad(got, inputs, allow_unused=True), torch.autograd.grad(ref, inputs, allow_unused=True)
    ):
        assert (a is None) == (b is None)
        if a is not None:
            _assert_close(a, b)


def test_fake_tensor_and_meta_tracing_give_shapes_without_running_kernels():
    """FakeTensorMode (forward and backward) and make_fx with symbolic sizes: output shapes and dtypes from the
    operators' fake implementations, the edge count symbolic in the traced graph."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    rot = _rotation(((0, 2), (1, 3)), 1)
    plan = rot._native_plan
    layer = _tfn_layer(torch.float32)
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(1000, plan.x_dim, requires_grad=True)
        t = tuple(torch.empty(1000, 4) for _ in range(4))
        y = rotation_kernel.rotate_to_frame(plan, x, t)
        (gx,) = torch.autograd.grad(y.sum(), x)
        r = torch.empty(1000, layer.rot_in.rot_dim)
        w = torch.empty(1000, layer.weight_numel, requires_grad=True)
        (gw,) = torch.autograd.grad(tfn_kernel.tfn_frame_map(layer._native_plan, r, w).sum(), w)
    assert y.shape == (1000, plan.y_dim) and y.dtype == torch.float32 and gx.shape == x.shape
    assert gw.shape == w.shape

    def f(x, ca, sa, cb, sb):
        return rotation_kernel.rotate_from_frame(
            plan, rotation_kernel.rotate_to_frame(plan, x, (ca, sa, cb, sb)), (ca, sa, cb, sb)
        )

    g = torch.Generator().manual_seed(13)
    xs = torch.randn(6, plan.x_dim, generator=g)
    ts = [torch.randn(6, 3, generator=g) for _ in range(4)]
    gm = make_fx(f, tracing_mode="symbolic", _allow_non_fake_inputs=True)(xs, *ts)  # the plan's tables: constants
    assert _escn_ops(gm) == {"rotate_to_frame", "rotate_from_frame"}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    assert isinstance(placeholders[0].meta["val"].shape[0], torch.SymInt)
    x9 = torch.randn(9, plan.x_dim, generator=g)  # another edge count through the same graph
    t9 = [torch.randn(9, 3, generator=g) for _ in range(4)]
    assert torch.equal(gm(x9, *t9), f(x9, *t9))
    # a graph traced with real tensors pickles (its code names the operators; a symbolic one keeps its shape
    # environment, which does not pickle, with or without these operators)
    again = pickle.loads(pickle.dumps(make_fx(f, _allow_non_fake_inputs=True)(xs, *ts)))
    assert _escn_ops(again) == {"rotate_to_frame", "rotate_from_frame"}
    assert torch.equal(again(x9, *t9), f(x9, *t9))

    meta = rotation_kernel.rotate_to_frame(
        plan, torch.empty(5, plan.x_dim, device="meta"), tuple(torch.empty(5, 3, device="meta") for _ in range(4))
    )
    assert meta.shape == (5, plan.y_dim) and meta.device.type == "meta"


class _RotateAndMap(torch.nn.Module):
    def __init__(self, plan, tfn_plan):
        super().__init__()
        self.plan, self.tfn_plan = plan, tfn_plan

    def forward(self, x, ca, sa, cb, sb, r, w):
        y = rotation_kernel.rotate_to_frame(self.plan, x, (ca, sa, cb, sb))
        return rotation_kernel.rotate_from_frame(self.plan, y, (ca, sa, cb, sb)), tfn_kernel.tfn_frame_map(
            self.tfn_plan, r, w
        )


def test_export_with_dynamic_edge_count_saves_loads_and_runs():
    rot = _rotation(((0, 2), (1, 3), (3, 2)), 2)
    layer = _tfn_layer()
    model = _RotateAndMap(rot._native_plan, layer._native_plan)

    def inputs(E, seed):
        g = torch.Generator().manual_seed(seed)
        return (
            torch.randn(E, rot.full_dim, generator=g, dtype=torch.float64),
            *(torch.randn(E, 4, generator=g, dtype=torch.float64) for _ in range(4)),
            torch.randn(E, layer.rot_in.rot_dim, generator=g, dtype=torch.float64),
            torch.randn(E, layer.weight_numel, generator=g, dtype=torch.float64),
        )

    E = torch.export.Dim("E")
    ep = torch.export.export(model, inputs(8, 14), dynamic_shapes=[{0: E}] * 7)
    assert _escn_ops(ep.graph_module) == {"rotate_to_frame", "rotate_from_frame", "tfn_frame_map"}
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    loaded = torch.export.load(buf)
    new = inputs(13, 15)  # another edge count
    for a, b in zip(loaded.module()(*new), model(*new)):
        assert torch.equal(a, b)


def test_importing_registers_the_ops_without_building(tmp_path):
    """Importing escn (layers and operators) compiles nothing; the first operator call builds the library."""
    code = (
        "import os, torch\n"
        "import escn.nn, escn.models\n"
        "from escn.native import rotation_kernel, tfn_kernel\n"
        "assert hasattr(torch.ops.escn, 'rotate_to_frame') and hasattr(torch.ops.escn, 'tfn_frame_map')\n"
        "before = sorted(os.listdir(os.environ['ESCN_CACHE_DIR'])) if os.path.isdir(os.environ['ESCN_CACHE_DIR']) else []\n"
        "from escn.nn.edge_rotation import EdgeRotation\n"
        "plan = EdgeRotation([(1, 2)], 1)._native_plan\n"
        "y = rotation_kernel.rotate_to_frame(plan, torch.ones(2, plan.x_dim), tuple(torch.ones(2, 2) for _ in range(4)))\n"
        "after = [n for n in os.listdir(os.environ['ESCN_CACHE_DIR']) if n.endswith('.so')]\n"
        "print(len(before), len(after), tuple(y.shape) == (2, plan.y_dim))\n"
    )
    env = {**os.environ, "ESCN_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1", "True"]


def test_operators_reject_bad_arguments_by_name():
    plan = _rotation(((1, 2),), 1)._native_plan
    x, y, t = _rotation_operands(plan, 3, torch.float64)
    args = plan.op_args(torch.float64)
    with pytest.raises(
        TypeError, match=r"rotate_to_frame: sin_beta must have the dtype of x \(torch.float64\), got torch.float32"
    ):
        torch.ops.escn.rotate_to_frame(x, *t[:3], t[3].float(), *args)
    with pytest.raises(TypeError, match="mats must have the dtype of x"):
        torch.ops.escn.rotate_to_frame(x, *t, *plan.op_args(torch.float32))
    with pytest.raises(TypeError, match="x must be float32 or float64, got torch.int64"):
        torch.ops.escn.rotate_to_frame(x.long(), *t, *args)
    with pytest.raises(ValueError, match=r"rotation_adjoint: group must have shape \(n, 8\), got \(1, 7\)"):
        torch.ops.escn.rotation_adjoint(x, *t, y, args[0][:, :7], *args[1:], [True, True, True])
    with pytest.raises(ValueError, match=r"y must have shape \(3, "):
        torch.ops.escn.rotation_adjoint(x, *t, y[:2], *args, [True, True, True])
    with pytest.raises(
        ValueError, match=r"rotate_to_frame: dims must be \[x_dim, y_dim, lmax, dmax\], got \[8, 6, 1\]"
    ):
        torch.ops.escn.rotate_to_frame(x, *t, args[0], args[1], args[2][:3])
    with pytest.raises(ValueError, match="parts must be three bools"):
        torch.ops.escn.rotation_adjoint(x, *t, y, *args, [True])
    with pytest.raises(ValueError, match=r"tables must have shape \(E, > 1\)"):
        rotation_kernel.rotate_to_frame(plan, x, tuple(a[:, :1] for a in t))
    with pytest.raises(TypeError, match="plan must be a RotationPlan, got TFNFramePlan"):
        rotation_kernel.rotate_to_frame(_tfn_layer()._native_plan, x, t)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tables must be four tensors"):
        rotation_kernel.rotate_to_frame(plan, x, t[:3])  # type: ignore[arg-type]
    layer = _tfn_layer()
    r, w, gy = _tfn_operands(layer, 3, torch.float64)
    targs = layer._native_plan.op_args()
    with pytest.raises(TypeError, match="tfn_frame_map: weight must have the dtype of x"):
        torch.ops.escn.tfn_frame_map(r, w.float(), *targs)
    with pytest.raises(TypeError, match=r"coef must be torch.float64, got torch.float32"):
        torch.ops.escn.tfn_frame_map(r, w, *targs[:2], targs[2].float(), *targs[3:])
    with pytest.raises(ValueError, match=r"sizes must be \[weight_numel, block_max, terms_max, row_max\]"):
        torch.ops.escn.tfn_frame_map(r, w, *targs[:5], targs[5][:2])
    with pytest.raises(ValueError, match=r"grad must have shape \(3, "):
        torch.ops.escn.tfn_frame_map_weight_grad(r, gy[:, 1:], *targs)
    with pytest.raises(TypeError, match="plan must be a TFNFramePlan, got RotationPlan"):
        tfn_kernel.tfn_frame_map(plan, r, w)  # type: ignore[arg-type]
