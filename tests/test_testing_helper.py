"""The equivariance checker: ~0 for correctly declared equivariant functions, large errors for
wrong declarations (parity, points vs vectors) and for non-equivariant functions."""

from __future__ import annotations

import pytest
import torch

from escn import o3
from escn.testing import CARTESIAN_POINTS, assert_equivariant, equivariance_error, transform

pytestmark = pytest.mark.usefixtures("single_thread")

LMAX = 6
SH_IRREPS = "+".join(f"{l}{'e' if l % 2 == 0 else 'o'}" for l in range(LMAX + 1))  # 0e+1o+2e+...


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sh(x: torch.Tensor) -> torch.Tensor:
    return o3.spherical_harmonics(list(range(LMAX + 1)), x, True, "component")


def _vectors(n: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, dtype=torch.float64, generator=_gen(seed))


def test_spherical_harmonics_are_equivariant_when_declared_correctly():
    errors = equivariance_error(_sh, [_vectors()], ["1o"], SH_IRREPS, generator=_gen(1))
    assert set(errors) == {"rotation", "reflection", "translation"}
    assert max(errors.values()) <= 1e-12, errors
    # Irreps objects and Irreps.spherical_harmonics declare the same thing
    errors = assert_equivariant(_sh, [_vectors()], [o3.Irreps("1o")], o3.Irreps.spherical_harmonics(LMAX), tol=1e-12)
    assert max(errors.values()) <= 1e-12


def test_wrong_parity_gives_a_large_reflection_error():
    wrong = SH_IRREPS.replace("o", "e")  # 1e, 3e, 5e: pseudo-vector-like blocks
    errors = equivariance_error(_sh, [_vectors()], ["1o"], wrong, generator=_gen(2))
    assert errors["rotation"] <= 1e-12, errors  # rotations cannot see parity
    assert errors["reflection"] > 0.5, errors
    with pytest.raises(AssertionError, match=r"not equivariant within 1e-06: \{'reflection'"):
        assert_equivariant(_sh, [_vectors()], ["1o"], wrong, tol=1e-6)
    # declaring the input a pseudo-vector is wrong too
    errors = equivariance_error(_sh, [_vectors()], ["1e"], SH_IRREPS, generator=_gen(3))
    assert errors["reflection"] > 0.5 and errors["rotation"] <= 1e-12, errors


def test_points_versus_vectors_under_translation():
    pos = _vectors(8, seed=4)

    def sh_of_positions(p):  # not translation invariant: uses absolute positions
        return _sh(p)

    def sh_of_relative_vectors(p):  # translation invariant: differences of positions
        return _sh(p[1:] - p[:1])

    errors = equivariance_error(sh_of_positions, [pos], [CARTESIAN_POINTS], SH_IRREPS, generator=_gen(5))
    assert errors["rotation"] <= 1e-12 and errors["reflection"] <= 1e-12, errors
    assert errors["translation"] > 0.1, errors
    with pytest.raises(AssertionError, match="translation"):
        assert_equivariant(sh_of_positions, [pos], [CARTESIAN_POINTS], SH_IRREPS, tol=1e-9)

    errors = assert_equivariant(sh_of_relative_vectors, [pos], [CARTESIAN_POINTS], SH_IRREPS, tol=1e-12)
    assert errors["translation"] <= 1e-12

    # declaring positions as plain vectors ("1o") hides the translation: the checker cannot see it
    errors = equivariance_error(sh_of_positions, [pos], ["1o"], SH_IRREPS, generator=_gen(6))
    assert errors["translation"] <= 1e-12  # D(identity) via Euler angles: ~1e-15


def test_non_equivariant_function_is_caught():
    scale = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    errors = equivariance_error(lambda x: x * scale, [_vectors()], ["1o"], "1o", generator=_gen(7))
    assert errors["rotation"] > 0.1 and errors["translation"] <= 1e-12, errors
    with pytest.raises(AssertionError, match="rotation"):
        assert_equivariant(lambda x: x * scale, [_vectors()], ["1o"], "1o", tol=1e-6)


