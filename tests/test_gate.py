"""Gate activation: structure as e3nn's, values as the formula, exact O(3) equivariance."""

from __future__ import annotations

import pytest
import torch

from escn.nn.gate import Gate
from escn.nn.radial import second_moment_scale
from escn.o3 import Irreps
from escn.testing import equivariance_error

silu, tanh, sigmoid, absolute = torch.nn.functional.silu, torch.tanh, torch.sigmoid, torch.abs


pytestmark = pytest.mark.usefixtures("float64_default")  # shared fixture in conftest.py


CASES = [
    ("4x0e+2x0o", [silu, tanh], "3x0e+1x0o", [sigmoid, tanh], "2x1o+1x2e+1x3o"),
    ("2x0e", [silu], "2x0e", [sigmoid], "1x1o+1x1e"),
    ("1x0o", [absolute], "2x0o", [tanh], "2x1o"),  # even act on 0o -> 0e; odd gates flip gated parity
    ("", [], "2x0e", [sigmoid], "2x2e"),
]


@pytest.mark.parametrize("scalars, acts, gates, gate_acts, gated", CASES)
def test_gate_equivariance_structure_and_values(scalars, acts, gates, gate_acts, gated):
    gate = Gate(scalars, acts, gates, gate_acts, gated)
    x = gate.irreps_in.randn(7, -1)
    errs = equivariance_error(gate, [x], [gate.irreps_in], gate.irreps_out)
    assert max(errs.values()) <= 1e-12, errs
    out = gate(x)
    assert out.shape == (7, gate.irreps_out.dim)
    # formula: scalars activated (unit second moment), each gated irrep times its activated gate
    s_dim, g_dim = Irreps(scalars).dim, Irreps(gates).dim
    expected = []
    off = 0
    for (mul, _ir), act in zip(Irreps(scalars), acts):
        expected.append(act(x[:, off : off + mul]) * second_moment_scale(act))
        off += mul
    g_vals = []
    off = s_dim
    for (mul, _ir), act in zip(Irreps(gates), gate_acts):
        g_vals.append(act(x[:, off : off + mul]) * second_moment_scale(act))
        off += mul
    g_all = torch.cat(g_vals, dim=1) if g_vals else x[:, :0]
    off = s_dim + g_dim
    k = 0
    for mul, ir in Irreps(gated):
        for _ in range(mul):
            expected.append(x[:, off : off + ir.dim] * g_all[:, k : k + 1])
            off += ir.dim
            k += 1
    assert (out - torch.cat(expected, dim=1)).abs().max() <= 1e-14


@pytest.mark.parametrize("scalars, acts, gates, gate_acts, gated", CASES[:3])
def test_gate_output_irreps_match_e3nn(scalars, acts, gates, gate_acts, gated):
    e3nn_nn = pytest.importorskip("e3nn.nn")
    ours = Gate(scalars, acts, gates, gate_acts, gated)
    theirs = e3nn_nn.Gate(scalars, acts, gates, gate_acts, gated)
    assert ours.irreps_out.simplify() == Irreps(str(theirs.irreps_out)).simplify()
    # e3nn reports (and expects) its input sorted; ours is the plain concatenation, same multiset
    assert ours.irreps_in.sort().irreps.simplify() == Irreps(str(theirs.irreps_in)).sort().irreps.simplify()


def test_gate_bad_input():
    with pytest.raises(ValueError, match="must be equal"):
        Gate("2x0e", [silu, silu][:1], "1x0e", [sigmoid], "2x1o")
    with pytest.raises(ValueError, match="odd or even"):
        Gate("1x0o", [silu], "", [], "")
    with pytest.raises(ValueError, match="only scalars"):
        Gate("1x1o", [silu], "", [], "")
    with pytest.raises(ValueError, match="one activation per entry"):
        Gate("2x0e+1x0o", [silu], "", [], "")
    gate = Gate("2x0e", [silu], "1x0e", [sigmoid], "1x1o")
    with pytest.raises(ValueError, match="last dimension"):
        gate(torch.zeros(3, 5))
