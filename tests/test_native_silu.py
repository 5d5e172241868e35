"""The compiled SiLU operators (``torch.ops.escn.silu*``, escn/native/silu_kernel.py) and escn.nn.functional.silu
on them: opcheck, gradcheck / gradgradcheck, values and first to third derivatives equal to PyTorch's SiLU
(1e-12 in float64, stated bounds in float32), accuracy against 40-digit arithmetic, non-finite inputs, thread
splits, torch.compile without graph breaks, the PyTorch fallback, and argument errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from escn import native
from escn.native import _runtime, build, silu_kernel
from escn.nn.functional import silu, silu_torch

OPS = torch.ops.escn
DTYPES = [torch.float32, torch.float64]
TOL = 1e-12
# float32 bounds, errors against float64 (measured: values 1.4e-7, first derivative 2.0e-7, second 1.3e-7 of
# max(1, |f|); PyTorch's own float32 SiLU: 1.2e-7, 9.8e-7, 8.7e-7)
TOL32 = 4e-7


@pytest.fixture(autouse=True)
def _native_kernels():
    if build.compiler() is None:
        pytest.skip("no C compiler")
    assert native.available(), native.unavailable_reason()


def _points(dtype=torch.float64, n=400, seed=0, requires_grad=False):
    """Both signs, |x| up to 60 (sigmoid saturated, its complement tiny), zero, and random values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.cat(
        [
            torch.linspace(-60, 60, 241, dtype=torch.float64),
            torch.tensor([0.0, -0.0, 1e-30, -1e-30]),
            torch.randn(n, generator=g, dtype=torch.float64) * 4,
        ]
    )
    return x.to(dtype).requires_grad_(requires_grad)


def _rand(*shape, dtype=torch.float64, seed=0, scale=1.0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_(requires_grad)


def _err(got, ref):
    """max |got - ref| / max(1, |ref|), elementwise, in float64."""
    got, ref = got.detach().double(), ref.detach().double()
    return float(((got - ref).abs() / ref.abs().clamp_min(1.0)).max())


def _derivatives(f, x):
    """f(x), then derivatives of orders 1-3 of scalar losses that mix them (each step with create_graph)."""
    y = f(x)
    d1 = torch.autograd.grad((y * y.detach().cos()).sum(), x, create_graph=True)[0]
    d2 = torch.autograd.grad(d1.pow(2).sum(), x, create_graph=True)[0]
    d3 = torch.autograd.grad(d2.sin().sum(), x)[0]
    return y, d1, d2, d3


# ---------------------------------------------------------------------------------------------- opcheck
def _op_cases(dtype):
    x = _rand(6, 5, dtype=dtype, seed=1, scale=3, requires_grad=True)
    g = _rand(6, 5, dtype=dtype, seed=2, requires_grad=True)
    gg = _rand(6, 5, dtype=dtype, seed=3, requires_grad=True)
    xt = _rand(5, 6, dtype=dtype, seed=4, scale=3).t().requires_grad_()  # not contiguous
    return [
        (OPS.silu.default, (x,)),
        (OPS.silu.default, (xt,)),
        (OPS.silu_grad.default, (g, x)),
        (OPS.silu_grad.default, (g, xt)),
        (OPS.silu_grad2.default, (gg, g, x)),
        (OPS.silu_grad_backward.default, (gg, g, x)),
        (OPS.silu.default, (x[0, 0].detach().requires_grad_(),)),
        (OPS.silu_grad_backward.default, (gg[:0], g[:0], x[:0])),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_ops_pass_opcheck(dtype):
    """Schema, autograd registration, FakeTensor shapes and strides, AOT dispatch (dynamic shapes, forward and
    backward compared with eager) of each operator; contiguous and transposed inputs, 0-d and empty tensors."""
    for op, args in _op_cases(dtype):
        result = torch.library.opcheck(op, args)
        assert set(result.values()) == {"SUCCESS"}, (op, result)


def test_silu_ops_gradcheck_and_gradgradcheck():
    x = _rand(4, 3, seed=5, scale=3, requires_grad=True)
    g = _rand(4, 3, seed=6, requires_grad=True)
    gg = _rand(4, 3, seed=7, requires_grad=True)
    cases = [
        (OPS.silu, (x,)),
        (OPS.silu_grad, (g, x)),
        (OPS.silu_grad2, (gg, g, x)),
        (OPS.silu_grad_backward, (gg, g, x)),
        (silu, (x,)),
    ]
    for f, args in cases:
        assert torch.autograd.gradcheck(f, args), f
        assert torch.autograd.gradgradcheck(f, args), f


# ------------------------------------------------------------------- values and derivatives vs PyTorch
def test_ops_equal_the_closed_forms_of_torch_derivatives():
    """silu, silu_grad, silu_grad2 and the fused silu_grad_backward against torch's SiLU and its autograd
    derivatives, float64, 1e-12; the fused operator's two outputs equal the single operators bit for bit."""
    x = _points(requires_grad=True)
    g, gg = _rand(x.shape[0], seed=8), _rand(x.shape[0], seed=9)
    y = torch.nn.functional.silu(x)
    d1 = torch.autograd.grad(y.sum(), x, create_graph=True)[0]
    d2 = torch.autograd.grad(d1.sum(), x, create_graph=True)[0]
    d3 = torch.autograd.grad(d2.sum(), x)[0]
    x = x.detach()
    assert _err(OPS.silu(x), y) <= TOL
    assert _err(OPS.silu_grad(g, x), g * d1) <= TOL
    assert _err(OPS.silu_grad2(gg, g, x), gg * g * d2) <= TOL
    assert _err(silu_kernel.silu_third_derivative(x), d3) <= TOL
    a, b = OPS.silu_grad_backward(gg, g, x)
    assert torch.equal(a, OPS.silu_grad(gg, x)) and torch.equal(b, OPS.silu_grad2(gg, g, x))


def test_functional_silu_uses_the_ops_and_matches_torch_to_third_order():
    x = _points(requires_grad=True)
    assert "escn_silu" in type(silu(x).grad_fn).__name__
    for k, (a, b, c) in enumerate(
        zip(_derivatives(silu, x), _derivatives(torch.nn.functional.silu, x), _derivatives(silu_torch, x))
    ):
        assert _err(a, b) <= TOL, k
        assert _err(a, c) <= TOL, k


def test_derivatives_with_every_argument_a_variable():
    """Second and third derivatives where the cotangents depend on x and on other variables (the fused
    backward operator with both outputs used, and its own backward), against the PyTorch path."""

    def grads(f):
        x = _rand(50, seed=10, scale=3, requires_grad=True)
        w = _rand(50, seed=11, requires_grad=True)
        y = f(x)
        (gx,) = torch.autograd.grad(y, x, grad_outputs=w * x.tanh(), create_graph=True)
        loss = (gx * gx).sum() + (y * w).sum()
        d = torch.autograd.grad(loss, (x, w), create_graph=True)
        dd = torch.autograd.grad((d[0] * d[1]).sum() + d[0].pow(3).sum(), (x, w))
        return (y, gx, *d, *dd)

    for k, (a, b) in enumerate(zip(grads(silu), grads(silu_torch))):
        assert _err(a, b) <= TOL, k


def test_float32_within_stated_tolerance():
    """Values and derivatives of orders 1-2 in float32 against float64 at the same points: TOL32 of
    max(1, |f|), and within 4e-7 relative for the values where |x| < 30 and |silu(x)| > 1e-3."""
    x64 = _points(torch.float32).double()  # float32 points
    x32 = x64.float()
    g64, gg64 = _rand(x64.shape[0], seed=12).float().double(), _rand(x64.shape[0], seed=13).float().double()
    g32, gg32 = g64.float(), gg64.float()
    pairs = [
        (OPS.silu(x32), OPS.silu(x64)),
        (OPS.silu_grad(g32, x32), OPS.silu_grad(g64, x64)),
        (OPS.silu_grad2(gg32, g32, x32), OPS.silu_grad2(gg64, g64, x64)),
        *zip(OPS.silu_grad_backward(gg32, g32, x32), OPS.silu_grad_backward(gg64, g64, x64)),
    ]
    for k, (a, b) in enumerate(pairs):
        assert a.dtype == torch.float32
        assert _err(a, b) <= TOL32, k
    ref = torch.nn.functional.silu(x64)
    keep = (x64.abs() < 30) & (ref.abs() > 1e-3)
    rel = ((OPS.silu(x32).double() - ref).abs() / ref.abs())[keep]
    assert float(rel.max()) <= 4e-7


def test_float64_accuracy_against_40_digit_arithmetic():
    """silu, silu', silu'' within 1e-15 of max(1, |f|) of the exact values, and silu within 1e-15 relative at
    every point (also where it is ~1e-25: sigmoid's complement is never formed by subtraction)."""
    mpmath = pytest.importorskip("mpmath")
    x = _points(n=300)
    one = torch.ones_like(x)
    got = [OPS.silu(x), OPS.silu_grad(one, x), OPS.silu_grad2(one, one, x)]
    with mpmath.workdps(40):
        exact = []
        for v in x.tolist():
            t = mpmath.mpf(v)
            s = 1 / (1 + mpmath.exp(-t))
            c = 1 - s
            exact.append([float(t * s), float(s * (1 + t * c)), float(s * c * (2 + t * (c - s)))])
    exact_t = torch.tensor(exact, dtype=torch.float64)
    for k in range(3):
        assert _err(got[k], exact_t[:, k]) <= 1e-15, k
    nz = exact_t[:, 0] != 0
    assert float(((got[0] - exact_t[:, 0]).abs()[nz] / exact_t[nz, 0].abs()).max()) <= 1e-15


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_and_extreme_inputs_follow_torch(dtype):
    """NaN gives NaN, +-inf give torch's results (silu(inf) = inf, silu(-inf) = NaN, silu'(+-inf) = NaN); far
    below zero the results are zeros or subnormal-sized, within 1e-30 of torch's."""
    x = torch.tensor(
        [float("nan"), float("inf"), float("-inf"), -1000.0, -200.0, -100.0, -88.0, 100.0, 1000.0], dtype=dtype
    )
    one = torch.ones_like(x)
    ref_y = torch.nn.functional.silu(x)
    ref_d1 = torch.ops.aten.silu_backward(one, x)
    for got, ref in ((OPS.silu(x), ref_y), (OPS.silu_grad(one, x), ref_d1)):
        assert torch.equal(got.isnan(), ref.isnan())
        fin = ref.isfinite()
        assert torch.equal(got.isinf(), ref.isinf()) and torch.equal(got[ref.isinf()], ref[ref.isinf()])
        diff = (got[fin].double() - ref[fin].double()).abs()
        assert bool((diff <= 1e-30 + 4e-7 * ref[fin].double().abs()).all())
    d2 = OPS.silu_grad2(one, one, x)
    assert torch.equal(d2.isnan(), x.isnan() | x.isinf())
    assert float(d2[3:].abs().max()) <= 1e-30  # |x| >= 88: |silu''| ~ |x| exp(-|x|)


def test_threads_split_the_range_and_give_the_same_bits():
    """Above the grain (32768 elements per thread) two threads split the flat range; elementwise results are
    the same bits as one thread's, for a non-contiguous input too."""
    x = _rand(300, 350, dtype=torch.float32, seed=14, scale=4)
    g, gg = _rand(300, 350, dtype=torch.float32, seed=15), _rand(300, 350, dtype=torch.float32, seed=16)
    old = torch.get_num_threads()
    outs = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            outs[n] = (OPS.silu(x), OPS.silu(x.t()), OPS.silu_grad(g, x), *OPS.silu_grad_backward(gg, g, x))
    finally:
        torch.set_num_threads(old)
    for a, b in zip(outs[1], outs[2]):
        assert torch.equal(a, b)
    assert torch.equal(outs[1][1], outs[1][0].t())
    assert outs[1][1].is_contiguous()


# ---------------------------------------------------------------------------------------------- tracing
def _capturing_backend(graphs: list):
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


def test_compile_fullgraph_keeps_the_ops_and_the_numbers():
    """torch.compile(fullgraph=True) of a function using escn.nn.functional.silu: no graph break, escn::silu in
    the forward graph and escn::silu_grad in the backward graph, values and gradients of eager mode; the same
    with the eager backend."""
    w = _rand(7, 5, seed=17)

    def f(x):
        return silu(x @ w.t()).sum(1)

    x = _rand(9, 5, seed=18, scale=2, requires_grad=True)
    ref = f(x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    graphs: list = []
    for backend in (_capturing_backend(graphs), "eager"):
        torch._dynamo.reset()
        got = torch.compile(f, backend=backend, fullgraph=True)(x)
        (g_got,) = torch.autograd.grad(got.square().sum(), x)
        assert _err(got, ref) <= TOL and _err(g_got, g_ref) <= TOL
    assert len(graphs) == 2
    assert _escn_ops(graphs[0]) == {"silu"} and _escn_ops(graphs[1]) == {"silu_grad"}


@pytest.mark.parametrize("name", ["silu", "silu_grad", "silu_grad2", "silu_grad_backward"])
def test_compile_fullgraph_of_each_op_forward_and_backward(name):
    x = _rand(8, 3, seed=19, scale=3, requires_grad=True)
    g = _rand(8, 3, seed=20, requires_grad=True)
    gg = _rand(8, 3, seed=21, requires_grad=True)
    op = getattr(OPS, name)
    args = {"silu": (x,), "silu_grad": (g, x), "silu_grad2": (gg, g, x), "silu_grad_backward": (gg, g, x)}[name]

    def loss(*a):
        out = op(*a)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return sum((o * o).sum() for o in out)

    torch._dynamo.reset()
    got, ref = torch.compile(loss, backend="aot_eager", fullgraph=True)(*args), loss(*args)
    assert _err(got, ref) <= TOL
    for a, b in zip(torch.autograd.grad(got, args), torch.autograd.grad(ref, args)):
        assert _err(a, b) <= TOL


def test_fake_and_meta_tensors_give_shapes_without_running_kernels():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(1000, 140, requires_grad=True)
        y = silu(x)
        (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        (gxx,) = torch.autograd.grad(gx.square().sum(), x)
    assert y.shape == gx.shape == gxx.shape == (1000, 140) and gxx.dtype == torch.float32
    meta = OPS.silu_grad_backward(*(torch.empty(3, 4, device="meta", dtype=torch.float64) for _ in range(3)))
    assert all(m.shape == (3, 4) and m.device.type == "meta" and m.dtype == torch.float64 for m in meta)


# ---------------------------------------------------------------------------------------------- fallback
def test_fallback_to_torch_ops(monkeypatch):
    """Without the kernels, or for dtypes they do not cover, escn.nn.functional.silu is the PyTorch path."""
    x = _points(requires_grad=True)
    monkeypatch.setattr(_runtime, "available", lambda: False)
    y = silu(x)
    assert "escn_silu" not in type(y.grad_fn).__name__
    assert torch.equal(y, torch.nn.functional.silu(x))
    monkeypatch.undo()
    xb = _points(torch.bfloat16, requires_grad=True)
    yb = silu(xb)
    assert yb.dtype == torch.bfloat16 and "escn_silu" not in type(yb.grad_fn).__name__
    assert torch.equal(yb, torch.nn.functional.silu(xb))


def test_importing_registers_the_ops_without_building(tmp_path):
    code = (
        "import os, torch\n"
        "import escn.nn.functional\n"
        "names = ('silu', 'silu_grad', 'silu_grad2', 'silu_grad_backward')\n"
        "print(all(hasattr(torch.ops.escn, n) for n in names), os.path.isdir(os.environ['ESCN_CACHE_DIR']))\n"
    )
    env = {**os.environ, "ESCN_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]


def test_bad_arguments_are_named():
    x = _rand(3, 4)
    with pytest.raises(
        TypeError, match=r"silu_grad: x must have the dtype of grad \(torch.float64\), got torch.float32"
    ):
        OPS.silu_grad(x, x.float())
    with pytest.raises(TypeError, match="silu: x must be float32 or float64, got torch.int64"):
        OPS.silu(x.long())
    with pytest.raises(ValueError, match=r"silu_grad2: x must have the shape of grad_grad \(3, 4\), got \(4, 3\)"):
        OPS.silu_grad2(x, x, x.t())
    with pytest.raises(
        ValueError, match=r"silu_grad_backward: grad must have the shape of grad_grad \(3, 4\), got \(3, 1\)"
    ):
        OPS.silu_grad_backward(x, x[:, :1], x)
    with pytest.raises(TypeError, match="silu: x must be a tensor, got list"):
        silu([1.0, 2.0])  # type: ignore[arg-type]
