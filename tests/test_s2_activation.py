"""S2-grid activation: exact projection for band-limited functions, measured equivariance error vs grid."""

import pytest
import torch

from escn.nn.s2_activation import S2Activation, S2Grid, default_resolution
from escn.o3 import spherical_harmonics
from escn.testing import equivariance_error

IRREPS = "8x0e+8x1o+8x2e+8x3o+8x4e"


def test_identity_activation_is_exact(float64_default):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 200, generator=g)
    a = S2Activation(IRREPS, act=lambda t: t, normalize_act=False)
    assert (a(x) - x).abs().max() < 1e-12


def test_grid_integrates_products_exactly_at_the_minimum(float64_default):
    grid = S2Grid(6, resolution=(7, 13))  # res_beta = lmax + 1, res_alpha = 2 mmax + 1
    gram = grid.to_grid @ grid.from_grid
    assert (gram - torch.eye(49)).abs().max() < 1e-12


def test_truncated_grid_keeps_only_small_m(float64_default):
    grid = S2Grid(5, mmax=2)
    assert grid.num_coefficients == 1 + 3 + 5 * 4
    assert (grid.res_beta, grid.res_alpha) == default_resolution(5, 2) == (12, 10)


def test_known_value_square_of_y(float64_default):
    # act(f) = f^2 with f = Y_10 (component normalised, = sqrt(3) y): f^2 = 3 y^2 = 1 + 2 P_2(y)
    # -> c_00 = 1, c_20 = 2 / sqrt(5) (component-normalised Y_20 = sqrt(5) P_2(y)), everything else 0
    a = S2Activation("1x0e+1x1o+1x2e", act=lambda t: t * t, normalize_act=False)
    x = torch.zeros(1, 9)
    x[0, 1 + 1] = 1.0  # l = 1, m = 0 is the y component
    y = a(x)
    expected = torch.zeros(1, 9)
    expected[0, 0] = 1.0
    expected[0, 4 + 2] = 2 / 5**0.5
    assert (y - expected).abs().max() < 1e-12
    # and the same through the spherical harmonics of a direction: Y_20(e_y) = sqrt(5)
    assert (
        abs(
            spherical_harmonics(2, torch.tensor([[0.0, 1.0, 0.0]]), normalize=True, normalization="component")[0, 2]
            - 5**0.5
        )
        < 1e-12
    )


@pytest.mark.parametrize(
    "resolution,bar",
    # measured rotation / reflection errors relative to max |output| (module docstring): 2.5e-2, 3.2e-3, 2.4e-4,
    # up to 4.4e-2, 4e-3, 3e-4 over seeds; the bars leave about 2x
    [((10, 18), 8e-2), ((20, 36), 1e-2), ((40, 72), 8e-4)],
)
def test_equivariance_error_falls_with_resolution(float64_default, resolution, bar):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 200, generator=g)
    a = S2Activation(IRREPS, resolution=resolution)
    scale = a(x).abs().max().item()
    err = equivariance_error(a, [x], [IRREPS], IRREPS, trials=3, generator=g)
    assert err["rotation"] / scale < bar
    assert err["reflection"] / scale < bar
    assert err["translation"] < 1e-12
    assert err["rotation"] / scale > bar / 100  # the error is real, not zero: the bound is not vacuous


def test_float32_matches_float64(float64_default):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(10, 200, generator=g)
    a64 = S2Activation(IRREPS)
    a32 = S2Activation(IRREPS).float()
    # measured 3.4e-6 max abs difference (outputs up to ~5)
    assert (a32(x.float()).double() - a64(x)).abs().max() < 1e-5


def test_bad_input():
    with pytest.raises(ValueError, match="natural parity"):
        S2Activation("4x0e+4x1e")
    with pytest.raises(ValueError, match="same multiplicity"):
        S2Activation("4x0e+2x1o")
    with pytest.raises(ValueError, match="res_beta"):
        S2Activation("4x0e+4x1o", resolution=(0, 4))
    with pytest.raises(TypeError, match="resolution"):
        S2Activation("4x0e+4x1o", resolution="fine")
    with pytest.raises(ValueError, match="last dimension"):
        S2Activation("4x0e+4x1o")(torch.zeros(3, 5))
