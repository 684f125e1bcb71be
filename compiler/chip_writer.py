"""Write a :class:`~anacc.compiler.chip.ChipSpec` back to a chip description TOML file.

Contract: :func:`chip_to_toml` serializes :meth:`ChipSpec.to_dict` (the layout of the chip
files: top-level ``name`` and ``description``, then one table per section and one
``[profiles.<name>]`` table per profile) with ``tomli_w``, so that
:func:`~anacc.compiler.chip.load_chip` on the text gives back a spec equal to the one
written, every float bit for bit (``tomli_w`` writes the shortest text that reads back as the
same double). A header becomes ``#`` comment lines above the data (``tomli_w`` writes data
only). :func:`write_chip` writes that text atomically.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w
from anacc.compiler.chip import ChipSpec
from anacc.compiler.files import atomic_write

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def toml_dumps(data: Mapping[str, Any], header: str | None = None) -> str:
    """``data`` (nested mappings of values) as a TOML document; ``header`` becomes comments."""
    comments = (
        "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) if header else ""
    )
    body = tomli_w.dumps(data)
    return comments + ("\n" if comments and body else "") + body


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
