"""escn.nn.functional.silu: the values of torch's SiLU and exact derivatives of first, second and third order."""

from __future__ import annotations

import torch

from escn.nn.functional import silu


def test_values_equal_torch():
    x = torch.linspace(-30, 30, 1001, dtype=torch.float64)
    assert torch.equal(silu(x), torch.nn.functional.silu(x))


def test_derivatives_of_every_order_match_torch():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(40, generator=g, dtype=torch.float64) * 3).requires_grad_(True)

    def derivatives(f):
        d1 = torch.autograd.grad(f(x).sum(), x, create_graph=True)[0]
        d2 = torch.autograd.grad(d1.pow(2).sum(), x, create_graph=True)[0]
        d3 = torch.autograd.grad(d2.sin().sum(), x)[0]
        return d1, d2, d3

    for a, b in zip(derivatives(silu), derivatives(torch.nn.functional.silu)):
        assert (a - b).abs().max().item() <= 1e-12 * max(1.0, b.abs().max().item())


def test_gradcheck_and_gradgradcheck():
    x = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    assert torch.autograd.gradcheck(silu, (x,))
    assert torch.autograd.gradgradcheck(silu, (x,))
