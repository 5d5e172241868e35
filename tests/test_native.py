"""The compiled edge-frame TFN map (escn.native): same numbers as the PyTorch evaluation, every derivative
exact, float32 within its stated tolerance, and a clean fallback when the kernels cannot be built."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from escn import native
from escn.native import build, tfn_kernel
from escn.nn import SO2Conv, TFNConv
from escn.o3 import Irreps
from escn.testing import CARTESIAN_POINTS, equivariance_error

TOL = 1e-12

CASES = [
    # multiplicities below, at and above one 64-byte tile (16 float32 / 8 float64 values), mixed parities
    ("8x0e + 4x0o + 8x1o + 4x1e + 2x2e", "3x0e + 2x0o + 2x1o + 2x1e + 1x2e + 1x2o", 4),
    ("20x0e + 17x1o + 16x2e", "16x0e + 9x1o + 24x2e + 3x3o", 5),
    ("1x6e + 1x5o + 1x3e", "1x6o + 1x4e + 1x0e + 1x2e", 6),  # small lmax_filter: few orders per path
    # blocks of several 16 x 16 (float32) tiles: 32 x 32, 32 x 48, 16 x 48
    ("32x0e + 32x1o + 16x2e", "32x0e + 48x1o", 2),
]


@pytest.fixture(autouse=True)
def _native_kernels():
    """Every test here needs the kernels: skip without a C compiler, fail if one exists but the build fails."""
    if build.compiler() is None:
        pytest.skip("no C compiler")
    assert native.available(), native.unavailable_reason()


def _layer(irreps_in: str, irreps_out: str, lmax_filter: int, dtype=torch.float64) -> SO2Conv:
    """The layer's constants built in float64 (so the PyTorch evaluation is exact too), then cast."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        layer = SO2Conv.from_tfn(TFNConv(irreps_in, irreps_out, lmax_filter))
    finally:
        torch.set_default_dtype(old)
    return layer.to(dtype)


