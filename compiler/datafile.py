"""Reading ``.npz`` data files and matching their arrays to a model's inputs.

A data file holds one array per graph input, named after it, plus an optional ``labels``
array. For a single-input model the one non-``labels`` array is used whatever its name.

:func:`read_npz_file` reads the ``.npz`` format itself (program files use it too): every
member must be an ``.npy`` array of numbers whose header agrees with the member's size, so a
small file cannot make numpy allocate more than it holds; object arrays are refused before
any of their bytes are read (nothing is ever unpickled).
"""

from __future__ import annotations

import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from anacc.errors import AnaccError, DataError

LABELS = "labels"
NUMERIC_KINDS = "fiub"
# Deflate expands data at most about 1032-fold; a member claiming more lies about its size.
_MAX_DEFLATE_RATIO = 1032
# Class indices beyond this are no class of any model (and would overflow casts).
_MAX_CLASSES = 2**31
# What reading a damaged zip member raises; zipfile raises NotImplementedError for header
# flags it cannot honour.
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError)
# The compressions numpy (and anacc) write.
ZIP_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


@dataclass(frozen=True)
class InputSpec:
    """A graph input as data must supply it: name, per-sample shape (without batch), dtype."""

    name: str
    sample_shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    path: str = "<memory>"

    @property
    def samples(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` data file (see :func:`read_npz_file`)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such data file")
    return read_npz_file(p, str(p))


def read_npz_file(
    source: str | Path | IO[bytes],
    where: str,
    *,
    max_bytes: int | None = None,
    error: type[AnaccError] = DataError,
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive, by name; ``error`` (naming ``where``) for anything
    else: a broken zip, a member that is not a numeric ``.npy`` array, sizes that disagree,
    or more than ``max_bytes`` unpacked."""
    try:
        with zipfile.ZipFile(source) as z:
            infos = z.infolist()
            _check_npz_members(infos, where, max_bytes, error)
            arrays = {}
            for info in infos:
                with z.open(info) as f:
                    arrays[info.filename[: -len(".npy")]] = _read_npy(f, info, where, error)
            return arrays
    # numpy parses an .npy header with ast and tokenize, which raise their own errors.
    except (*ZIP_ERRORS, SyntaxError, tokenize.TokenError) as exc:
        raise error(f"{where}: not a readable .npz file ({_one_line(exc)})") from None
    except MemoryError:
        raise error(f"{where}: the arrays do not fit in memory") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_npz_members(
    infos: list[zipfile.ZipInfo], where: str, max_bytes: int | None, error: type[AnaccError]
) -> None:
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise error(f"{where}: the archive holds two members of the same name")
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise error(f"{where}: member {info.filename!r} is not an .npy array")
        if info.flag_bits & 0x1 or info.compress_type not in ZIP_COMPRESSIONS:
            raise error(
                f"{where}: member {info.filename!r} is encrypted or uses an unsupported "
                "compression; write it with numpy.savez or numpy.savez_compressed"
            )
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO
        # The slack covers deflate's fixed overhead on tiny members.
        if info.file_size > ratio * info.compress_size + 1024:
            raise error(
                f"{where}: member {info.filename!r} claims {info.file_size} bytes from "
                f"{info.compress_size} stored bytes; refusing to unpack it"
            )
    total = sum(i.file_size for i in infos)
    if max_bytes is not None and total > max_bytes:
        raise error(f"{where}: the arrays unpack to {total} bytes, more than {max_bytes}")


def _read_npy(
    f: IO[bytes], info: zipfile.ZipInfo, where: str, error: type[AnaccError]
) -> np.ndarray:
    name = info.filename[: -len(".npy")]
    version = np.lib.format.read_magic(f)
    if version not in _NPY_HEADER_READERS:
        raise error(f"{where}: array {name!r} uses .npy format {version}; resave it with numpy")
    shape, fortran_order, dtype = _NPY_HEADER_READERS[version](f)
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in NUMERIC_KINDS:
        raise error(
            f"{where}: array {name!r} has dtype {dtype}; only numeric arrays are read "
            "(nothing is unpickled)"
        )
    count = int(np.prod(shape, dtype=object))
    header_bytes = f.tell()
    if count * dtype.itemsize != info.file_size - header_bytes:
        raise error(
            f"{where}: array {name!r} declares shape {shape} ({count * dtype.itemsize} bytes) "
            f"but holds {info.file_size - header_bytes} bytes; the file is corrupt"
        )
    flat = np.empty(count, dtype=dtype)
    view = memoryview(flat.view(np.uint8))
    done = 0
    while done < len(view):
        n = f.readinto(view[done:])
        if not n:
            raise error(f"{where}: array {name!r} is truncated")
        done += n
    return flat.reshape(shape, order="F" if fortran_order else "C")


def match_inputs(
    arrays: dict[str, np.ndarray], specs: list[InputSpec], source: str = "data"
) -> Dataset:
    """Check names, shapes, dtypes and finiteness; return arrays as float32 in input order."""
    labels = None if arrays.get(LABELS) is None else np.asarray(arrays[LABELS])
    rest = {k: v for k, v in arrays.items() if k != LABELS}
    names = [s.name for s in specs]
    if len(specs) == 1 and len(rest) == 1:
        rest = {names[0]: next(iter(rest.values()))}
    missing = [n for n in names if n not in rest]
    if missing:
        raise DataError(
            f"{source}: missing input array(s) {', '.join(missing)}; "
            f"the file has {', '.join(sorted(arrays)) or 'no arrays'}"
        )
    extra = [k for k in rest if k not in names]
    if extra:
        raise DataError(
            f"{source}: unexpected array(s) {', '.join(extra)}; the model's inputs are "
            f"{', '.join(names)} (plus optional '{LABELS}')"
        )
    out: dict[str, np.ndarray] = {}
    n = None
    for spec in specs:
        a = np.asarray(rest[spec.name])
        if a.dtype.kind not in NUMERIC_KINDS:
            raise DataError(f"{source}: array '{spec.name}' has dtype {a.dtype}; expected numbers")
        if a.ndim == 0 or tuple(a.shape[1:]) != tuple(spec.sample_shape):
            want = " x ".join(["N", *map(str, spec.sample_shape)])
            got = " x ".join(map(str, a.shape)) or "scalar"
            raise DataError(f"{source}: array '{spec.name}' has shape {got}; expected {want}")
        # Values beyond the float32 range become Inf, which the next check reports.
        with np.errstate(over="ignore"):
            a = a.astype(np.float32, copy=False)
        if not np.isfinite(a).all():
            bad = int((~np.isfinite(a)).sum())
            raise DataError(
                f"{source}: array '{spec.name}' has {bad} NaN/Inf values (or values beyond "
                "the float32 range); clean the data"
            )
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise DataError(f"{source}: inputs have different sample counts ({n} vs {a.shape[0]})")
        out[spec.name] = a
    if n == 0:
        raise DataError(f"{source}: no samples")
    if labels is not None:
        labels = _check_labels(labels, n, source)
    return Dataset(out, labels, source)


def _check_labels(labels: np.ndarray, n: int, source: str) -> np.ndarray:
    """One entry per sample: integer (or boolean) class indices, returned as int64, or
    finite float targets of any per-sample shape, returned unchanged."""
    if labels.ndim == 0 or labels.shape[0] != n:
        shape = " x ".join(map(str, labels.shape)) or "scalar"
        raise DataError(f"{source}: '{LABELS}' has shape {shape}; expected {n} entries")
    if labels.dtype.kind == "f":
        bad = int((~np.isfinite(labels)).sum())
        if bad:
            raise DataError(f"{source}: '{LABELS}' has {bad} NaN/Inf values")
        return labels
    if labels.dtype.kind not in "iub":
        raise DataError(
            f"{source}: '{LABELS}' has dtype {labels.dtype}; expected integer class indices "
            "or float targets"
        )
    if labels.ndim != 1:
        shape = " x ".join(map(str, labels.shape))
        raise DataError(
            f"{source}: integer '{LABELS}' have shape {shape}; expected one class index per sample"
        )
    bad = int(((labels < 0) | (labels >= _MAX_CLASSES)).sum())
    if bad:
        raise DataError(f"{source}: '{LABELS}' has {bad} entries that are not class indices")
    return labels.astype(np.int64)


def load_dataset(path: str | Path, specs: list[InputSpec]) -> Dataset:
    return match_inputs(read_npz(path), specs, str(path))
