"""EdgeRotation: the per-edge dense path (small l), the factorised path and the compiled kernel give the same
rotation (the first two are PyTorch ops: ``executor="torch"`` here; the kernel is compared in test_native.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from escn.nn.edge_rotation import PAD, EdgeRotation, component_order
from escn.o3.edge_frame import edge_frame

GROUPS = [(0, 3), (1, 2), (2, 2), (3, 1)]


def _edges() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    special = torch.tensor([[0, 1.0, 0], [0, -2.0, 0], [1e-9, 1, 0], [1, 0, 0], [0, 0, -1], [0.3, 0.9, -0.2]])
    return torch.cat([torch.randn(10, 3, generator=g), special]).double()


def _full_input(rot: EdgeRotation, E: int) -> torch.Tensor:
    """Random (E, full_dim) input with zeros in the PAD slots (as the layers produce)."""
    x = torch.randn(E, rot.full_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mask = torch.cat([torch.tensor([j != PAD for j in component_order(l)] * M) for l, M in rot.groups])
    return x * mask


@pytest.mark.parametrize("mmax", [0, 1, 2, 3])
def test_dense_and_factorised_rotations_agree_with_gradients(float64_default, mmax):
    vec = _edges().requires_grad_(True)
    dense = EdgeRotation(GROUPS, mmax, dense_lmax=3, executor="torch")
    factorised = EdgeRotation(GROUPS, mmax, dense_lmax=-1, executor="torch")
    E = vec.shape[0]
    x = _full_input(dense, E).requires_grad_(True)
    y = torch.randn(E, dense.rot_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_(
        True
    )
    outs = []
    for rot in (dense, factorised):
        frame = edge_frame(vec, 3, mmax)
        a, b = rot.to_frame(x, frame), rot.from_frame(y, frame)
        grads = torch.autograd.grad((a.sin().sum() + b.cos().sum()), [x, y, vec])
        outs.append((a, b, *grads))
    for u, v in zip(*outs):
        assert (u - v).abs().max() < 1e-12
    # PAD slots of from_frame stay exactly zero on both paths
    pad = torch.cat([torch.tensor([j == PAD for j in component_order(l)] * M) for l, M in dense.groups])
    assert outs[0][1][:, pad].abs().max() == 0 and outs[1][1][:, pad].abs().max() == 0


def test_dense_rows_are_the_frame_wigner_rows(float64_default):
    vec = _edges()
    frame = edge_frame(vec, 2, 1)
    rot = EdgeRotation([(1, 1), (2, 1)], 1, dense_lmax=2, executor="torch")
    x = _full_input(rot, vec.shape[0])
    out = rot.to_frame(x, frame)
    # l = 2 block: rotated rows = D_std rows (|m| <= 1) times the standard-order components
    order = component_order(2)
    std = torch.zeros(vec.shape[0], 5, dtype=torch.float64)
    for slot, j in enumerate(order):
        if j != PAD:
            std[:, j] = x[:, 4 + slot]
    expected = torch.einsum("erc,ec->er", frame.wigner_rows_standard(2), std)
    assert (out[:, 3:] - expected).abs().max() < 1e-13
    # D rows really carry the edge onto +y: D^1 = R in e3nn's basis, so the l = 1 rows applied to the edge
    # give |edge| at m = 0 (the y component) and 0 at m = +-1
    rows = frame.wigner_rows_standard(1)
    via = torch.einsum("erc,ec->er", rows, vec)
    n = vec.norm(dim=1)
    standard = ~frame.chart
    assert (via[standard, 1] - n[standard]).abs().max() < 1e-12 and via[standard][:, [0, 2]].abs().max() < 1e-12


def test_rotations_store_nothing_on_the_frame_and_share_the_rows_it_was_built_with(float64_default):
    """The frame is an immutable value: layers read the rows formed with it (edge_frame(..., rows_lmax)) and
    give bit-for-bit the values of a frame without them, which forms them per call (the edge-vector gradient
    sums the two calls' contributions in another order: equal to rounding)."""
    vec = _edges().requires_grad_(True)
    rot = EdgeRotation(GROUPS, 2, dense_lmax=3, executor="torch")
    x = _full_input(rot, vec.shape[0]).requires_grad_(True)
    results = []
    for rows_lmax in (-1, 3):
        frame = edge_frame(vec, 3, 2, rows_lmax=rows_lmax)
        assert len(frame.standard_rows) == rows_lmax + 1
        before = dict(vars(frame))
        y = rot.from_frame(rot.to_frame(x, frame), frame)
        assert vars(frame).keys() == before.keys() and all(vars(frame)[k] is v for k, v in before.items())
        results.append((y, *torch.autograd.grad(y.square().sum(), [x, vec])))
    (y0, gx0, gv0), (y1, gx1, gv1) = results
    assert torch.equal(y0, y1) and torch.equal(gx0, gx1)
    assert (gv0 - gv1).abs().max() <= 1e-13 * gv0.abs().max()
    frame = edge_frame(vec, 3, 2, rows_lmax=3)
    assert all(frame.wigner_rows_standard(l) is frame.standard_rows[l] for l in range(4))
    assert torch.equal(frame.standard_rows[2], edge_frame(vec, 3, 2).wigner_rows_standard(2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.lmax = 2  # type: ignore[misc]
    assert "cache" not in {f.name for f in dataclasses.fields(frame)}


def test_frame_for_other_orders_falls_back_to_the_factorisation(float64_default):
    vec = _edges()
    rot = EdgeRotation([(1, 2)], 1, dense_lmax=1, executor="torch")
    x = _full_input(rot, vec.shape[0])
    frame_other = edge_frame(vec, 2, 2, rows_lmax=2)  # mmax differs from the rotation's: its rows would not fit
    ref = EdgeRotation([(1, 2)], 1, dense_lmax=-1).to_frame(x, frame_other)
    assert (rot.to_frame(x, frame_other) - ref).abs().max() < 1e-12
