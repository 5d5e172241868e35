r"""Irreducible representations of :math:`O(3)` and their direct sums.

:class:`Irrep` describes one irreducible representation :math:`(l, p)` of
:math:`O(3)` and :class:`Irreps` a direct sum of them with multiplicities, written as
e3nn writes them: ``"16x0e + 8x1o + 4x2e"``. Both are immutable tuple subclasses, so
they hash, compare and pickle like tuples and interoperate with e3nn's classes (an
``escn`` ``Irreps`` compares equal to the e3nn ``Irreps`` of the same structure, and
each class's constructor accepts the other's objects).

The classes carry no data. The only tensor-producing methods are :meth:`Irreps.randn`
and the ``D_from_*`` representation matrices (from :mod:`escn.o3.wigner`). Strings are
parsed by :mod:`escn.o3._irreps_parse`, which the lower modules of :mod:`escn.o3` use
too, so that none of them imports this one.
"""

from __future__ import annotations

import itertools
import operator
from typing import Callable, Iterable, Iterator, List, NamedTuple, Optional, Tuple, Union, cast, overload

import torch

from escn.o3._irreps_parse import parse_irrep as _parse_irrep_string
from escn.o3._irreps_parse import parse_irreps
from escn.o3.rotation import matrix_to_angles
from escn.o3.wigner import wigner_D

__all__ = ["Irrep", "Irreps"]

_CHAR_FROM_PARITY = {1: "e", -1: "o"}


def _as_int(value: object, name: str) -> int:
    """Return ``value`` as a python ``int``, raising ``TypeError`` naming ``name`` if it is not integral."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool {value!r}")
    try:
        return operator.index(value)  # type: ignore[call-overload,arg-type]  # accepts int, numpy integers, 0-d integer tensors
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None


def _as_angle_tensors(*xs: object) -> List[torch.Tensor]:
    """Convert angles to tensors, non-tensor inputs taking the dtype/device of the first tensor input."""
    ref = next((x for x in xs if isinstance(x, torch.Tensor)), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.get_default_dtype()
    device = ref.device if ref is not None else None
    return [x if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=dtype, device=device) for x in xs]


def _split_improper(R: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split ``R`` of shape ``(..., 3, 3)`` into a proper rotation and the parity count ``k`` of shape ``(...)``.

    ``R = det(R) * R_proper`` and ``k = (1 - det(R)) / 2``, so ``k = 1`` for improper matrices.
    """
    if not isinstance(R, torch.Tensor):
        raise TypeError(f"R must be a torch.Tensor of shape (..., 3, 3), got {type(R).__name__}")
    if R.dim() < 2 or R.shape[-2:] != (3, 3):
        raise ValueError(f"R must have shape (..., 3, 3), got {tuple(R.shape)}")
    d = torch.det(R).sign()
    return d[..., None, None] * R, (1 - d) / 2


