"""Equivariant Linear: equivariance, Schur structure, variance."""

import pytest
import torch

from escn.nn import Linear
from escn.testing import assert_equivariant


def test_linear_equivariant_and_mixes_only_equal_irreps(float64_default):
    lin = Linear("3x0e+2x1o+1x1e+2x2e", "2x0e+3x1o+2x1e+1x0o")
    x = torch.randn(7, lin.irreps_in.dim)
    assert_equivariant(lin, [x], [lin.irreps_in], lin.irreps_out, tol=1e-12)
    y = lin(x)
    assert (y[:, -1] == 0).all()  # 0o absent from the input
    # only the 1o part of x reaches the 1o outputs
    x2 = x.clone()
    x2[:, 3:9] = 0
    assert (lin(x2)[:, 2:11] == 0).all()


def test_linear_preserves_unit_variance(float64_default):
    torch.manual_seed(0)
    lin = Linear("64x0e+64x1o", "64x0e+64x1o")
    y = lin(torch.randn(2000, lin.irreps_in.dim))
    assert abs(y.pow(2).mean().item() - 1) < 0.15


def test_linear_bad_input():
    with pytest.raises(ValueError, match="last dimension"):
        Linear("1x0e", "1x0e")(torch.zeros(2, 3))
