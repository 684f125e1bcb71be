"""Arithmetic on tensor dimensions that may be multiples of one symbol (the batch).

A dimension is an ``int`` or a ``str``: ``"N"`` (the symbol) or ``"k*N"`` (``k`` times the
symbol, ``k >= 2``). This is all the frontend needs to keep the batch symbolic through
reshapes, flattening and concatenation. An operation whose result is not of that form
(``N*N``, ``N+1``, ``N/3``) returns ``None`` and the caller reports the shape as unresolvable.
"""

from __future__ import annotations

from collections.abc import Iterable

from anacc.compiler.ir import Dim


def split(dim: Dim) -> tuple[int, str | None]:
    """``(coefficient, symbol)``; the symbol is ``None`` for a static dimension."""
    if isinstance(dim, int):
        return dim, None
    coef, sep, sym = dim.partition("*")
    if sep and coef.isdigit() and sym:
        return int(coef), sym
    return 1, dim


def join(coef: int, sym: str | None) -> Dim:
    """The dimension ``coef * sym`` (a plain int when ``sym`` is None or ``coef`` is 0)."""
    if sym is None or coef == 0:
        return coef
    return sym if coef == 1 else f"{coef}*{sym}"


def per_sample(dim: Dim) -> int:
    """How many elements this dimension contributes per unit of the symbol (its coefficient)."""
    return split(dim)[0]


def mul(a: Dim, b: Dim) -> Dim | None:
    ca, sa = split(a)
    cb, sb = split(b)
    if sa is not None and sb is not None:
        return None
    sym = sa or sb
    return None if sym is not None and ca * cb < 0 else join(ca * cb, sym)


def add(a: Dim, b: Dim) -> Dim | None:
    ca, sa = split(a)
    cb, sb = split(b)
    if sa == sb:
        return None if sa is not None and ca + cb < 0 else join(ca + cb, sa)
    if ca == 0 or cb == 0:
        return b if ca == 0 else a
    return None


def sub(a: Dim, b: Dim) -> Dim | None:
    cb, sb = split(b)
    if sb is None:
        return add(a, -cb)
    ca, sa = split(a)
    return join(ca - cb, sa) if sa == sb and ca >= cb else None


def div_exact(a: Dim, b: Dim) -> Dim | None:
    """``a / b`` when it is a whole dimension of the allowed form, else None."""
    ca, sa = split(a)
    cb, sb = split(b)
    if sb is not None:
        return ca // cb if sa == sb and cb and ca % cb == 0 else None
    if cb == 0 or ca % cb:
        return None
    return join(ca // cb, sa)


def product(dims: Iterable[Dim]) -> Dim | None:
    result: Dim | None = 1
    for d in dims:
        if result is None:
            return None
        result = mul(result, d)
    return result


def numel_per_sample(shape: Iterable[Dim]) -> int:
    """Element count with every symbolic dimension replaced by its coefficient."""
    n = 1
    for d in shape:
        n *= per_sample(d)
    return n


def substitute(dim: Dim, value: int) -> int:
    """The dimension for a concrete value of the symbol."""
    coef, sym = split(dim)
    return coef if sym is None else coef * value