class Irrep(tuple):
    r"""Irreducible representation :math:`(l, p)` of :math:`O(3)`.

    ``l`` is the degree (dimension ``2l+1``) and ``p`` the parity, ``+1`` (``"e"``)
    or ``-1`` (``"o"``). Immutable and hashable; ordered as the tuple ``(l, p)``, so
    for equal ``l`` the odd irrep sorts first (``0o < 0e``), as in e3nn.

    Equality and hash are those of the tuple ``(l, p)``: equal irreps hash equal, whichever way they were
    written (``Irrep("1y") == Irrep("1o") == (1, -1)``). A string never compares equal to an ``Irrep``
    (``Irrep("1o") != "1o"``): parse it first (``Irrep(text)``), or compare ``str(ir)``.

    Args:
        l (int, str, Irrep or tuple):
            The degree, or a whole irrep: ``"1o"``, ``"2e"``, ``"3y"`` (``y`` means
            parity :math:`(-1)^l`, the parity of the spherical harmonics), an ``Irrep``,
            or a pair ``(l, p)``.
        p (int, optional):
            The parity ``1`` or ``-1``; required when ``l`` is an int, forbidden otherwise.

    Examples:
        >>> Irrep(1, -1), Irrep("2e"), Irrep((3, 1)), Irrep("1y")
        (1o, 2e, 3e, 1o)
        >>> Irrep("2o").dim
        5
        >>> list(Irrep("1o") * Irrep("1o"))
        [0e, 1e, 2e]
    """

    def __new__(cls, l: Union[int, str, "Irrep", Tuple[int, int]], p: Optional[int] = None) -> "Irrep":
        if p is None:
            if isinstance(l, Irrep):
                return l
            if isinstance(l, str):
                l, p = _parse_irrep_string(l)
            elif isinstance(l, (tuple, list)):
                # iterate rather than len(): other libraries' irrep tuples may refuse len()
                items = list(iter(l))
                if len(items) != 2:
                    raise ValueError(f"an irrep given as a tuple must be (l, p), got {l!r}")
                l, p = items
            elif isinstance(l, (int,)) or hasattr(l, "__index__"):
                raise TypeError(f"Irrep({l!r}): the parity p (1 or -1) is required when l is an int")
            else:
                raise TypeError(
                    f"Irrep expects l as an int (with p), a string like '1o', an Irrep or a tuple (l, p); "
                    f"got {type(l).__name__} {l!r}"
                )
        elif isinstance(l, (str, Irrep, tuple, list)):
            raise TypeError(f"Irrep({l!r}, {p!r}): p must not be given when l is a {type(l).__name__}")
        l = _as_int(l, "l")
        p = _as_int(p, "p")
        if l < 0:
            raise ValueError(f"l must be a non-negative integer, got {l}")
        if p not in (-1, 1):
            raise ValueError(f"parity p must be 1 (even, 'e') or -1 (odd, 'o'), got {p}")
        return super().__new__(cls, (l, p))

    def __getnewargs__(self) -> Tuple[Tuple[int, int]]:
        return ((self[0], self[1]),)

    @property
    def l(self) -> int:  # noqa: E743
        r"""The degree :math:`l \geq 0`."""
        return self[0]

    @property
    def p(self) -> int:
        r"""The parity, ``1`` (even) or ``-1`` (odd)."""
        return self[1]

    @property
    def dim(self) -> int:
        """The dimension :math:`2l+1`."""
        return 2 * self[0] + 1

    def is_scalar(self) -> bool:
        """True for the even scalar ``0e``."""
        return self[0] == 0 and self[1] == 1

    def __repr__(self) -> str:
        return f"{self[0]}{_CHAR_FROM_PARITY[self[1]]}"

    __str__ = __repr__

    # Equality and hash are the tuple's: Irrep("1o") == Irrep(1, -1) == (1, -1), with equal hashes. A string is
    # never equal to an Irrep (Irrep("1o") != "1o"; compare with Irrep("1o") or str(ir)): several strings name
    # the same irrep ("1o", "1y"), so no hash could agree with all of them.

    @classmethod
    def iterator(cls, lmax: Optional[int] = None) -> Iterator["Irrep"]:
        """Iterate over all irreps, ``0e, 0o, 1o, 1e, 2e, 2o, ...`` (natural parity first), up to ``lmax``.

        Without ``lmax`` the iterator is infinite.
        """
        if lmax is not None:
            lmax = _as_int(lmax, "lmax")
            if lmax < 0:
                raise ValueError(f"lmax must be non-negative, got {lmax}")
        for l in itertools.count():
            if lmax is not None and l > lmax:
                return
            yield cls(l, (-1) ** l)
            yield cls(l, -((-1) ** l))

    def __mul__(self, other: Union["Irrep", str, Tuple[int, int]]) -> Iterator["Irrep"]:  # type: ignore[override]
        """Generate the irreps in the product: ``l = |l1-l2| .. l1+l2`` with parity ``p1*p2``."""
        other = Irrep(other)
        p = self.p * other.p
        return (Irrep(l, p) for l in range(abs(self.l - other.l), self.l + other.l + 1))

    def __rmul__(self, other: int) -> "Irreps":  # type: ignore[override]
        """``n * ir`` is ``Irreps([(n, ir)])``."""
        return Irreps([(_as_int(other, "multiplicity"), self)])

    def __add__(self, other: object) -> "Irreps":  # type: ignore[override]
        """``ir1 + ir2`` is the direct sum ``Irreps``."""
        return Irreps(self) + Irreps(other)  # type: ignore[arg-type]

    def __radd__(self, other: object) -> "Irreps":
        return Irreps(other) + Irreps(self)  # type: ignore[arg-type]

    def count(self, value: object) -> int:  # type: ignore[override]
        """Not meaningful for a single irrep; use :meth:`Irreps.count`."""
        raise NotImplementedError("Irrep.count is not defined; use Irreps.count")

    def index(self, value: object, *args: object) -> int:  # type: ignore[override]
        """Not meaningful for a single irrep; use :meth:`Irreps.index`."""
        raise NotImplementedError("Irrep.index is not defined; use Irreps.index")

    def D_from_angles(
        self,
        alpha: Union[torch.Tensor, float],
        beta: Union[torch.Tensor, float],
        gamma: Union[torch.Tensor, float],
        k: Optional[Union[torch.Tensor, float]] = None,
    ) -> torch.Tensor:
        r"""Representation matrix :math:`p^k D^l(\alpha, \beta, \gamma)`.

        Args:
            alpha, beta, gamma (Tensor of shape ``(...)``):
                Euler angles in e3nn's convention (Y, X, Y), broadcast together.
            k (Tensor of shape ``(...)``, optional):
                How many times parity is applied (0 or 1); default 0.

        Returns:
            Tensor of shape ``(..., 2l+1, 2l+1)``
        """
        if k is None:
            alpha, beta, gamma = _as_angle_tensors(alpha, beta, gamma)
            alpha, beta, gamma = torch.broadcast_tensors(alpha, beta, gamma)
            return wigner_D(self.l, alpha, beta, gamma)
        a, b, c, kt = torch.broadcast_tensors(*_as_angle_tensors(alpha, beta, gamma, k))
        D = wigner_D(self.l, a, b, c)
        if self.p == 1:
            return D
        sign = 1 - 2 * torch.remainder(kt, 2)  # (-1)^k for integer-valued k
        return D * sign.to(D.dtype)[..., None, None]

    def D_from_matrix(self, R: torch.Tensor) -> torch.Tensor:
        r"""Representation matrix of the orthogonal matrix ``R``.

        An improper ``R`` (det -1) is written ``-1 * R_proper``; its matrix is
        :math:`p \, D^l(R_\text{proper})`.

        Args:
            R: ``(..., 3, 3)`` orthogonal matrices (proper or improper).

        Returns:
            Tensor of shape ``(..., 2l+1, 2l+1)``
        """
        R, k = _split_improper(R)
        return self.D_from_angles(*matrix_to_angles(R), k)