def test_several_inputs_and_outputs_with_invariant_arguments():
    x = _vectors(10, seed=8)
    feats = torch.randn(10, 1 + 3 + 5, dtype=torch.float64, generator=_gen(9))  # 0e + 1o + 2e
    index = torch.arange(10)
    weights = torch.rand(10, 1, dtype=torch.float64, generator=_gen(10))

    def fn(vec, f, idx, w):
        y = o3.spherical_harmonics([0, 1, 2], vec, True, "component")
        return y * w + f[idx], (vec * vec).sum(-1, keepdim=True), vec.norm(dim=-1)[:, None] * f[:, 1:4]

    decl_in = ["1o", "0e+1o+2e", None, None]
    errors = assert_equivariant(fn, [x, feats, index, weights], decl_in, ["0e+1o+2e", "0e", "1o"], tol=1e-12)
    assert max(errors.values()) <= 1e-12
    # a wrong declaration of one output among several is found
    errors = equivariance_error(fn, [x, feats, index, weights], decl_in, ["0e+1o+2e", "0e", "1e"], generator=_gen(11))
    assert errors["reflection"] > 0.1 and errors["rotation"] <= 1e-12, errors


def test_selected_kinds_and_trials():
    errors = equivariance_error(
        _sh, [_vectors()], ["1o"], SH_IRREPS, rotations=True, reflections=False, translations=False, trials=5
    )
    assert list(errors) == ["rotation"] and errors["rotation"] <= 1e-12
    errors = equivariance_error(_sh, [_vectors()], ["1o"], SH_IRREPS, rotations=False, translations=False)
    assert list(errors) == ["reflection"]


def test_float32_errors_are_small_but_not_zero():
    x = _vectors().float()
    errors = equivariance_error(_sh, [x], ["1o"], SH_IRREPS, generator=_gen(12))
    # float32 spherical harmonics up to l = 6: ~1e-6 measured
    assert max(errors.values()) <= 1e-4, errors


def test_declaration_errors():
    x = _vectors()
    with pytest.raises(ValueError, match="got 1 inputs but 2 declarations"):
        equivariance_error(_sh, [x], ["1o", None], SH_IRREPS)
    with pytest.raises(ValueError, match="fn returned 2 tensors but irreps_out declares 3"):
        equivariance_error(lambda v: (v, v), [x], ["1o"], ["1o", "1o", "1o"])
    with pytest.raises(ValueError, match="must have last dimension 5"):
        equivariance_error(lambda v: v, [x], ["2e"], "2e")
    with pytest.raises(ValueError, match=r"cartesian points must have shape \(\.\.\., 3\)"):
        transform(torch.zeros(4, 2), CARTESIAN_POINTS, torch.eye(3), torch.zeros(3))
    with pytest.raises(TypeError, match="declared irreps must be"):
        equivariance_error(_sh, [x], [3], SH_IRREPS)
    with pytest.raises(TypeError, match="must be a tensor"):
        transform([1.0, 2.0, 3.0], o3.Irreps("1o"), torch.eye(3), torch.zeros(3))


def test_transform_matches_definition():
    R = o3.rand_matrix(dtype=torch.float64, generator=_gen(13))
    t = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x = _vectors(5, seed=14)
    assert torch.allclose(transform(x, CARTESIAN_POINTS, R, t), x @ R.T + t, atol=1e-15)
    assert torch.allclose(transform(x, o3.Irreps("1o"), R, t), x @ R.T, atol=1e-14)
    assert torch.allclose(transform(x, o3.Irreps("1o"), -R, t), -(x @ R.T), atol=1e-14)
    assert torch.allclose(transform(x, o3.Irreps("1e"), -R, t), x @ R.T, atol=1e-14)
    assert transform(x, None, R, t) is x
