"""Tests of escn.o3.irreps against e3nn 0.6.0 (a test-only oracle) and by direct value checks."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch

from escn.o3.irreps import Irrep, Irreps


@pytest.fixture(scope="module")
def o3():
    e3nn = pytest.importorskip("e3nn")
    from e3nn import o3 as e3nn_o3

    assert e3nn.__version__.startswith("0.6"), e3nn.__version__
    return e3nn_o3


# Strings both libraries must parse identically.
IRREPS_STRINGS = [
    "",
    "   ",
    "0e",
    "0o",
    "1x0e",
    "0x1o",
    "1o",
    "1e",
    "2x1o+3x2e",
    "  2x1o +3x2e ",
    "2 x 1o + 3x 2e",
    "1o+1o",
    "1o + 1o + 1o",
    "3x0e+2x0e+1x1o+0x2e",
    "16x0e + 8x1o + 4x2e",
    "10x0e + 10x1e",
    "1x24e",
    "3x24o + 1x30e",
    "2o + 1e + 0e + 1e",
    "1e + 0e + 1e + 0x2e",
    "0x0e + 0x1o",
    "2x1o + 0x1o + 3x1o",
    "0x1o + 2x1o",
    "3x0e + 0x1o + 2x0e",
    "1y + 2x2y + 3x3y",
    "0o + 0e + 1e + 1o",
    "5x3e+4x2o+3x1e+2x0o+1x0e",
    "100x0e+50x1e",
    "1e+2e+1e+2e",
    "0e+0e+0e",
]


@pytest.mark.parametrize("s", IRREPS_STRINGS)
def test_parse_matches_e3nn(o3, s: str) -> None:
    ours, ref = Irreps(s), o3.Irreps(s)
    assert len(ours) == len(ref)
    for (mul, ir), (rmul, rir) in zip(ours, ref):
        assert isinstance(mul, int) and isinstance(ir, Irrep)
        assert (mul, ir.l, ir.p) == (rmul, rir.l, rir.p)
    assert str(ours) == str(ref)
    assert repr(ours) == repr(ref)
    assert ours.dim == ref.dim
    assert ours.num_irreps == ref.num_irreps
    assert ours.ls == ref.ls
    assert ours.slices() == ref.slices()
    assert all(isinstance(s_, slice) for s_ in ours.slices())
    if ref.ls:
        assert ours.lmax == ref.lmax
    else:
        with pytest.raises(ValueError):
            _ = ours.lmax
    assert str(ours.simplify()) == str(ref.simplify())
    assert str(ours.remove_zero_multiplicities()) == str(ref.remove_zero_multiplicities())
    assert str(ours.regroup()) == str(ref.regroup())
    srt, rsrt = ours.sort(), ref.sort()
    assert str(srt.irreps) == str(rsrt.irreps)
    assert srt.p == rsrt.p
    assert srt.inv == rsrt.inv
    assert isinstance(srt.irreps, Irreps)
    for ir in list(Irrep.iterator(3)) + [Irrep("24e"), Irrep("30e")]:
        assert ours.count(ir) == ref.count(o3.Irrep(str(ir)))
        assert (ir in ours) == (o3.Irrep(str(ir)) in ref)
    assert str(ours + Irreps("2x1o")) == str(ref + o3.Irreps("2x1o"))
    assert str(ours + "0e + 3x2o") == str(ref + "0e + 3x2o")
    assert str(ours * 3) == str(ref * 3)
    assert str(2 * ours) == str(2 * ref)
    assert str(ours * 0) == ""
    # equality: with itself, its parsed string, the e3nn object, and round trips; never with a string
    assert ours == Irreps(str(ours))
    assert ours == Irreps(str(ref))
    assert ours == ref
    assert ours != str(ref)
    assert Irreps(ref) == ours
    assert o3.Irreps(ours) == ref
    assert hash(ours) == hash(Irreps(str(ours)))


def test_concrete_values() -> None:
    x = Irreps("16x0e + 8x1o + 4x2e")
    assert str(x) == "16x0e+8x1o+4x2e"
    assert x.dim == 16 + 24 + 20
    assert x.num_irreps == 28
    assert x.ls == [0] * 16 + [1] * 8 + [2] * 4
    assert x.lmax == 2
    assert x.slices() == [slice(0, 16), slice(16, 40), slice(40, 60)]
    assert x[1] == (8, Irrep(1, -1))
    assert x[1].mul == 8 and x[1].ir == Irrep("1o") and x[1].dim == 24
    assert str(x[1]) == "8x1o"
    assert x[1:] == Irreps("8x1o+4x2e") and isinstance(x[1:], Irreps)
    assert x[::-1] == Irreps("4x2e+8x1o+16x0e")
    assert len(x) == 3
    assert [(m, str(ir)) for m, ir in x] == [(16, "0e"), (8, "1o"), (4, "2e")]

    assert str(Irreps("3x0e+2x0e+1x1o+0x2e").simplify()) == "5x0e+1x1o"
    assert str(Irreps("3x0e+0x1o+2x0e").simplify()) == "5x0e"
    assert str(Irreps("1e + 1e + 0e + 1e").simplify()) == "2x1e+1x0e+1x1e"
    assert str(Irreps("0x1o").simplify()) == ""
    assert str(Irreps("4x0e + 0x1o + 2x3e").remove_zero_multiplicities()) == "4x0e+2x3e"
    assert Irreps("100x0e + 50x1e + 0x2e").lmax == 1

    s = Irreps("2o + 1e + 0e + 1e").sort()
    assert str(s.irreps) == "1x0e+1x1e+1x1e+1x2o"
    assert s.p == (3, 1, 0, 2)
    assert s.inv == (2, 1, 3, 0)
    irreps, p, inv = Irreps("0e + 0o").sort()  # odd sorts before even at equal l
    assert str(irreps) == "1x0o+1x0e" and p == (1, 0) and inv == (1, 0)

    assert Irreps("2x1o + 3x1o + 0e").count("1o") == 5
    assert Irreps("2x1o + 3x1o + 0e").count(Irrep(0, 1)) == 1
    assert Irreps("2x1o").count("1e") == 0
    assert "1o" in Irreps("0x1o") and "1e" not in Irreps("0x1o")
    assert (2, Irrep("1o")) in [tuple(t) for t in Irreps("2x1o")]
    assert Irreps("0e + 1o + 2x1o").index("1o") == 1
    assert Irreps("0e + 1o + 2x1o").index((2, "1o")) == 2
    with pytest.raises(ValueError, match="2e"):
        Irreps("0e").index("2e")

    assert str(Irreps("2x1e") * 3) == "2x1e+2x1e+2x1e"
    assert str((Irreps("2x1e") * 3).simplify()) == "6x1e"
    assert str(2 * Irreps("0e + 1e")) == "1x0e+1x1e+1x0e+1x1e"
    assert str("0e" + Irreps("1o")) == "1x0e+1x1o"
    assert str(Irreps("1o") + Irrep("2e")) == "1x1o+1x2e"
    assert Irreps("1o") != "1x1e"
    assert Irreps("1o") != "not irreps"
    assert Irreps("1o") != 3


def test_constructor_forms() -> None:
    ref = Irreps("2x1o + 1x0e")
    assert Irreps([(2, (1, -1)), (1, (0, 1))]) == ref
    assert Irreps([(2, "1o"), (1, "0e")]) == ref
    assert Irreps([(2, Irrep("1o")), (1, Irrep(0, 1))]) == ref
    assert Irreps([[2, [1, -1]], [1, "0e"]]) == ref
    assert Irreps(["1o", "1o", "0e"]) == Irreps("1o + 1o + 0e")
    assert Irreps([Irrep("1o"), Irrep("0e")]) == Irreps("1x1o+1x0e")
    assert Irreps(["2x1o", Irreps("0e")]) == ref  # strings/Irreps items are concatenated
    assert Irreps(ref) == ref and Irreps(ref) is not None
    assert Irreps(Irrep("3o")) == Irreps("1x3o")
    assert Irreps() == Irreps("") == Irreps(None) == Irreps([])
    assert str(Irreps()) == ""
    assert Irreps(iter([(1, "0e")])) == Irreps("0e")
    assert Irreps(list(ref)) == ref  # from its own _MulIr items


@pytest.mark.parametrize("lmax", [0, 1, 2, 3, 6, 12, 25])
@pytest.mark.parametrize("p", [-1, 1])
def test_spherical_harmonics_matches_e3nn(o3, lmax: int, p: int) -> None:
    ours = Irreps.spherical_harmonics(lmax, p)
    assert str(ours) == str(o3.Irreps.spherical_harmonics(lmax, p))
    assert ours.dim == (lmax + 1) ** 2
    assert [ir.p for _, ir in ours] == [p**l for l in range(lmax + 1)]


def test_spherical_harmonics_values() -> None:
    assert str(Irreps.spherical_harmonics(3)) == "1x0e+1x1o+1x2e+1x3o"
    assert str(Irreps.spherical_harmonics(4, p=1)) == "1x0e+1x1e+1x2e+1x3e+1x4e"
    with pytest.raises(ValueError, match="lmax"):
        Irreps.spherical_harmonics(-1)
    with pytest.raises(ValueError, match="p must be 1 or -1"):
        Irreps.spherical_harmonics(2, p=0)
    with pytest.raises(TypeError, match="lmax"):
        Irreps.spherical_harmonics(2.0)


# ----------------------------------------------------------------------------- Irrep


def test_irrep_basics(o3) -> None:
    for args in [(0, 1), (1, -1), (2, 1), (7, -1)]:
        ours, ref = Irrep(*args), o3.Irrep(*args)
        assert (ours.l, ours.p, ours.dim) == (ref.l, ref.p, ref.dim)
        assert str(ours) == repr(ours) == repr(ref)
        assert ours.is_scalar() == ref.is_scalar()
        assert Irrep(str(ours)) == ours == Irrep((ours.l, ours.p)) == Irrep(ours) == Irrep(ref)
        assert ours == ref and ours == Irrep(str(ref)) and ours != str(ref)
        assert hash(ours) == hash(Irrep(str(ours)))
    assert Irrep("1y") == Irrep(1, -1) and Irrep("2y") == Irrep(2, 1)
    assert Irrep(" 3e ") == Irrep(3, 1)
    assert Irrep("0e").is_scalar() and not Irrep("0o").is_scalar() and not Irrep("1e").is_scalar()
    assert Irrep("1o") != "1e" and Irrep("1o") != "garbage"
    assert len({Irrep("1o"), Irrep(1, -1), Irrep("1e")}) == 2
    ir = Irrep("1o")
    with pytest.raises(AttributeError):
        ir.l = 3  # immutable


def test_irrep_ordering_matches_e3nn(o3) -> None:
    irs = [Irrep(l, p) for l in range(4) for p in (1, -1)]
    names = [str(ir) for ir in sorted(irs[::-1])]
    ref_names = [repr(ir) for ir in sorted([o3.Irrep(l, p) for l in range(4) for p in (1, -1)][::-1])]
    assert names == ref_names == ["0o", "0e", "1o", "1e", "2o", "2e", "3o", "3e"]
    for a in irs:
        for b in irs:
            assert (a < b) == (o3.Irrep(str(a)) < o3.Irrep(str(b)))


def test_irrep_iterator_matches_e3nn(o3) -> None:
    for lmax in [0, 1, 4]:
        assert [str(x) for x in Irrep.iterator(lmax)] == [repr(x) for x in o3.Irrep.iterator(lmax)]
    assert [str(x) for x in Irrep.iterator(2)] == ["0e", "0o", "1o", "1e", "2e", "2o"]
    it = Irrep.iterator()
    assert [str(next(it)) for _ in range(5)] == ["0e", "0o", "1o", "1e", "2e"]


@pytest.mark.parametrize("a,b", [("0e", "0e"), ("1o", "1o"), ("2e", "1o"), ("1e", "3o"), ("4o", "4o")])
def test_irrep_product_matches_e3nn(o3, a: str, b: str) -> None:
    ours = [str(x) for x in Irrep(a) * Irrep(b)]
    assert ours == [repr(x) for x in o3.Irrep(a) * o3.Irrep(b)]
    la, lb = Irrep(a).l, Irrep(b).l
    assert [Irrep(x).l for x in ours] == list(range(abs(la - lb), la + lb + 1))
    assert Irrep("2e") in list(Irrep("1o") * Irrep("1o"))
    assert [str(x) for x in Irrep("1o") * "1e"] == ["0o", "1o", "2o"]


def test_irrep_arithmetic() -> None:
    assert 3 * Irrep("1e") == Irreps("3x1e")
    assert isinstance(3 * Irrep("1e"), Irreps)
    assert Irrep("1o") + Irrep("2o") == Irreps("1x1o+1x2o")
    assert Irrep("1o") + "2x0e" == Irreps("1x1o+2x0e")
    assert "0e" + Irrep("1o") == Irreps("1x0e+1x1o")


def test_pickle_and_copy() -> None:
    x = Irreps("16x0e + 8x1o + 0x2e + 1y")
    for y in (pickle.loads(pickle.dumps(x)), copy.deepcopy(x), copy.copy(x)):
        assert y == x and isinstance(y, Irreps) and isinstance(y[0].ir, Irrep)
    ir = Irrep("3o")
    assert pickle.loads(pickle.dumps(ir)) == ir and isinstance(pickle.loads(pickle.dumps(ir)), Irrep)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "bad,fragments",
    [
        ("3x1q", ["'3x1q'", "parity must be 'e' or 'o'"]),
        ("1q", ["'1q'", "parity must be 'e' or 'o'"]),
        ("2x1o + 3x1E", ["'3x1E'", "parity must be 'e' or 'o'"]),
        ("-1e", ["'-1e'", "l must be a non-negative integer"]),
        ("2x-1o", ["'2x-1o'", "l must be a non-negative integer"]),
        ("-2x1o", ["'-2x1o'", "multiplicity must be non-negative"]),
        ("x0e", ["'x0e'", "missing the multiplicity"]),
        ("1x", ["'1x'", "missing the irrep"]),
        ("2e3", ["'2e3'", "missing the parity"]),
        ("12", ["'12'", "missing the parity"]),
        ("e", ["'e'", "missing the degree l"]),
        ("0e+", ["'0e+'", "empty term"]),
        ("+0e", ["'+0e'", "empty term"]),
        ("0e++1o", ["'0e++1o'", "empty term"]),
        ("1x1x1o", ["'1x1x1o'", "more than one 'x'"]),
        ("1.5x0e", ["'1.5x0e'", "multiplicity must be a non-negative integer"]),
        ("ax1o", ["'ax1o'", "multiplicity must be a non-negative integer"]),
        ("1.5e", ["'1.5e'", "l must be a non-negative integer"]),
        ("hello", ["'hello'"]),
    ],
)
def test_bad_strings(o3, bad: str, fragments: list) -> None:
    with pytest.raises(ValueError) as info:
        Irreps(bad)
    for frag in fragments:
        assert frag in str(info.value), (frag, str(info.value))
    with pytest.raises(ValueError):  # e3nn rejects them too
        o3.Irreps(bad)


@pytest.mark.parametrize("bad", ["3q", "-1e", "e", "1", "", "1x0e"])
def test_bad_irrep_strings(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        Irrep(bad)
    assert repr(bad) in str(info.value)


def test_bad_irrep_values() -> None:
    with pytest.raises(ValueError, match="l must be a non-negative integer, got -1"):
        Irrep(-1, 1)
    with pytest.raises(ValueError, match="parity p must be 1 .* or -1 .*got 0"):
        Irrep(1, 0)
    with pytest.raises(ValueError, match="parity p"):
        Irrep((1, 2))
    with pytest.raises(ValueError, match=r"\(l, p\)"):
        Irrep((1, 2, 3))
    with pytest.raises(TypeError, match="l must be an int, got float"):
        Irrep(1.0, 1)
    with pytest.raises(TypeError, match="p must be an int"):
        Irrep(1, 1.5)
    with pytest.raises(TypeError, match="parity p .* is required"):
        Irrep(1)
    with pytest.raises(TypeError, match="p must not be given"):
        Irrep("1o", -1)
    with pytest.raises(TypeError, match="NoneType"):
        Irrep(None)
    with pytest.raises(TypeError, match="l must be an int, got bool"):
        Irrep(True, 1)
    with pytest.raises(NotImplementedError):
        Irrep("1o").count(1)


def test_bad_irreps_values() -> None:
    with pytest.raises(TypeError, match="irreps must be .* got int 3"):
        Irreps(3)
    with pytest.raises(TypeError, match="irreps must be .* got float"):
        Irreps(1.5)
    with pytest.raises(TypeError, match="multiplicity .* must be an int, got float 1.5"):
        Irreps([(1.5, "0e")])
    with pytest.raises(ValueError, match="multiplicity must be non-negative, got -1"):
        Irreps([(-1, "0e")])
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        Irreps([(1, 2)])
    with pytest.raises(TypeError, match="irreps term"):
        Irreps([object()])
    with pytest.raises(TypeError, match="irreps term"):
        Irreps([(1, "0e", 3)])
    with pytest.raises(ValueError, match="'3x1q'"):
        Irreps([(2, "1o"), "3x1q"])
    with pytest.raises(ValueError, match="lmax of empty Irreps"):
        _ = Irreps("").lmax
    with pytest.raises(ValueError, match="lmax of empty Irreps '0x1o'"):
        _ = Irreps("0x1o").lmax
    with pytest.raises(TypeError, match="repetition count"):
        Irreps("1o") * 1.5
    with pytest.raises(NotImplementedError):
        Irreps("1o") * Irreps("1o")


# ----------------------------------------------------------------------------- randn


def test_randn_shapes_and_component_normalisation() -> None:
    irreps = Irreps("5x0e + 10x1o + 2x3e")
    assert irreps.dim == 49
    assert irreps.randn(-1).shape == (49,)
    assert irreps.randn(5, -1, 5, normalization="norm").shape == (5, 49, 5)
    assert irreps.randn(2, 3, -1).shape == (2, 3, 49)
    assert Irreps("").randn(4, -1).shape == (4, 0)
    assert Irreps("").randn(4, -1, normalization="norm").shape == (4, 0)
    x = irreps.randn(-1, dtype=torch.float64)
    assert x.dtype == torch.float64 and not x.requires_grad
    y = irreps.randn(3, -1, requires_grad=True)
    assert y.requires_grad and y.is_leaf
    # component normalisation: unit variance per component
    g = torch.Generator().manual_seed(0)
    z = irreps.randn(4000, -1, dtype=torch.float64, generator=g)
    assert abs(z.pow(2).mean().item() - 1.0) < 0.02
    # generator makes it reproducible
    a = irreps.randn(3, -1, generator=torch.Generator().manual_seed(7))
    b = irreps.randn(3, -1, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("s", ["2x0e + 3x1o + 2x2e", "1x24e", "0x1o + 4x1e", "3x5o"])
def test_randn_norm_unit_blocks(s: str) -> None:
    irreps = Irreps(s)
    x = irreps.randn(7, -1, 2, normalization="norm", dtype=torch.float64)
    assert x.shape == (7, irreps.dim, 2)
    for sl, (mul, ir) in zip(irreps.slices(), irreps):
        blocks = x[:, sl, :].reshape(7, mul, ir.dim, 2)
        norms = blocks.norm(dim=2)
        torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-12, rtol=0)


def test_randn_same_numbers_as_e3nn(o3) -> None:
    for normalization in ["component", "norm"]:
        torch.manual_seed(3)
        ours = Irreps("2x0e + 3x1o + 2e").randn(4, -1, 2, normalization=normalization, dtype=torch.float64)
        torch.manual_seed(3)
        ref = o3.Irreps("2x0e + 3x1o + 2e").randn(4, -1, 2, normalization=normalization, dtype=torch.float64)
        torch.testing.assert_close(ours, ref, atol=1e-14, rtol=0)


def test_randn_bad_input() -> None:
    with pytest.raises(ValueError, match="exactly one -1"):
        Irreps("0e").randn(3, 4)
    with pytest.raises(ValueError, match="exactly one -1"):
        Irreps("0e").randn(-1, -1)
    with pytest.raises(ValueError, match="normalization must be 'component' or 'norm', got 'integral'"):
        Irreps("0e").randn(-1, normalization="integral")
    with pytest.raises(TypeError, match="size"):
        Irreps("0e").randn(2.0, -1)


# ----------------------------------------------------------------------------- D matrices


@pytest.fixture
def float64_default():
    """e3nn builds its Wigner-D generators in the default dtype; make that float64 for the comparison."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _random_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """Random orthogonal matrices of shape (n, 3, 3), the second half improper."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, dtype=torch.float64, generator=generator))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]
    q = q * torch.det(q)[:, None, None]  # all proper
    q[n // 2 :] = -q[n // 2 :]  # second half improper
    return q


@pytest.mark.parametrize("s", ["0e", "1o", "1e + 2x1o", "2x0e + 0o + 3x1o + 2e + 2o + 3o", "0x1o + 2x4e + 6o"])
def test_D_from_matrix_matches_e3nn(o3, float64_default, s: str) -> None:
    pytest.importorskip("escn.o3.wigner")
    pytest.importorskip("escn.o3.rotation")
    R = _random_orthogonal(6, torch.Generator().manual_seed(1))
    ours = Irreps(s).D_from_matrix(R)
    ref = o3.Irreps(s).D_from_matrix(R)
    assert ours.shape == (6, Irreps(s).dim, Irreps(s).dim)
    torch.testing.assert_close(ours, ref, atol=1e-9, rtol=0)


def test_D_from_matrix_values() -> None:
    pytest.importorskip("escn.o3.wigner")
    pytest.importorskip("escn.o3.rotation")
    R = _random_orthogonal(4, torch.Generator().manual_seed(2))
    proper = R[:2]
    # l = 1 odd: D(R) = R for proper R (e3nn basis), and the parity-inverted R too
    torch.testing.assert_close(Irreps("1o").D_from_matrix(R), R, atol=1e-10, rtol=0)
    # l = 1 even: D(R) = det(R) R
    torch.testing.assert_close(Irreps("1e").D_from_matrix(R), torch.det(R)[:, None, None] * R, atol=1e-10, rtol=0)
    # inversion acts by the parity on each block
    inv = -torch.eye(3, dtype=torch.float64)
    irreps = Irreps("2x0e + 0o + 1o + 1e + 2e + 2o")
    D = irreps.D_from_matrix(inv)
    signs = [p for mul, (l, p) in irreps for _ in range(mul * (2 * l + 1))]
    torch.testing.assert_close(D, torch.diag(torch.tensor(signs, dtype=torch.float64)), atol=1e-10, rtol=0)
    # block-diagonal, orthogonal, and a homomorphism
    irreps = Irreps("2x1o + 3x2e + 0x1e + 3o")
    DA, DB, DAB = irreps.D_from_matrix(R[0]), irreps.D_from_matrix(R[3]), irreps.D_from_matrix(R[0] @ R[3])
    torch.testing.assert_close(DA @ DB, DAB, atol=1e-10, rtol=0)
    eye = torch.eye(irreps.dim, dtype=torch.float64)
    torch.testing.assert_close(DA @ DA.T, eye, atol=1e-10, rtol=0)
    mask = torch.zeros(irreps.dim, irreps.dim, dtype=torch.bool)
    for sl, (mul, ir) in zip(irreps.slices(), irreps):
        for i in range(mul):
            a = sl.start + i * ir.dim
            mask[a : a + ir.dim, a : a + ir.dim] = True
            torch.testing.assert_close(DA[a : a + ir.dim, a : a + ir.dim], ir.D_from_matrix(R[0]), atol=1e-12, rtol=0)
    assert torch.all(DA[~mask] == 0)
    assert proper.shape == (2, 3, 3)


def test_D_from_angles_matches_e3nn(o3, float64_default) -> None:
    pytest.importorskip("escn.o3.wigner")
    g = torch.Generator().manual_seed(5)
    a, b, c = (torch.rand(5, dtype=torch.float64, generator=g) * 2 * math.pi for _ in range(3))
    k = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    irreps = "3x0e + 1o + 2x1e + 2o + 3e"
    ours = Irreps(irreps).D_from_angles(a, b, c, k)
    ref = o3.Irreps(irreps).D_from_angles(a, b, c, k)
    torch.testing.assert_close(ours, ref, atol=1e-9, rtol=0)
    torch.testing.assert_close(
        Irreps(irreps).D_from_angles(a, b, c), o3.Irreps(irreps).D_from_angles(a, b, c), atol=1e-9, rtol=0
    )
    # broadcasting of scalar angles with a batch
    D = Irreps("1o + 0e").D_from_angles(a[:, None], b[0], 0.3)
    assert D.shape == (5, 1, 4, 4)
    assert Irreps("").D_from_angles(a, b, c).shape == (5, 0, 0)


def test_D_from_matrix_bad_shape() -> None:
    pytest.importorskip("escn.o3.rotation")
    with pytest.raises(ValueError, match=r"R must have shape \(\.\.\., 3, 3\), got \(2, 3\)"):
        Irreps("1o").D_from_matrix(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="R must be a torch.Tensor"):
        Irreps("1o").D_from_matrix([[1, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_equal_irreps_hash_equal_and_strings_are_never_equal():
    """The hash/equality contract: equality is the tuple's, so equal objects hash equal (dict keys, sets), and
    no string equals an Irrep or Irreps (several strings name the same one, so no hash could match them all)."""
    spellings = [Irreps("0e"), Irreps("1x0e"), Irreps([(1, "0e")]), Irreps(Irrep("0e")), Irreps([Irrep(0, 1)])]
    assert all(a == b and hash(a) == hash(b) for a in spellings for b in spellings)
    assert len(set(spellings)) == 1 and {Irreps("1x0e"): 5}[Irreps("0e")] == 5
    assert Irrep("1y") == Irrep("1o") == Irrep(1, -1) == (1, -1)
    assert (
        hash(Irrep("1y")) == hash(Irrep("1o")) == hash((1, -1)) and len({Irrep("1y"), Irrep("1o"), Irrep(1, -1)}) == 1
    )
    assert Irreps("2x1o+1x0e") == ((2, (1, -1)), (1, (0, 1))) and hash(Irreps("2x1o+1x0e")) == hash(
        ((2, (1, -1)), (1, (0, 1)))
    )
    # strings: never equal, in either order, so a string key never collides with an Irreps key
    for obj, text in ((Irreps("1x0e"), "1x0e"), (Irreps("0e"), "0e"), (Irrep("1o"), "1o"), (Irrep("1o"), "1y")):
        assert obj != text and text != obj and not (obj == text)
    table = {"1x0e": "string", Irreps("1x0e"): "irreps"}
    assert len(table) == 2 and table[Irreps("0e")] == "irreps" and table["1x0e"] == "string"
    assert Irreps("1x0e") not in {"1x0e", "0e"} and Irreps("0e") in {Irreps("1x0e")}
    # the order and split of the terms count; simplify() gives one representative
    assert Irreps("2x0e") != Irreps("0e + 0e") and Irreps("0e + 0e").simplify() == Irreps("2x0e")