class _MulIr(NamedTuple):
    """One term ``mul x ir`` of an :class:`Irreps`."""

    mul: int
    ir: Irrep

    @property
    def dim(self) -> int:
        """``mul * ir.dim``."""
        return self.mul * self.ir.dim

    def __repr__(self) -> str:
        return f"{self.mul}x{self.ir}"

    def __str__(self) -> str:
        return self.__repr__()


class IrrepsSortResult(NamedTuple):
    """Result of :meth:`Irreps.sort`.

    ``irreps`` is the sorted Irreps; ``p[i]`` is the new position of old term ``i``;
    ``inv[j]`` is the old position of new term ``j``.
    """

    irreps: "Irreps"
    p: Tuple[int, ...]
    inv: Tuple[int, ...]


def _parse_irreps_string(text: str) -> List[_MulIr]:
    """Parse ``"16x0e + 8x1o + 2e"`` into terms; ``ValueError`` quoting ``text`` and the bad term otherwise."""
    return [_MulIr(mul, Irrep(l, p)) for mul, l, p in parse_irreps(text)]


IrrepsLike = Union["Irreps", Irrep, str, Iterable[object], None]


class Irreps(tuple):
    r"""Direct sum of irreducible representations of :math:`O(3)`, with multiplicities.

    A tuple of ``_MulIr(mul, ir)`` named tuples; iterate as ``for mul, ir in irreps``.

    Equality and hash are those of the tuple of ``(mul, (l, p))`` terms, so equal Irreps hash equal however
    they were written (``Irreps("0e") == Irreps("1x0e")``, one dict key), and the order and split of the terms
    count (``Irreps("2x0e") != Irreps("0e + 0e")``; compare ``.simplify()`` for the same representation). A
    string never compares equal to an ``Irreps`` (``Irreps("1x0e") != "1x0e"``): parse it first
    (``Irreps(text)``).

    Args:
        irreps (str, Irreps, Irrep, iterable or None):
            ``"16x0e + 8x1o + 4x2e"`` (a term without ``x`` has multiplicity 1; ``""``
            is empty), another ``Irreps``, one ``Irrep``, or an iterable whose items are
            ``(mul, ir)`` pairs (``ir`` an ``Irrep``, a string or an ``(l, p)`` pair),
            ``Irrep`` objects (multiplicity 1), irreps strings or ``Irreps`` (concatenated).

    Examples:
        >>> Irreps("16x0e + 8x1o + 4x2e")
        16x0e+8x1o+4x2e
        >>> Irreps([(2, (1, -1)), (1, "0e")]).dim
        7
        >>> Irreps("1e + 1e + 0e").simplify()
        2x1e+1x0e
    """

    def __new__(cls, irreps: IrrepsLike = None) -> "Irreps":
        if isinstance(irreps, Irreps):
            return super().__new__(cls, irreps)
        if irreps is None:
            return super().__new__(cls, ())
        if isinstance(irreps, str):
            return super().__new__(cls, _parse_irreps_string(irreps))
        if isinstance(irreps, Irrep):
            return super().__new__(cls, (_MulIr(1, irreps),))
        if isinstance(irreps, (bytes, dict, set, frozenset)) or not hasattr(irreps, "__iter__"):
            raise TypeError(
                "irreps must be a string like '16x0e + 8x1o', an Irreps, an Irrep or a list of (mul, ir) pairs; "
                f"got {type(irreps).__name__} {irreps!r}"
            )
        out: List[_MulIr] = []
        for item in irreps:
            if isinstance(item, Irreps):
                out.extend(item)
            elif isinstance(item, str):
                out.extend(_parse_irreps_string(item))
            elif isinstance(item, Irrep):
                out.append(_MulIr(1, item))
            elif isinstance(item, (tuple, list)) and len(list(iter(item))) == 2:
                mul, ir = list(iter(item))
                if isinstance(ir, (int, float)) and not isinstance(ir, bool):
                    raise ValueError(
                        f"Unable to interpret {item!r} as an irreps term: expected (mul, ir) such as (2, '1o') "
                        f"or (2, (1, -1)), got an int/float as ir"
                    )
                mul = _as_int(mul, f"multiplicity in {item!r}")
                if mul < 0:
                    raise ValueError(f"multiplicity must be non-negative, got {mul} in {item!r}")
                out.append(_MulIr(mul, Irrep(ir)))
            else:
                raise TypeError(
                    f"Unable to interpret {item!r} ({type(item).__name__}) as an irreps term; expected a "
                    "(mul, ir) pair, an Irrep or an irreps string"
                )
        return super().__new__(cls, out)

    def __getnewargs__(self) -> Tuple[Tuple[_MulIr, ...]]:
        return (tuple(self),)

    # ---------------------------------------------------------------- constructors
    @staticmethod
    def spherical_harmonics(lmax: int, p: int = -1) -> "Irreps":
        """Irreps of the spherical harmonics ``Y^0 .. Y^lmax``: ``1x0e+1x1o+1x2e+...`` for ``p=-1``.

        ``p=1`` gives all-even irreps (``1x0e+1x1e+...``), the parity ``p**l``.
        """
        lmax = _as_int(lmax, "lmax")
        p = _as_int(p, "p")
        if lmax < 0:
            raise ValueError(f"lmax must be non-negative, got {lmax}")
        if p not in (-1, 1):
            raise ValueError(f"p must be 1 or -1, got {p}")
        return Irreps([(1, Irrep(l, p**l)) for l in range(lmax + 1)])

    # ---------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        """Total dimension ``sum(mul * (2l+1))``."""
        return sum(mul * ir.dim for mul, ir in self)

    @property
    def num_irreps(self) -> int:
        """Sum of the multiplicities."""
        return sum(mul for mul, _ in self)

    @property
    def ls(self) -> List[int]:
        """Each term's ``l`` repeated ``mul`` times, in order."""
        return [ir.l for mul, ir in self for _ in range(mul)]

    @property
    def lmax(self) -> int:
        """The largest ``l`` with non-zero multiplicity; ``ValueError`` if there is none."""
        ls = [ir.l for mul, ir in self if mul > 0]
        if not ls:
            raise ValueError(f"Cannot get lmax of empty Irreps {str(self)!r}")
        return max(ls)

    def slices(self) -> List[slice]:
        """The slice of each term in a feature vector of size ``dim``."""
        out: List[slice] = []
        start = 0
        for mul_ir in self:
            out.append(slice(start, start + mul_ir.dim))
            start += mul_ir.dim
        return out

    # ---------------------------------------------------------------- transforms
    def simplify(self) -> "Irreps":
        """Merge consecutive equal irreps and drop zero multiplicities; does not sort.

        >>> Irreps("1e + 1e + 0e + 1e").simplify()
        2x1e+1x0e+1x1e
        """
        out: List[Tuple[int, Irrep]] = []
        for mul, ir in self:
            if out and out[-1][1] == ir:
                out[-1] = (out[-1][0] + mul, ir)
            elif mul > 0:
                out.append((mul, ir))
        return Irreps(out)

    def remove_zero_multiplicities(self) -> "Irreps":
        """The same terms without those of multiplicity 0."""
        return Irreps([(mul, ir) for mul, ir in self if mul > 0])

    def sort(self) -> IrrepsSortResult:
        """Sort the terms by irrep (stable), returning ``(irreps, p, inv)``.

        ``p[i]`` is where old term ``i`` goes, ``inv[j]`` where new term ``j`` came from.

        >>> Irreps("2o + 1e + 0e + 1e").sort()
        IrrepsSortResult(irreps=1x0e+1x1e+1x1e+1x2o, p=(3, 1, 0, 2), inv=(2, 1, 3, 0))
        """
        order = sorted(range(len(self)), key=lambda i: (tuple.__getitem__(self, i).ir, i))
        inv = tuple(order)
        p = [0] * len(inv)
        for new, old in enumerate(inv):
            p[old] = new
        return IrrepsSortResult(Irreps([self[i] for i in inv]), tuple(p), inv)

    def regroup(self) -> "Irreps":
        """Sort then simplify: each irrep once, in order."""
        return self.sort().irreps.simplify()

    def filter(
        self,
        keep: Union["Irreps", str, Iterable[object], Callable[[_MulIr], bool], None] = None,
        *,
        drop: Union["Irreps", str, Iterable[object], Callable[[_MulIr], bool], None] = None,
        lmax: Optional[int] = None,
    ) -> "Irreps":
        """Keep only the terms whose irrep is in ``keep``, or not in ``drop``, or with ``l <= lmax``.

        ``keep``/``drop`` may be Irreps (strings), lists of irreps, or predicates on ``_MulIr``.
        """
        given = [name for name, v in (("keep", keep), ("drop", drop), ("lmax", lmax)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of keep, drop, lmax; got {', '.join(given)}")
        if lmax is not None:
            lmax = _as_int(lmax, "lmax")
            return Irreps([(mul, ir) for mul, ir in self if ir.l <= lmax])
        sel = keep if keep is not None else drop
        if sel is None:
            return self
        if callable(sel):
            hit = [bool(sel(mul_ir)) for mul_ir in self]
        else:
            if isinstance(sel, (str, Irrep)):
                sel = Irreps(sel)
            irs = {x.ir if isinstance(x, _MulIr) else Irrep(x) for x in sel}  # type: ignore[union-attr,arg-type]
            hit = [ir in irs for _, ir in self]
        want = keep is not None
        return Irreps([mul_ir for mul_ir, h in zip(self, hit) if h == want])

    # ---------------------------------------------------------------- queries
    def count(self, ir: Union[Irrep, str, Tuple[int, int]]) -> int:  # type: ignore[override]
        """Total multiplicity of ``ir`` over all terms."""
        ir = Irrep(ir)
        return sum(mul for mul, irrep in self if irrep == ir)

    def index(self, value: object, *args: int) -> int:  # type: ignore[override]
        """Position of the first term equal to ``value``.

        ``value`` is either an irrep (``Irrep``, ``"1o"``, ``(l, p)``) -- then the first
        term with that irrep, whatever its multiplicity -- or a term ``(mul, ir)``.
        """
        is_term = (
            isinstance(value, (tuple, list))
            and not isinstance(value, Irrep)
            and len(value) == 2
            and isinstance(value[1], (Irrep, str, tuple, list))
        )
        if not is_term:
            ir = Irrep(value)  # type: ignore[arg-type]
            for i, (_, irrep) in enumerate(self):
                if irrep == ir:
                    return i
            raise ValueError(f"{ir} is not in {str(self)!r}")
        term = Irreps([value])[0]
        return tuple.index(self, term, *args)

    def __contains__(self, ir: object) -> bool:
        """``ir in irreps``: ``ir`` an irrep (any multiplicity, even 0) or a ``(mul, ir)`` term."""
        if isinstance(ir, _MulIr):
            return tuple.__contains__(self, ir)
        ir = Irrep(ir)  # type: ignore[arg-type]
        return any(irrep == ir for _, irrep in self)

    @overload  # type: ignore[override]
    def __getitem__(self, i: int) -> _MulIr: ...

    @overload
    def __getitem__(self, i: slice) -> "Irreps": ...

    def __getitem__(self, i: Union[int, slice]) -> Union[_MulIr, "Irreps"]:
        x = tuple.__getitem__(self, i)
        if isinstance(i, slice):
            return Irreps(x)
        return cast(_MulIr, x)

    # ---------------------------------------------------------------- arithmetic
    def __add__(self, other: IrrepsLike) -> "Irreps":  # type: ignore[override]
        """Concatenation (direct sum, not simplified)."""
        return Irreps(tuple.__add__(self, Irreps(other)))

    def __radd__(self, other: IrrepsLike) -> "Irreps":
        return Irreps(other) + self

    def __mul__(self, other: int) -> "Irreps":  # type: ignore[override]
        """``irreps * n`` repeats the terms ``n`` times (as a tuple would)."""
        if isinstance(other, Irreps):
            raise NotImplementedError("the product of two Irreps is a tensor product, not defined on Irreps")
        return Irreps(tuple.__mul__(self, _as_int(other, "the repetition count")))

    def __rmul__(self, other: int) -> "Irreps":  # type: ignore[override]
        return self.__mul__(other)

    # Equality and hash are the tuple's (of (mul, Irrep) terms): Irreps("0e") == Irreps("1x0e") ==
    # Irreps([(1, "0e")]), with equal hashes, so equal Irreps are one key of a dict or set. A string is never
    # equal to an Irreps (Irreps("1x0e") != "1x0e"; compare with Irreps(text)): "0e", "1x0e" and "1x0y" name the
    # same irreps, so no hash could agree with all of them.

    def __repr__(self) -> str:
        return "+".join(repr(mul_ir) for mul_ir in self)

    __str__ = __repr__

    # ---------------------------------------------------------------- tensors
    def randn(
        self,
        *size: int,
        normalization: str = "component",
        requires_grad: bool = False,
        dtype: Optional[torch.dtype] = None,
        device: Optional[Union[torch.device, str]] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Random features of these irreps.

        Args:
            *size:
                The output shape, with exactly one ``-1`` standing for ``self.dim``.
            normalization (``"component"`` or ``"norm"``):
                ``"component"``: i.i.d. standard normal entries. ``"norm"``: every irrep
                copy (each block of ``2l+1`` components) has Euclidean norm 1.

        Returns:
            Tensor of shape ``size`` with ``-1`` replaced by ``self.dim``.

            With the same seed the numbers equal e3nn's ``Irreps.randn``.
        """
        sizes = [_as_int(s, "size") for s in size]
        if sizes.count(-1) != 1:
            raise ValueError(f"size must contain exactly one -1 (standing for dim={self.dim}), got {tuple(sizes)}")
        if any(s < -1 for s in sizes):
            raise ValueError(f"size entries must be non-negative (or the single -1), got {tuple(sizes)}")
        di = sizes.index(-1)
        lsize, rsize = sizes[:di], sizes[di + 1 :]
        if normalization == "component":
            x = torch.randn(*lsize, self.dim, *rsize, dtype=dtype, device=device, generator=generator)
        elif normalization == "norm":
            parts = []
            for mul, ir in self:
                r = torch.randn(*lsize, mul, ir.dim, *rsize, dtype=dtype, device=device, generator=generator)
                r = r / r.norm(2, dim=di + 1, keepdim=True)
                parts.append(r.reshape(*lsize, mul * ir.dim, *rsize))
            if parts:
                x = torch.cat(parts, dim=di)
            else:
                x = torch.zeros(*lsize, 0, *rsize, dtype=dtype, device=device)
        else:
            raise ValueError(f"normalization must be 'component' or 'norm', got {normalization!r}")
        return x.requires_grad_(requires_grad)

    def D_from_angles(
        self,
        alpha: Union[torch.Tensor, float],
        beta: Union[torch.Tensor, float],
        gamma: Union[torch.Tensor, float],
        k: Optional[Union[torch.Tensor, float]] = None,
    ) -> torch.Tensor:
        r"""Block-diagonal representation matrix :math:`\bigoplus p^k D^l(\alpha, \beta, \gamma)`.

        Args:
            alpha, beta, gamma (Tensor of shape ``(...)``):
                Euler angles in e3nn's convention (Y, X, Y), broadcast together.
            k (Tensor of shape ``(...)``, optional):
                How many times parity is applied (0 or 1); default 0.

        Returns:
            Tensor of shape ``(..., dim, dim)``
        """
        if k is None:
            alpha, beta, gamma = _as_angle_tensors(alpha, beta, gamma)
            batch = torch.broadcast_shapes(alpha.shape, beta.shape, gamma.shape)
        else:
            alpha, beta, gamma, k = _as_angle_tensors(alpha, beta, gamma, k)
            batch = torch.broadcast_shapes(alpha.shape, beta.shape, gamma.shape, k.shape)
        blocks = {}
        for mul, ir in self:
            if mul > 0 and ir not in blocks:
                blocks[ir] = ir.D_from_angles(alpha, beta, gamma, k).expand(*batch, ir.dim, ir.dim)
        dtype = next(iter(blocks.values())).dtype if blocks else alpha.dtype
        out = torch.zeros(*batch, self.dim, self.dim, dtype=dtype, device=alpha.device)
        for s, (mul, ir) in zip(self.slices(), self):
            if mul == 0:
                continue
            D = blocks[ir]
            if mul == 1:
                out[..., s, s] = D
            else:
                eye = torch.eye(mul, dtype=D.dtype, device=D.device)
                out[..., s, s] = torch.einsum("ij,...ab->...iajb", eye, D).reshape(*batch, s.stop - s.start, -1)
        return out

    def D_from_matrix(self, R: torch.Tensor) -> torch.Tensor:
        r"""Block-diagonal representation matrix of the orthogonal matrix ``R``.

        An improper ``R`` (det -1) is written ``-1 * R_proper`` and each irrep block is
        :math:`p \, D^l(R_\text{proper})`, as in e3nn.

        Args:
            R: ``(..., 3, 3)`` orthogonal matrices (proper or improper).

        Returns:
            Tensor of shape ``(..., dim, dim)``
        """
        R, k = _split_improper(R)
        return self.D_from_angles(*matrix_to_angles(R), k)
