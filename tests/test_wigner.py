"""Wigner-D matrices and Wigner 3j symbols: equal to e3nn 0.6.0 (D for l <= 12, 3j for every
triple with l1, l2, l3 <= 8), representation properties up to l = 24, float32 accuracy, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from escn import o3

pytestmark = pytest.mark.usefixtures("single_thread")

LMAX_HIGH = 24


def _angles(n: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    alpha, beta, gamma = o3.rand_angles(n, dtype=dtype, generator=g)
    # add the special values: identity, the poles of the Euler chart (beta = 0, pi), half turns
    special = torch.tensor(
        [[0.0, 0.0, 0.0], [1.0, 0.0, -0.3], [0.2, math.pi, 2.0], [math.pi, math.pi / 2, -math.pi], [-2.5, 1e-9, 0.7]],
        dtype=dtype,
    )
    return torch.cat([alpha, special[:, 0]]), torch.cat([beta, special[:, 1]]), torch.cat([gamma, special[:, 2]])


def _rotations(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return o3.rand_matrix(n, dtype=torch.float64, generator=g)


# ------------------------------------------------------------------------------------- vs e3nn


def test_wigner_D_matches_e3nn(e3nn_o3, float64_default):
    alpha, beta, gamma = _angles(20, seed=0)
    for l in range(13):
        ours = o3.wigner_D(l, alpha, beta, gamma)
        ref = e3nn_o3.wigner_D(l, alpha, beta, gamma)
        assert ref.dtype == torch.float64
        assert ours.shape == ref.shape == (alpha.shape[0], 2 * l + 1, 2 * l + 1)
        assert (ours - ref).abs().max() <= 1e-12, l


def test_wigner_D_broadcasts_like_e3nn(e3nn_o3, float64_default):
    alpha = torch.linspace(0, 3, 4).reshape(4, 1)
    beta = torch.linspace(0.1, 2, 3)
    gamma = torch.tensor(0.4)
    for l in (0, 3, 7):
        ours = o3.wigner_D(l, alpha, beta, gamma)
        ref = e3nn_o3.wigner_D(l, alpha, beta, gamma)
        assert ours.shape == ref.shape == (4, 3, 2 * l + 1, 2 * l + 1)
        assert (ours - ref).abs().max() <= 1e-12
    # plain floats are accepted
    assert (
        o3.wigner_D(2, 0.3, 1.1, -0.4) - e3nn_o3.wigner_D(2, torch.tensor(0.3), torch.tensor(1.1), torch.tensor(-0.4))
    ).abs().max() <= 1e-12


def test_wigner_3j_matches_e3nn_every_triple_up_to_8(e3nn_o3):
    checked = 0
    for l1 in range(9):
        for l2 in range(9):
            for l3 in range(abs(l1 - l2), min(l1 + l2, 8) + 1):
                ours = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
                ref = e3nn_o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
                assert ours.shape == ref.shape == (2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1)
                assert (ours - ref).abs().max() <= 1e-12, (l1, l2, l3)
                checked += 1
    assert checked == 369  # every triangle-rule triple with l1, l2, l3 <= 8


# ---------------------------------------------------------------------------- self-consistency


def test_D_is_orthogonal_up_to_l24():
    alpha, beta, gamma = _angles(8, seed=1)
    for l in range(LMAX_HIGH + 1):
        D = o3.wigner_D(l, alpha, beta, gamma)
        eye = torch.eye(2 * l + 1, dtype=D.dtype)
        assert (D @ D.transpose(-1, -2) - eye).abs().max() <= 1e-12, l
        assert (torch.linalg.det(D) - 1).abs().max() <= 1e-10, l


def test_D_is_a_homomorphism_up_to_l24():
    R1, R2 = _rotations(6, seed=2), _rotations(6, seed=3)
    for l in range(LMAX_HIGH + 1):
        lhs = o3.wigner_D_from_matrix(l, R1 @ R2)
        rhs = o3.wigner_D_from_matrix(l, R1) @ o3.wigner_D_from_matrix(l, R2)
        assert (lhs - rhs).abs().max() <= 1e-10, l
        # inverse and identity
        inv = o3.wigner_D_from_matrix(l, R1.transpose(-1, -2))
        assert (inv - o3.wigner_D_from_matrix(l, R1).transpose(-1, -2)).abs().max() <= 1e-10, l
        assert (
            o3.wigner_D(l, *torch.zeros(3, dtype=torch.float64)) - torch.eye(2 * l + 1, dtype=torch.float64)
        ).abs().max() <= 1e-12, l


def test_irreps_D_from_matrix_is_a_homomorphism():
    irreps = o3.Irreps("2x0e + 1o + 3x2e + 5o + 24e")
    R1, R2 = _rotations(3, seed=4), _rotations(3, seed=5)
    lhs = irreps.D_from_matrix(R1 @ R2)
    rhs = irreps.D_from_matrix(R1) @ irreps.D_from_matrix(R2)
    assert lhs.shape == (3, irreps.dim, irreps.dim)
    assert (lhs - rhs).abs().max() <= 1e-10
    # improper: -R acts by the parity of each block
    D_neg = irreps.D_from_matrix(-R1)
    signs = torch.cat([torch.full((ir.dim,), float(ir.p)) for mul, ir in irreps for _ in range(mul)]).double()
    assert (D_neg - irreps.D_from_matrix(R1) * signs[:, None]).abs().max() <= 1e-12


def test_D1_is_the_rotation_matrix():
    R = _rotations(20, seed=6)
    assert (o3.wigner_D_from_matrix(1, R) - R).abs().max() <= 1e-13
    alpha, beta, gamma = _angles(20, seed=7)
    assert (o3.wigner_D(1, alpha, beta, gamma) - o3.angles_to_matrix(alpha, beta, gamma)).abs().max() <= 1e-13


def test_D_of_axis_rotations():
    t = torch.linspace(-3, 3, 7, dtype=torch.float64)
    for l in (0, 1, 4, 11, LMAX_HIGH):
        J = o3.J_matrix(l)
        Dy = o3.wigner_D_y(l, t)
        assert (Dy - o3.wigner_D(l, t, torch.zeros_like(t), torch.zeros_like(t))).abs().max() <= 1e-12, l
        Dx = o3.wigner_D(l, torch.zeros_like(t), t, torch.zeros_like(t))
        assert (Dx - J @ Dy @ J.T).abs().max() <= 1e-12, l
        assert (J @ J.T - torch.eye(2 * l + 1, dtype=J.dtype)).abs().max() <= 1e-12, l


def test_wigner_3j_invariance_up_to_l24():
    R = _rotations(2, seed=8)
    for l1, l2, l3 in [(24, 24, 24), (12, 12, 24), (7, 10, 15), (0, 24, 24), (1, 23, 24), (5, 8, 13)]:
        C = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        assert abs(float(C.norm()) - 1) <= 1e-12
        for r in R:
            D1, D2, D3 = (o3.wigner_D_from_matrix(l, r) for l in (l1, l2, l3))
            rotated = torch.einsum("il,jm,kn,lmn->ijk", D1, D2, D3, C)
            assert (rotated - C).abs().max() <= 1e-10, (l1, l2, l3)


def test_wigner_3j_symmetries():
    # C(l2, l1, l3) is C(l1, l2, l3) transposed up to the sign (-1)^(l1+l2+l3)
    for l1, l2, l3 in [(1, 1, 2), (2, 3, 4), (3, 3, 3), (2, 5, 4), (6, 4, 8)]:
        C = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        Ct = o3.wigner_3j(l2, l1, l3, dtype=torch.float64)
        assert (Ct - (-1) ** (l1 + l2 + l3) * C.transpose(0, 1)).abs().max() <= 1e-14
    # (l, l, 0) is the identity / sqrt(2l+1)
    for l in (0, 3, 9):
        C = o3.wigner_3j(l, l, 0, dtype=torch.float64)[:, :, 0]
        assert (C - torch.eye(2 * l + 1, dtype=C.dtype) / math.sqrt(2 * l + 1)).abs().max() <= 1e-14


def test_wigner_3j_dtype_follows_request_or_default(float64_default):
    assert o3.wigner_3j(1, 1, 2).dtype == torch.float64
    assert o3.wigner_3j(1, 1, 2, dtype=torch.float32).dtype == torch.float32


def test_float32_accuracy():
    """float32 Wigner-D against float64 at the same (float32) angles."""
    alpha, beta, gamma = o3.rand_angles(1000, dtype=torch.float32, generator=torch.Generator().manual_seed(9))
    err = {}
    for l in (12, 24):
        D32 = o3.wigner_D(l, alpha, beta, gamma)
        assert D32.dtype == torch.float32
        D64 = o3.wigner_D(l, alpha.double(), beta.double(), gamma.double())
        err[l] = float((D32.double() - D64).abs().max())
    # measured on 1,000 rotations: l = 12: 4.1e-6, l = 24: 6.9e-6 (e3nn 0.6.0: 3.8e-5 at l = 12)
    assert err[12] <= 3e-5, err
    assert err[24] <= 5e-5, err


# ----------------------------------------------------------------------------------- bad input


def test_bad_input_errors():
    with pytest.raises(ValueError, match="l must be >= 0, got -1"):
        o3.wigner_D(-1, 0.1, 0.2, 0.3)
    with pytest.raises(TypeError, match="l must be an int, got float"):
        o3.wigner_D(2.0, 0.1, 0.2, 0.3)
    with pytest.raises(TypeError, match="l must be an int, got bool"):
        o3.wigner_D(True, 0.1, 0.2, 0.3)
    with pytest.raises(TypeError, match="alpha must be a floating-point tensor"):
        o3.wigner_D(1, torch.tensor(1), 0.2, 0.3)
    with pytest.raises(ValueError, match="l must be >= 0"):
        o3.J_matrix(-3)
    with pytest.raises(ValueError, match="l must be >= 0"):
        o3.wigner_D_y(-1, 0.5)
    with pytest.raises(ValueError, match=r"violates \|l1 - l2\| <= l3 <= l1 \+ l2"):
        o3.wigner_3j(1, 1, 3)
    with pytest.raises(ValueError, match=r"\(l1, l2, l3\) = \(5, 1, 2\) violates"):
        o3.wigner_3j(5, 1, 2)
    with pytest.raises(ValueError, match="l2 must be >= 0"):
        o3.wigner_3j(1, -1, 1)
    with pytest.raises(TypeError, match="l3 must be an int"):
        o3.wigner_3j(1, 1, 1.0)
    with pytest.raises(ValueError, match="not orthogonal"):
        o3.wigner_D_from_matrix(2, 2 * torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="improper"):
        o3.wigner_D_from_matrix(2, -torch.eye(3, dtype=torch.float64))
