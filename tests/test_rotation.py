"""Rotations and Euler angles: equal to e3nn 0.6.0, round trips, and clear errors on bad input."""

from __future__ import annotations

import math

import pytest
import torch

from escn import o3

pytestmark = pytest.mark.usefixtures("single_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _angles(n: int, seed: int):
    return o3.rand_angles(n, dtype=torch.float64, generator=_gen(seed))


# ------------------------------------------------------------------------------------- vs e3nn


def test_axis_matrices_match_e3nn(e3nn_o3):
    t = torch.cat(
        [
            torch.linspace(-7, 7, 29, dtype=torch.float64),
            torch.tensor([0.0, math.pi, -math.pi / 2], dtype=torch.float64),
        ]
    )
    for name in ("matrix_x", "matrix_y", "matrix_z"):
        ours = getattr(o3, name)(t)
        ref = getattr(e3nn_o3, name)(t)
        assert ours.shape == ref.shape == (t.shape[0], 3, 3)
        assert (ours - ref).abs().max() <= 1e-12, name
        # batch shapes are kept
        assert getattr(o3, name)(t.reshape(1, -1, 1)).shape == (1, t.shape[0], 1, 3, 3)


def test_angles_to_matrix_matches_e3nn(e3nn_o3):
    alpha, beta, gamma = _angles(200, seed=0)
    ours = o3.angles_to_matrix(alpha, beta, gamma)
    assert (ours - e3nn_o3.angles_to_matrix(alpha, beta, gamma)).abs().max() <= 1e-12
    # broadcasting
    a, b, c = alpha[:4, None], beta[None, :5], gamma[0]
    assert (o3.angles_to_matrix(a, b, c) - e3nn_o3.angles_to_matrix(a, b, c)).abs().max() <= 1e-12


def test_matrix_to_angles_matches_e3nn(e3nn_o3, float64_default):
    R = o3.rand_matrix(200, dtype=torch.float64, generator=_gen(1))
    ours = torch.stack(o3.matrix_to_angles(R))
    ref = torch.stack(e3nn_o3.matrix_to_angles(R))
    assert (ours - ref).abs().max() <= 1e-12
    # axis rotations (beta = 0 or pi: alpha and gamma are not unique, compare the matrices)
    t = torch.linspace(-3, 3, 7, dtype=torch.float64)
    special = torch.cat([o3.matrix_x(t), o3.matrix_y(t), o3.matrix_z(t), torch.eye(3, dtype=torch.float64)[None]])
    ours = o3.matrix_to_angles(special)
    ref = e3nn_o3.matrix_to_angles(special)
    assert (o3.angles_to_matrix(*ours) - special).abs().max() <= 1e-12
    assert (o3.angles_to_matrix(*ours) - e3nn_o3.angles_to_matrix(*ref)).abs().max() <= 1e-12


def test_xyz_to_angles_matches_e3nn(e3nn_o3):
    x = torch.randn(300, 3, dtype=torch.float64, generator=_gen(2)) * 3
    x = torch.cat([x, torch.eye(3, dtype=x.dtype), -torch.eye(3, dtype=x.dtype)])
    ours = torch.stack(o3.xyz_to_angles(x))
    ref = torch.stack(e3nn_o3.xyz_to_angles(x))
    assert (ours - ref).abs().max() <= 1e-12
    alpha, beta = _angles(100, seed=3)[:2]
    assert (o3.angles_to_xyz(alpha, beta) - e3nn_o3.angles_to_xyz(alpha, beta)).abs().max() <= 1e-12


# ------------------------------------------------------------------------------ round trips


def test_round_trips():
    R = o3.rand_matrix(500, dtype=torch.float64, generator=_gen(4))
    assert (o3.angles_to_matrix(*o3.matrix_to_angles(R)) - R).abs().max() <= 1e-12
    x = torch.randn(500, 3, dtype=torch.float64, generator=_gen(5))
    u = x / x.norm(dim=-1, keepdim=True)
    assert (o3.angles_to_xyz(*o3.xyz_to_angles(x)) - u).abs().max() <= 1e-12
    # the angles of a vector are those of the rotation carrying e_y onto it
    alpha, beta = o3.xyz_to_angles(x)
    Rv = o3.angles_to_matrix(alpha, beta, torch.zeros_like(alpha))
    assert (Rv[..., :, 1] - u).abs().max() <= 1e-12


def test_round_trips_next_to_the_poles():
    # beta within 1e-9 of 0 or pi: the angles must come from atan2, not acos (which returned
    # beta = 0 for beta = 1e-9 and left a 1e-9 error in the rebuilt matrix)
    g = _gen(9)
    alpha, _, gamma = o3.rand_angles(20, dtype=torch.float64, generator=g)
    for b in (1e-9, 1e-12, math.pi - 1e-9, 0.0, math.pi):
        beta = torch.full_like(alpha, b)
        R = o3.angles_to_matrix(alpha, beta, gamma)
        assert (o3.angles_to_matrix(*o3.matrix_to_angles(R)) - R).abs().max() <= 1e-14, b
        assert (o3.wigner_D_from_matrix(3, R) - o3.wigner_D(3, alpha, beta, gamma)).abs().max() <= 1e-13, b
    x = torch.tensor([[1e-9, 1.0, 0.0], [0.0, -2.0, 3e-9]], dtype=torch.float64)
    _, beta = o3.xyz_to_angles(x)
    assert abs(float(beta[0]) - 1e-9) <= 1e-20
    assert abs(float(beta[1]) - (math.pi - 1.5e-9)) <= 1e-15


def test_rand_matrix_is_a_rotation():
    R = o3.rand_matrix(2, 1000, dtype=torch.float64, generator=_gen(6))
    assert R.shape == (2, 1000, 3, 3)
    o3.check_rotation(R)
    assert (torch.linalg.det(R) - 1).abs().max() <= 1e-12
    # Haar: the image of a fixed axis is uniform on the sphere, mean ~ 0
    assert R[..., :, 1].mean(dim=(0, 1)).abs().max() < 0.1
    alpha, beta, gamma = o3.rand_angles(3, 4, dtype=torch.float64, generator=_gen(7))
    assert alpha.shape == beta.shape == gamma.shape == (3, 4)
    assert bool(((beta >= 0) & (beta <= math.pi)).all())


def test_quaternion_to_matrix():
    q = torch.tensor([math.cos(0.35), 0.0, math.sin(0.35), 0.0], dtype=torch.float64)  # 0.7 rad about y
    assert (o3.quaternion_to_matrix(q) - o3.matrix_y(torch.tensor(0.7, dtype=torch.float64))).abs().max() <= 1e-15


# ----------------------------------------------------------------------------------- bad input


def test_matrix_to_angles_rejects_non_rotations():
    R = o3.rand_matrix(4, dtype=torch.float64, generator=_gen(8))
    with pytest.raises(ValueError, match=r"R is not orthogonal: max \|R R\^T - I\|"):
        o3.matrix_to_angles(2 * R)
    with pytest.raises(ValueError, match="R is not orthogonal"):
        o3.matrix_to_angles(R + 1e-6)
    improper = R.clone()
    improper[2] = -improper[2]
    with pytest.raises(ValueError, match=r"improper matrix \(det = -1\)"):
        o3.matrix_to_angles(improper)
    with pytest.raises(ValueError, match=r"R must have shape \(\.\.\., 3, 3\), got \(4, 3\)"):
        o3.matrix_to_angles(R[:, 0])
    bad = R.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        o3.matrix_to_angles(bad)
    with pytest.raises(TypeError, match="floating-point"):
        o3.matrix_to_angles(torch.eye(3, dtype=torch.int64))
    # float32 gets a float32 tolerance, and improper matrices pass only when allowed
    o3.matrix_to_angles(R.float())
    o3.check_rotation(improper, allow_improper=True)


def test_xyz_to_angles_rejects_bad_vectors():
    with pytest.raises(ValueError, match=r"xyz must have shape \(\.\.\., 3\), got \(4, 2\)"):
        o3.xyz_to_angles(torch.ones(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="zero-length"):
        o3.xyz_to_angles(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN or infinite"):
        o3.xyz_to_angles(torch.tensor([[float("nan"), 0.0, 1.0]], dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        o3.xyz_to_angles(torch.ones(4, 3, dtype=torch.int64))


def test_angle_arguments_are_checked():
    with pytest.raises(TypeError, match="angle must be a floating-point tensor"):
        o3.matrix_x(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="beta must be a tensor or a float"):
        o3.angles_to_matrix(0.1, "0.2", 0.3)
    # plain numbers are accepted
    assert o3.matrix_z(0.5).shape == (3, 3)
