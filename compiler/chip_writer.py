"""Write a :class:`~anacc.compiler.chip.ChipSpec` back to a chip description TOML file.

Contract: :func:`chip_to_toml` serializes :meth:`ChipSpec.to_dict` (the layout of the chip
files: top-level ``name`` and ``description``, then one table per section and one
``[profiles.<name>]`` table per profile) so that :func:`~anacc.compiler.chip.load_chip` on the
text gives back a spec equal to the one written, every float bit for bit (``repr`` is the
shortest text that reads back as the same double). :func:`write_chip` writes that text
atomically. The serializer is a small TOML writer for exactly what chip files hold: tables of
strings, booleans, integers, floats and flat lists of them.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from anacc.compiler.chip import ChipSpec
from anacc.compiler.program import atomic_write

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (quoted, with escapes for quotes and control chars)."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    """A bare key where TOML allows one, else a quoted key."""
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def toml_value(value: Any) -> str:
    """One TOML value: string, boolean, integer, float or a flat list of these."""
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")


def toml_dumps(data: Mapping[str, Any], header: str | None = None) -> str:
    """``data`` (nested mappings of values) as a TOML document; ``header`` becomes comments."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    _table(data, (), lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(data: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    values = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    if path and (values or not tables):
        lines.append("")
        lines.append("[" + ".".join(toml_key(p) for p in path) + "]")
    lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in values.items())
    for key, sub in tables.items():
        _table(sub, (*path, key), lines)


def chip_to_toml(spec: ChipSpec, header: str | None = None) -> str:
    """The chip description of ``spec`` as TOML text that :func:`load_chip` reads back equal."""
    text = toml_dumps(spec.to_dict(), header)
    assert ChipSpec.from_dict(tomllib.loads(text), "written chip") == spec, "TOML round trip"
    return text


def write_chip(
    spec: ChipSpec,
    path: str | Path,
    *,
    header: str | None = None,
    protect: tuple[str | Path, ...] = (),
) -> Path:
    """Write ``spec`` as a chip TOML file (atomically; ``protect``ed paths are refused)."""
    path = Path(path)
    atomic_write(path, chip_to_toml(spec, header).encode("utf-8"), protect=protect)
    return path
