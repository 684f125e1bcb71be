"""Writing the files anacc produces: atomically, never over the command's inputs."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from anacc.errors import OptionError, ProgramError


def atomic_write(path: str | Path, data: bytes, *, protect: tuple[str | Path, ...] = ()) -> None:
    """Write ``data`` to ``path`` through a temp file and a rename, so that ``path`` is
    either untouched or complete; refuse ``protect``ed paths (the command's inputs). The file
    gets the usual permissions (``0o666`` less the umask, which the kernel applies)."""
    path = Path(path)
    target = path.resolve()
    for p in protect:
        if Path(p).resolve() == target or (
            path.exists() and Path(p).exists() and os.path.samefile(p, path)
        ):
            raise ProgramError(f"{path}: refusing to overwrite an input file; choose another -o")
    if path.is_dir():
        raise OptionError(f"{path}: is a folder; give a file name to write")
    if not path.parent.is_dir():
        raise OptionError(f"{path}: folder {path.parent} does not exist")
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise OptionError(
            f"{path}: cannot write here ({exc.strerror}); choose another -o"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OptionError(f"{path}: cannot write ({exc.strerror}); choose another -o") from None
        raise
