"""Irreps strings (``"16x0e + 8x1o + 2e"``) parsed into plain integers.

No dependency but the standard library: :mod:`escn.o3.irreps` builds its classes from these results, and the
lower modules of :mod:`escn.o3` (e.g. :mod:`escn.o3.spherical_harmonics`) accept irreps strings through them
without importing :mod:`escn.o3.irreps`, which itself depends on them.
"""

from __future__ import annotations

PARITY_FROM_CHAR = {"e": 1, "o": -1}


def parse_irrep(text: str) -> tuple[int, int]:
    """Parse ``"<l><p>"`` (``p`` in ``e``, ``o``, ``y``) into ``(l, p)``; ``ValueError`` quoting ``text`` otherwise."""
    name = text.strip()
    prefix = f"Invalid irrep {text!r}"
    if name == "":
        raise ValueError(f"{prefix}: empty string; expected '<l><parity>' such as '0e' or '1o'")
    digits, parity = name[:-1].strip(), name[-1]
    if parity.isdigit():
        raise ValueError(
            f"{prefix}: missing the parity at the end; parity must be 'e' or 'o' (or 'y' for (-1)^l), "
            "expected '<l><parity>' such as '0e' or '1o'"
        )
    if parity not in ("e", "o", "y"):
        raise ValueError(
            f"{prefix}: parity must be 'e' or 'o' (even/odd; or 'y' for (-1)^l), got {parity!r}; "
            "expected '<l><parity>' such as '0e' or '1o'"
        )
    if digits == "":
        raise ValueError(f"{prefix}: missing the degree l before the parity; expected e.g. '1o'")
    if digits.startswith("-") and digits[1:].isascii() and digits[1:].isdigit():
        raise ValueError(f"{prefix}: l must be a non-negative integer, got {digits}")
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(
            f"{prefix}: l must be a non-negative integer, got {digits!r}; expected '<l><parity>' such as '1o'"
        )
    l = int(digits)
    p = (-1) ** l if parity == "y" else PARITY_FROM_CHAR[parity]
    return l, p


def parse_irreps(text: str) -> list[tuple[int, int, int]]:
    """Parse ``"16x0e + 8x1o + 2e"`` into ``(mul, l, p)`` terms; ``ValueError`` quoting ``text`` and the bad term
    otherwise."""
    if text.strip() == "":
        return []
    out: list[tuple[int, int, int]] = []
    for raw in text.split("+"):
        term = raw.strip()
        prefix = f"Invalid irreps string {text!r}"
        if term == "":
            raise ValueError(f"{prefix}: empty term (stray '+'); expected terms like '16x0e + 8x1o'")
        if "x" in term:
            mul_s, ir_s = (s.strip() for s in term.split("x", 1))
            if "x" in ir_s:
                raise ValueError(f"{prefix}: term {term!r} has more than one 'x'")
            if mul_s == "":
                raise ValueError(f"{prefix}: term {term!r} is missing the multiplicity before 'x'")
            if mul_s.startswith("-") and mul_s[1:].isascii() and mul_s[1:].isdigit():
                raise ValueError(f"{prefix}: term {term!r}: multiplicity must be non-negative, got {mul_s}")
            if not (mul_s.isascii() and mul_s.isdigit()):
                raise ValueError(f"{prefix}: term {term!r}: multiplicity must be a non-negative integer, got {mul_s!r}")
            if ir_s == "":
                raise ValueError(f"{prefix}: term {term!r} is missing the irrep after 'x' (e.g. '{mul_s}x1o')")
            mul = int(mul_s)
        else:
            mul, ir_s = 1, term
        try:
            l, p = parse_irrep(ir_s)
        except ValueError as err:
            raise ValueError(f"{prefix}: term {term!r}: {err}") from None
        out.append((mul, l, p))
    return out