def _inputs(layer: SO2Conv, E: int, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rot = torch.randn(E, layer.rot_in.rot_dim, dtype=dtype, generator=g, requires_grad=True)
    w = torch.randn(E, layer.weight_numel, dtype=dtype, generator=g, requires_grad=True)
    return rot, w


@pytest.mark.parametrize("irreps_in, irreps_out, lmax_filter", CASES)
def test_native_map_equals_torch_map_values_and_gradients(irreps_in, irreps_out, lmax_filter):
    layer = _layer(irreps_in, irreps_out, lmax_filter)
    rot, w = _inputs(layer, 300)  # more than one thread's chunk
    assert layer._use_native(rot, w)
    ref = layer.set_executor("torch").frame_map(rot, w)
    got = layer.set_executor("native").frame_map(rot, w)
    assert ref.abs().max() > 0.1
    assert (got - ref).abs().max() <= TOL * ref.abs().max()
    cot = torch.randn_like(ref)
    g_ref = torch.autograd.grad(ref, (rot, w), cot)
    g_got = torch.autograd.grad(got, (rot, w), cot)
    for name, a, b in zip(("input", "weight"), g_ref, g_got):
        assert (a - b).abs().max() <= TOL * a.abs().max(), name


def test_native_map_second_and_third_derivatives_equal_torch_map():
    """Each backward of the kernel is again one of the three kernels: check up to third order."""
    layer = _layer(*CASES[0])
    rot, w = _inputs(layer, 40, seed=1)
    probe1 = torch.randn(40, layer.rot_out.rot_dim, dtype=torch.float64)
    probe2 = torch.randn_like(rot)
    probe3 = torch.randn_like(w)
    results = []
    for executor in ("torch", "native"):
        layer.set_executor(executor)
        y = layer.frame_map(rot, w)
        (gr, gw) = torch.autograd.grad((y * probe1).sum(), (rot, w), create_graph=True)
        (g2r, g2w) = torch.autograd.grad((gr * probe2).sum() + (gw * w).sum(), (rot, w), create_graph=True)
        third = torch.autograd.grad((g2r * probe2).sum() + (g2w * probe3).sum(), (rot, w), allow_unused=True)
        results.append([gr, gw, g2r, g2w, *third])
    for k, (a, b) in enumerate(zip(*results)):
        assert a is not None and b is not None, k
        assert (a - b).abs().max() <= TOL * max(a.abs().max(), 1.0), k


def test_native_map_gradcheck_and_gradgradcheck():
    layer = _layer("2x0e + 1x1o + 1x2e", "1x0e + 2x1o + 1x3o + 1x0o", 1)  # 0o: no path reaches it
    rot, w = _inputs(layer, 3, seed=2)
    assert torch.autograd.gradcheck(layer.frame_map, (rot, w))
    assert torch.autograd.gradgradcheck(layer.frame_map, (rot, w))


def test_native_layer_is_e3_equivariant():
    """The whole from_tfn layer on the kernel path, through the shared checker (rotations, reflections)."""
    irreps_in, irreps_out, lmax_filter = CASES[0]
    layer = _layer(irreps_in, irreps_out, lmax_filter)
    g = torch.Generator().manual_seed(4)
    n, E = 12, 60
    pos = torch.randn(n, 3, dtype=torch.float64, generator=g)
    src = torch.randint(0, n, (E,), generator=g)
    dst = (src + torch.randint(1, n, (E,), generator=g)) % n
    w = torch.randn(E, layer.weight_numel, dtype=torch.float64, generator=g)
    x = torch.randn(n, Irreps(irreps_in).dim, dtype=torch.float64, generator=g)

    def f(x, pos):
        return layer(x, src, dst, pos[dst] - pos[src], w)

    assert layer._use_native(x, w)
    errs = equivariance_error(f, [x, pos], [irreps_in, CARTESIAN_POINTS], irreps_out)
    assert max(errs.values()) <= 1e-10, errs


@pytest.mark.parametrize("case", [CASES[1], CASES[3]])
def test_native_float32_matches_float64_reference(case):
    """float32 on the kernel path: measured max relative error about 1e-7 of the largest output; bar 2e-6."""
    layer64 = _layer(*case)
    layer32 = _layer(*case, dtype=torch.float32)
    rot, w = _inputs(layer64, 200, seed=6)
    ref = layer64.frame_map(rot, w)
    got = layer32.frame_map(rot.float(), w.float())
    assert got.dtype == torch.float32 and layer32._use_native(rot.float(), w.float())
    assert (got.double() - ref).abs().max() <= 2e-6 * ref.abs().max()
    cot = torch.randn_like(ref)
    g_ref = torch.autograd.grad(ref, (rot, w), cot)
    r32, w32 = rot.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    g32 = torch.autograd.grad(layer32.frame_map(r32, w32), (r32, w32), cot.float())
    for a, b in zip(g_ref, g32):
        assert (a - b.double()).abs().max() <= 2e-6 * a.abs().max()


@pytest.mark.parametrize("openmp", [True, False])
def test_native_kernels_are_the_same_on_one_and_two_threads(monkeypatch, openmp):
    """Both ways of splitting the edges (OpenMP threads inside the kernel, or one kernel call per Python thread
    when the kernels were built without OpenMP) give bit-identical values and gradients to one thread."""
    from escn.native import _runtime
    from escn.o3.edge_frame import edge_frame

    if openmp and not _runtime.uses_openmp():
        pytest.skip("kernels built without OpenMP")
    monkeypatch.setattr(_runtime, "uses_openmp", lambda: openmp)
    layer = _layer(*CASES[1])
    rot, w = _inputs(layer, 500, seed=7)
    erot, x, y, vec = _rotation_inputs(*ROT_CASES[0], E=500)

    def run():
        frame = edge_frame(vec, 6, 6)
        outs = (layer.frame_map(rot, w), erot.to_frame(x, frame), erot.from_frame(y, frame))
        return (*outs, *torch.autograd.grad(sum(o.sum() for o in outs), [rot, w, x, y, vec]))

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(2)
        two = run()
    finally:
        torch.set_num_threads(old)
    for a, b in zip(one, two):
        assert torch.equal(a, b)  # each edge is computed by one thread, in the same order


def test_native_map_takes_strided_weight_rows_and_empty_edge_sets():
    layer = _layer(*CASES[0])
    rot, w = _inputs(layer, 50, seed=8)
    wide = torch.randn(50, layer.weight_numel + 7, dtype=torch.float64)
    wide[:, 3 : 3 + layer.weight_numel] = w.detach()
    view = wide[:, 3 : 3 + layer.weight_numel]  # row stride != width
    assert (layer.frame_map(rot, view) - layer.frame_map(rot, w)).abs().max() == 0.0
    empty = layer.frame_map(rot[:0], w[:0])
    assert empty.shape == (0, layer.rot_out.rot_dim)


def test_torch_executor_or_unbuildable_kernels_run_torch_ops(monkeypatch, tmp_path):
    layer = _layer(*CASES[0])
    rot, w = _inputs(layer, 30, seed=9)
    expected = layer.frame_map(rot, w)
    layer.set_executor("torch")
    assert native.available() and not layer._use_native(rot, w)
    assert (layer.frame_map(rot, w) - expected).abs().max() <= TOL * expected.abs().max()
    # a compiler that fails: "native" falls back to PyTorch ops with one warning naming the reason
    layer.set_executor("native")
    monkeypatch.setattr(build, "_loaded", {})
    monkeypatch.setattr(build, "_errors", {})
    monkeypatch.setenv("ESCN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "false")
    with pytest.warns(RuntimeWarning, match="native kernels unavailable, using PyTorch ops instead") as caught:
        got = layer.frame_map(rot, w)
    reason = native.unavailable_reason()
    assert "failed" in reason and reason in str(caught[0].message)
    assert (got - expected).abs().max() <= TOL * expected.abs().max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the next calls warn no more
        assert (layer.frame_map(rot, w) - expected).abs().max() <= TOL * expected.abs().max()
        assert not native.available() and not layer._use_native(rot, w)


def test_build_is_cached_by_source_compiler_and_cpu(monkeypatch, tmp_path):
    cc = build.compiler()
    monkeypatch.setenv("ESCN_CACHE_DIR", str(tmp_path))
    path = build.library_path(cc)
    assert path.parent == tmp_path and path.suffix == ".so"
    assert build.library_path(cc) == path
    monkeypatch.setattr(build, "FLAGS", (*build.FLAGS, "-DPREFETCH_AHEAD=0"))
    assert build.library_path(cc) != path
    monkeypatch.setattr(build, "_loaded", {})
    assert build.load() is not None
    assert len(list(tmp_path.glob("*.so"))) == 1


def test_damaged_or_foreign_cached_library_is_rebuilt_not_loaded(monkeypatch, tmp_path):
    """The cache keeps a SHA-256 stamp beside the library: a truncated library, a foreign shared library or
    garbage under the library's name, or a library without its stamp, is rebuilt before anything loads it.
    The compiler here is a script that counts its runs and copies the kernels built for this test session."""
    import _ctypes
    import ctypes
    import os
    from pathlib import Path

    real = build.library_path(build.compiler())
    assert build.is_valid_library(real)  # the session's own build has its stamp
    count = tmp_path / "builds"
    fake_cc = tmp_path / "fake-cc"
    fake_cc.write_text(
        '#!/bin/sh\nout=""\nwhile [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done\n'
        f'echo built >> "{count}"\ncp "{real}" "$out"\n'
    )
    fake_cc.chmod(0o755)
    monkeypatch.setenv("CC", str(fake_cc))
    monkeypatch.setenv("ESCN_CACHE_DIR", str(tmp_path / "cache"))

    def load_afresh():
        monkeypatch.setattr(build, "_loaded", {})
        monkeypatch.setattr(build, "_errors", {})
        lib = build.load()
        assert lib is not None, build.error()
        assert isinstance(lib.escn_openmp, ctypes._CFuncPtr)  # the kernels' own symbol
        return lib

    def builds() -> int:
        return len(count.read_text().splitlines()) if count.exists() else 0

    load_afresh()
    path = build.library_path(str(fake_cc))
    assert path.parent == tmp_path / "cache" and builds() == 1
    assert build.stamp_path(path).read_text().split()[0] == "escn-native-sha256"
    load_afresh()
    assert builds() == 1  # a valid cached library is reused
    good = path.read_bytes()
    foreign_library = Path(_ctypes.__file__).read_bytes()  # a real shared object, not the kernels
    damages = [good[: len(good) // 2], b"\x7fELF" + bytes(len(good) - 4), foreign_library]
    for n, damaged in enumerate(damages, start=2):
        # a new file under the name (writing into the loaded one would crash this process: it is mapped)
        (tmp_path / "damaged").write_bytes(damaged)
        os.replace(tmp_path / "damaged", path)
        load_afresh()
        assert builds() == n and path.read_bytes() == good and build.is_valid_library(path)
    build.stamp_path(path).unlink()  # e.g. written by a version without stamps: rebuilt once
    load_afresh()
    assert builds() == len(damages) + 2 and build.is_valid_library(path)


def test_build_without_openmp_falls_back_to_one_kernel_call_per_thread(monkeypatch, tmp_path):
    """A compiler without OpenMP (here: an OpenMP flag it rejects) still builds the kernels; they then run their
    range on the calling thread and the Python side splits the edges."""
    if build.compiler() is None:
        pytest.skip("no C compiler")
    from escn.native import _runtime

    layer = _layer(*CASES[1])
    rot, w = _inputs(layer, 300, seed=10)
    expected = layer.frame_map(rot, w)
    monkeypatch.setenv("ESCN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(build, "OPENMP_FLAGS", ("-fno-such-option-escn",))
    monkeypatch.setattr(build, "_loaded", {})
    assert native.available() and not _runtime.uses_openmp()
    assert torch.equal(layer.frame_map(rot, w), expected)


def test_bad_arguments_are_rejected():
    with pytest.raises(TypeError, match=r"executor must be a str, one of \('native', 'torch'\), got int 1"):
        SO2Conv.from_tfn(TFNConv("2x0e", "2x0e", 0), executor=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"executor must be one of \('native', 'torch'\), got 'cuda'"):
        SO2Conv("2x0e", "2x0e", executor="cuda")
    with pytest.raises(ValueError, match="executor must be one of"):
        SO2Conv("2x0e", "2x0e").set_executor("Native")
    with pytest.raises(ValueError, match="leaves the buffers"):
        native.make_plan([(0, 2, 2)], [[(1, 0, 1.0)]], perm_in=[0, 1], perm_out=[0, 1])
    with pytest.raises(ValueError, match="same length"):
        native.make_plan([(0, 2, 2)], [], perm_in=[0, 1], perm_out=[0, 1])
    layer = _layer(*CASES[0])
    rot, w = _inputs(layer, 5)
    with pytest.raises(ValueError, match=r"weight must have shape \(5, "):
        tfn_kernel.tfn_frame_map(layer._native_plan, rot, w[:, :-1])
    assert not native.supports(rot.float(), w) and not native.supports(rot.int(), w.int())


# ---------------------------------------------------------------- rotation into and out of the edge frame
ROT_CASES = [
    ([(0, 3), (1, 5), (2, 17), (4, 2), (6, 16)], 6),  # channels below, at and above a vector tile
    ([(0, 2), (1, 3), (3, 4), (5, 20)], 2),  # mmax < l: fewer rows kept
    ([(2, 1)], 0),
]


def _rotation_inputs(groups, mmax, E=150, seed=0):
    from escn.nn.edge_rotation import PAD, EdgeRotation, component_order

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        rot = EdgeRotation(groups, mmax, executor="native")
    finally:
        torch.set_default_dtype(old)
    g = torch.Generator().manual_seed(seed)
    mask = torch.cat([torch.tensor([j != PAD for j in component_order(l)] * M) for l, M in groups])
    x = (torch.randn(E, rot.full_dim, generator=g, dtype=torch.float64) * mask).requires_grad_()
    y = torch.randn(E, rot.rot_dim, generator=g, dtype=torch.float64).requires_grad_()
    vec = torch.randn(E, 3, generator=g, dtype=torch.float64).requires_grad_()
    return rot, x, y, vec


@pytest.mark.parametrize("groups, mmax", ROT_CASES)
def test_native_rotation_equals_torch_rotation_values_and_gradients(groups, mmax):
    from escn.o3.edge_frame import edge_frame

    rot, x, y, vec = _rotation_inputs(groups, mmax)
    lmax = max(l for l, _ in groups)
    results = []
    for use in (True, False):
        rot.set_executor("native" if use else "torch")
        frame = edge_frame(vec, lmax, mmax)
        assert rot._use_native(x, frame) == use
        a, b = rot.to_frame(x, frame), rot.from_frame(y, frame)
        c = rot.from_frame(rot.to_frame(x, frame), frame)  # the edge-vector gradient flows through both
        grads = torch.autograd.grad(a.sin().sum() + b.cos().sum() + (c * c).sum(), [x, y, vec])
        results.append((a, b, c, *grads))
    for k, (u, v) in enumerate(zip(*results)):
        assert (u - v).abs().max() <= TOL * max(v.abs().max(), 1.0), k


def test_native_rotation_higher_derivatives_equal_torch_rotation():
    """Gradients of gradients (up to third order) through to_frame then from_frame, where the features and the
    rotation depend on the same edge vectors: each slot of the multilinear form is its own variable."""
    from escn.o3.edge_frame import edge_frame

    rot, x, _, vec = _rotation_inputs(*ROT_CASES[1], E=12, seed=3)
    cot = torch.randn(12, rot.full_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    probe = torch.randn(12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    results = []
    for executor in ("native", "torch"):
        rot.set_executor(executor)
        frame = edge_frame(vec, 5, 2)
        feats = x * vec.norm(dim=1, keepdim=True)  # features that also depend on the edges
        (gv,) = torch.autograd.grad(
            (rot.from_frame(rot.to_frame(feats, frame), frame) * cot).sum(), vec, create_graph=True
        )
        gx2, gv2 = torch.autograd.grad((gv * probe).sum(), [x, vec], create_graph=True)
        third = torch.autograd.grad((gx2 * x).sum() + (gv2 * probe).sum(), [x, vec])
        results.append((gv, gx2, gv2, *third))
    for k, (u, v) in enumerate(zip(*results)):
        assert v.abs().max() > 1e-3, k
        assert (u - v).abs().max() <= TOL * v.abs().max(), k


def test_native_rotation_gradcheck_and_gradgradcheck():
    from escn.o3.edge_frame import edge_frame

    rot, x, y, vec = _rotation_inputs([(0, 1), (1, 2), (2, 1)], 1, E=4, seed=6)
    assert rot.executor == "native"

    def f(x, y, vec):
        frame = edge_frame(vec, 2, 1)
        return rot.to_frame(x, frame), rot.from_frame(y, frame)

    assert torch.autograd.gradcheck(f, (x, y, vec))
    assert torch.autograd.gradgradcheck(f, (x, y, vec))


@pytest.mark.parametrize("groups, mmax", [ROT_CASES[0], ([(1, 16), (8, 17), (9, 3)], 9)])  # l >= 8: d > 16 slots
def test_native_rotation_float32_matches_float64(groups, mmax):
    """float32 on the kernel (frame built in float32 too), values and gradients w.r.t. features and edge vectors:
    measured max error 4-5e-7 of the largest value; bar 2e-6 (5e-6 for the edge-vector gradient, a sum over all
    components)."""
    from escn.o3.edge_frame import edge_frame

    rot, x, y, vec = _rotation_inputs(groups, mmax, seed=7)
    lmax = max(l for l, _ in groups)
    cot_to = torch.randn(x.shape[0], rot.rot_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    cot_from = torch.randn(x.shape[0], rot.full_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(9))

    def run(rot, x, y, vec):
        frame = edge_frame(vec, lmax, mmax)
        to, fr = rot.to_frame(x, frame), rot.from_frame(y, frame)
        grads = torch.autograd.grad((to * cot_to.to(to.dtype)).sum() + (fr * cot_from.to(fr.dtype)).sum(), [x, y, vec])
        return (to, fr, *grads)

    ref = run(rot, x, y, vec)
    rot32 = rot.float()
    assert rot32._use_native(x.float(), edge_frame(vec.detach().float(), lmax, mmax))
    got = run(rot32, *(t.detach().float().requires_grad_() for t in (x, y, vec)))
    for k, (a, b) in enumerate(zip(ref, got)):
        assert b.dtype == torch.float32
        assert (b.double() - a).abs().max() <= (5e-6 if k == 4 else 2e-6) * a.abs().max(), k


def test_kernels_are_the_default_and_the_executor_argument_turns_them_off():
    """Kernels by default (measured faster for every layout); PyTorch ops with executor="torch"."""
    from escn.nn.edge_rotation import EdgeRotation

    tfn = TFNConv("4x0e + 4x1o", "4x0e + 4x1o", 2)
    per_edge = SO2Conv.from_tfn(tfn)
    assert per_edge.executor == per_edge.rot_in.executor == per_edge.rot_out.executor == "native"
    shared = SO2Conv("4x0e + 4x1o", "4x0e + 4x1o", shared_weights=True)
    assert shared.rot_in.executor == shared.rot_out.executor == "native"
    assert EdgeRotation([(0, 2), (1, 2)], 1).executor == "native"
    for off in (
        SO2Conv.from_tfn(tfn, executor="torch"),
        SO2Conv("4x0e + 4x1o", "4x0e + 4x1o", shared_weights=True, executor="torch"),
        SO2Conv.from_tfn(tfn).set_executor("torch"),
    ):
        assert off.executor == off.rot_in.executor == off.rot_out.executor == "torch"
    g = torch.Generator().manual_seed(11)
    rot, w = torch.randn(5, per_edge.rot_in.rot_dim, generator=g), torch.randn(5, per_edge.weight_numel, generator=g)
    assert per_edge._use_native(rot, w) and not off._use_native(rot, w)
    # the removed switches are errors, not silently ignored assignments
    for layer in (per_edge, per_edge.rot_in):
        with pytest.raises(AttributeError, match=r"\.native was removed; pass executor='native' or 'torch'"):
            layer.native = False
        assert not hasattr(layer, "native")
    with pytest.raises(TypeError, match="native"):
        SO2Conv("4x0e", "4x0e", native=False)  # type: ignore[call-arg]


def test_kernel_operands_must_share_the_edge_count():
    """Every operand is read over the same edge range: a mismatch is an error, not an out-of-range read."""
    from escn.native import rotation_kernel
    from escn.o3.edge_frame import edge_frame

    layer = _layer(*CASES[0])
    rot, w = _inputs(layer, 6)
    with pytest.raises(ValueError, match=r"weight must have shape \(6, "):
        tfn_kernel.tfn_frame_map(layer._native_plan, rot, w[:5])
    rot_layer, x, _, vec = _rotation_inputs(*ROT_CASES[2], E=6)
    frame = edge_frame(vec[:5], 2, 0)
    tables = (frame.cos_alpha, frame.sin_alpha, frame.cos_beta, frame.sin_beta)
    with pytest.raises(ValueError, match=r"table must have shape \(6, "):
        rotation_kernel.rotate_to_frame(rot_layer._native_plan, x, tables)
    # tables with different strides are read correctly (made contiguous)
    frame = edge_frame(vec, 2, 0)
    width = frame.cos_alpha.shape[1]
    wide = torch.zeros(6, width + 3, dtype=torch.float64)
    wide[:, :width] = frame.cos_alpha
    strided = (wide[:, :width], frame.sin_alpha, frame.cos_beta, frame.sin_beta)  # row stride width + 3
    assert not strided[0].is_contiguous()
    a = rotation_kernel.rotate_to_frame(rot_layer._native_plan, x, strided)
    b = rotation_kernel.rotate_to_frame(
        rot_layer._native_plan, x, (frame.cos_alpha, frame.sin_alpha, frame.cos_beta, frame.sin_beta)
    )
    assert (a - b).abs().max() == 0


def test_no_environment_variable_changes_the_executor():
    """ESCN_NATIVE once switched every layer to PyTorch ops from the environment; the executor argument is now
    the only switch, so a process with it set still runs the kernels."""
    code = (
        "import torch\n"
        "from escn import native\n"
        "from escn.nn import SO2Conv\n"
        "layer = SO2Conv('2x0e + 2x1o', '2x0e + 2x1o', shared_weights=True)\n"
        "x = torch.randn(3, layer.rot_in.rot_dim)\n"
        "w = torch.randn(3, layer.rot_in.rot_dim)\n"
        "print(native.available(), layer.executor, layer._use_native(x, w), SO2Conv('1x0e', '1x0e', executor='torch')._use_native(x, w))\n"
    )
    for value in ("0", "off", "1"):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "ESCN_NATIVE": value},
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["True", "native", "True", "False"], (value, proc.stdout)


def test_native_executor_runs_torch_ops_where_the_kernels_do_not_apply():
    """ "native" means the kernels where they apply: meta tensors (and other devices) take PyTorch ops."""
    from escn.nn.edge_rotation import EdgeRotation
    from escn.o3.edge_frame import edge_frame

    rot = EdgeRotation([(0, 2), (1, 3), (2, 1)], 1)
    vec = torch.randn(7, 3, device="meta")
    frame = edge_frame(vec, 2, 1)
    x = torch.randn(7, rot.full_dim, device="meta")
    assert rot.executor == "native" and not rot._use_native(x, frame)
    y = rot.to_frame(x, frame)
    assert y.device.type == "meta" and y.shape == (7, rot.rot_dim)
    assert rot.from_frame(y, frame).shape == (7, rot.full_dim)


def test_frames_carry_dense_rows_only_for_the_pytorch_path(monkeypatch):
    """The kernel reads only the angle tables: SO2Conv builds its frame without the dense rows on it, and with
    them (once, for both rotations) on PyTorch ops."""
    import escn.nn.so2_conv as so2_module

    built = []
    original = so2_module.edge_frame

    def recording(*args, **kwargs):
        built.append(kwargs.get("rows_lmax", -1))
        return original(*args, **kwargs)

    monkeypatch.setattr(so2_module, "edge_frame", recording)
    layer = SO2Conv("3x0e + 2x1o + 2x2e + 1x4e", "2x0e + 2x1o + 1x2e", shared_weights=True)
    g = torch.Generator().manual_seed(12)
    x = torch.randn(6, layer.irreps_in.dim, generator=g)
    src, dst = torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([1, 2, 3, 4, 5, 0])
    vec = torch.randn(6, 3, generator=g)
    gates = torch.randn(6, layer.weight_numel, generator=g)
    got = layer(x, src, dst, vec, gates)
    ref = layer.set_executor("torch")(x, src, dst, vec, gates)
    assert built == [-1, 3] and layer.rot_in.rows_lmax(x) == 3
    assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert layer.set_executor("native").rot_in.rows_lmax(x) == -1 and layer.rot_in.rows_lmax(x.to("meta")) == 3
