"""Rotation matrices and Euler angles in e3nn's convention.

A rotation given by angles ``(alpha, beta, gamma)`` is ``R = R_y(alpha) R_x(beta) R_y(gamma)``.
A unit vector with angles ``(alpha, beta)`` is ``(sin(alpha) sin(beta), cos(beta), cos(alpha) sin(beta))``:
``beta`` is measured from the y axis and ``alpha`` from the z axis towards the x axis.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


def _as_tensor(x: Tensor | float, name: str) -> Tensor:
    if isinstance(x, Tensor):
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
        return x
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return torch.tensor(float(x), dtype=torch.get_default_dtype())
    raise TypeError(f"{name} must be a tensor or a float, got {type(x).__name__}")


def matrix_x(angle: Tensor | float) -> Tensor:
    """Rotation by ``angle`` about the x axis; shape ``angle.shape + (3, 3)``."""
    a = _as_tensor(angle, "angle")
    c, s = a.cos(), a.sin()
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([torch.stack([o, z, z], -1), torch.stack([z, c, -s], -1), torch.stack([z, s, c], -1)], -2)


def matrix_y(angle: Tensor | float) -> Tensor:
    """Rotation by ``angle`` about the y axis; shape ``angle.shape + (3, 3)``."""
    a = _as_tensor(angle, "angle")
    c, s = a.cos(), a.sin()
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([torch.stack([c, z, s], -1), torch.stack([z, o, z], -1), torch.stack([-s, z, c], -1)], -2)


def matrix_z(angle: Tensor | float) -> Tensor:
    """Rotation by ``angle`` about the z axis; shape ``angle.shape + (3, 3)``."""
    a = _as_tensor(angle, "angle")
    c, s = a.cos(), a.sin()
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1), torch.stack([z, z, o], -1)], -2)


def angles_to_matrix(alpha: Tensor | float, beta: Tensor | float, gamma: Tensor | float) -> Tensor:
    """``R_y(alpha) R_x(beta) R_y(gamma)``; angles broadcast, result shape ``(..., 3, 3)``."""
    alpha, beta, gamma = torch.broadcast_tensors(
        _as_tensor(alpha, "alpha"), _as_tensor(beta, "beta"), _as_tensor(gamma, "gamma")
    )
    return matrix_y(alpha) @ matrix_x(beta) @ matrix_y(gamma)


def angles_to_xyz(alpha: Tensor | float, beta: Tensor | float) -> Tensor:
    """Unit vector of spherical angles ``(alpha, beta)``; shape ``(..., 3)``."""
    a, b = torch.broadcast_tensors(_as_tensor(alpha, "alpha"), _as_tensor(beta, "beta"))
    return torch.stack([a.sin() * b.sin(), b.cos(), a.cos() * b.sin()], dim=-1)


def xyz_to_angles(xyz: Tensor) -> tuple[Tensor, Tensor]:
    """Spherical angles ``(alpha, beta)`` of vectors ``xyz`` of shape ``(..., 3)`` (normalised first).

    Raises ``ValueError`` for zero-length or non-finite vectors.
    """
    if not isinstance(xyz, Tensor) or not xyz.is_floating_point():
        raise TypeError("xyz must be a floating-point tensor of shape (..., 3)")
    if xyz.ndim < 1 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz must have shape (..., 3), got {tuple(xyz.shape)}")
    if not torch.isfinite(xyz).all():
        raise ValueError("xyz contains NaN or infinite entries")
    norm = xyz.norm(dim=-1, keepdim=True)
    if (norm == 0).any():
        raise ValueError("xyz contains zero-length vectors, whose angles are undefined")
    u = xyz / norm
    # atan2 rather than acos(u_y): acos loses half the digits next to the poles (beta ~ 1e-9
    # came out as 0, so angles_to_matrix(matrix_to_angles(R)) was off by 1e-9 there)
    beta = torch.atan2(torch.hypot(u[..., 0], u[..., 2]), u[..., 1])
    alpha = torch.atan2(u[..., 0], u[..., 2])
    return alpha, beta


def check_rotation(R: Tensor, name: str = "R", allow_improper: bool = False) -> None:
    """Raise ``ValueError`` unless ``R`` (shape ``(..., 3, 3)``) is orthogonal with det +1
    (or +-1 when ``allow_improper``), within a tolerance suited to its dtype."""
    if not isinstance(R, Tensor) or not R.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of shape (..., 3, 3)")
    if R.ndim < 2 or R.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must have shape (..., 3, 3), got {tuple(R.shape)}")
    if not torch.isfinite(R).all():
        raise ValueError(f"{name} contains NaN or infinite entries")
    tol = 1e-4 if R.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-9
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    err = (R @ R.transpose(-1, -2) - eye).abs().amax() if R.numel() else R.new_zeros(())
    if err > tol:
        raise ValueError(f"{name} is not orthogonal: max |R R^T - I| = {float(err):.3g} > {tol:g}")
    if not allow_improper and R.numel() and (torch.det(R) < 0).any():
        raise ValueError(f"{name} contains an improper matrix (det = -1) where a rotation is required")


def matrix_to_angles(R: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Euler angles ``(alpha, beta, gamma)`` with ``angles_to_matrix(alpha, beta, gamma) == R``.

    ``R`` has shape ``(..., 3, 3)`` and must be a rotation (``ValueError`` otherwise).
    """
    check_rotation(R)
    y_image = R[..., :, 1]  # R @ e_y
    alpha, beta = xyz_to_angles(y_image)
    rest = angles_to_matrix(alpha, beta, torch.zeros_like(alpha)).transpose(-1, -2) @ R
    gamma = torch.atan2(rest[..., 0, 2], rest[..., 0, 0])
    return alpha, beta, gamma


def rand_matrix(
    *shape: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Uniformly (Haar) distributed random rotations of shape ``shape + (3, 3)``."""
    q = torch.randn(*shape, 4, dtype=dtype, device=device, generator=generator)
    q = q / q.norm(dim=-1, keepdim=True)
    return quaternion_to_matrix(q)


def rand_angles(
    *shape: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Euler angles of Haar-random rotations, each of shape ``shape``."""
    alpha, gamma = 2 * math.pi * torch.rand(2, *shape, dtype=dtype, device=device, generator=generator)
    beta = torch.rand(*shape, dtype=dtype, device=device, generator=generator).mul(2).sub(1).acos()
    return alpha, beta, gamma


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrix of unit quaternions ``q = (w, x, y, z)`` of shape ``(..., 4)`` -> ``(..., 3, 3)``."""
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )
