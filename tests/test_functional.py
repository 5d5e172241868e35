"""escn.nn.functional.silu: the values of torch's SiLU and exact derivatives of first, second and third order,
on the PyTorch path (``silu_torch``, equal values bit for bit) and on whatever path ``silu`` takes here (the
compiled operators when available: tests/test_native_silu.py)."""

from __future__ import annotations

import pytest
import torch

from escn.nn.functional import silu, silu_torch


def test_torch_path_values_equal_torch():
    x = torch.linspace(-30, 30, 1001, dtype=torch.float64)
    assert torch.equal(silu_torch(x), torch.nn.functional.silu(x))


def test_values_match_torch():
    x = torch.linspace(-30, 30, 1001, dtype=torch.float64)
    ref = torch.nn.functional.silu(x)
    assert float(((silu(x) - ref).abs() / ref.abs().clamp_min(1.0)).max()) <= 1e-15


@pytest.mark.parametrize("f", [silu, silu_torch])
def test_derivatives_of_every_order_match_torch(f):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(40, generator=g, dtype=torch.float64) * 3).requires_grad_(True)

    def derivatives(f):
        d1 = torch.autograd.grad(f(x).sum(), x, create_graph=True)[0]
        d2 = torch.autograd.grad(d1.pow(2).sum(), x, create_graph=True)[0]
        d3 = torch.autograd.grad(d2.sin().sum(), x)[0]
        return d1, d2, d3

    for a, b in zip(derivatives(f), derivatives(torch.nn.functional.silu)):
        assert (a - b).abs().max().item() <= 1e-12 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("f", [silu, silu_torch])
def test_gradcheck_and_gradgradcheck(f):
    x = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
