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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from anacc.compiler.ir import BATCH

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
    """A graph input: name, declared shape (``"N"`` first for a batch axis) and dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    @property
    def batched(self) -> bool:
        return bool(self.shape) and self.shape[0] == BATCH

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample's shape: without the batch axis, or the whole declared shape."""
        return tuple(self.shape[1:] if self.batched else self.shape)  # type: ignore[arg-type]


@dataclass
class Dataset:
    """Input arrays by name and optional labels.

    How the arrays make runs of the model:
    - a batched input's array leads with the samples; batches of them run together;
    - a ``fixed`` input (declared without a batch axis) was given with one more leading axis
      of samples: each sample is one run as declared, and the outputs are stacked;
    - a ``shared`` input was given once, exactly as declared, for every run; when every input
      is shared (``single``) the data is one run and the outputs are the model's own;
    - ``max_batch`` caps the samples per run (1 where a declared leading axis of 1 holds the
      samples, as a batch of one).
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    path: str = "<memory>"
    shared: frozenset[str] = frozenset()
    fixed: frozenset[str] = frozenset()
    max_batch: int | None = None
    count: int | None = None

    @property
    def single(self) -> bool:
        return all(k in self.shared for k in self.inputs)

    @property
    def samples(self) -> int:
        if self.count is not None:
            return self.count
        varying = [v for k, v in self.inputs.items() if k not in self.shared]
        return int(varying[0].shape[0]) if varying else 1

    @property
    def per_sample(self) -> bool:
        """True when each sample is one run whose outputs are stacked."""
        return bool(self.fixed)

    def subset(self, index: np.ndarray | slice) -> Dataset:
        """The samples at ``index`` (shared inputs stay whole)."""
        if self.single:
            return self
        inputs = {k: (v if k in self.shared else v[index]) for k, v in self.inputs.items()}
        labels = None if self.labels is None else self.labels[index]
        count = len(range(self.samples)[index]) if isinstance(index, slice) else len(index)
        return Dataset(inputs, labels, self.path, self.shared, self.fixed, self.max_batch, count)

    def runs(self, batch_size: int) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
        """The feeds of each run and the samples it covers: batches of up to ``batch_size``
        samples, or one sample per run (see the class docstring)."""
        step = max(1, batch_size)
        if self.per_sample:
            step = 1
        elif self.max_batch is not None:
            step = min(step, self.max_batch)
        for b0 in range(0, self.samples, step):
            sl = slice(b0, min(self.samples, b0 + step))
            feeds = {}
            for k, v in self.inputs.items():
                if k in self.shared:
                    feeds[k] = v
                elif k in self.fixed:
                    feeds[k] = v[b0]
                else:
                    feeds[k] = v[sl]
            yield sl, feeds


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
    """Check names, shapes, dtypes and finiteness against the model's inputs.

    A batched input takes ``(samples, *sample_shape)``. A fixed-shape input takes its declared
    shape (given once: one sample, or shared by all samples of the batched inputs), or one more
    leading axis of samples (each sample one run as declared); a declared leading axis of 1
    may also be left out, the data's first axis then counting the samples.
    """
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
    shared: set[str] = set()
    fixed: set[str] = set()
    counts: dict[str, int] = {}
    max_batch = None
    for spec in specs:
        a = _typed(np.asarray(rest[spec.name]), spec, source)
        declared = tuple(spec.sample_shape)
        if spec.batched:
            if a.ndim == 0 or tuple(a.shape[1:]) != declared:
                raise _shape_error(source, spec, a)
            counts[spec.name] = a.shape[0]
        elif tuple(a.shape) == declared:
            shared.add(spec.name)
        elif a.ndim == len(declared) + 1 and tuple(a.shape[1:]) == declared:
            fixed.add(spec.name)
            counts[spec.name] = a.shape[0]
        elif (
            declared
            and declared[0] == 1
            and a.ndim == len(declared)
            and (tuple(a.shape[1:]) == declared[1:])
        ):
            max_batch = 1  # the declared axis of 1 is a batch of one
            counts[spec.name] = a.shape[0]
        else:
            raise _shape_error(source, spec, a)
        out[spec.name] = a
    if len(set(counts.values())) > 1:
        found = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise DataError(f"{source}: inputs have different sample counts ({found})")
    n = next(iter(counts.values())) if counts else None
    if n == 0:
        raise DataError(f"{source}: no samples")
    if labels is not None:
        # one run as declared: the labels belong to the rows of its first output
        labels = _check_labels(labels, n if n is not None else len(labels), source)
    return Dataset(out, labels, source, frozenset(shared), frozenset(fixed), max_batch)


def _shape_error(source: str, spec: InputSpec, a: np.ndarray) -> DataError:
    got = " x ".join(map(str, a.shape)) or "scalar"
    want = " x ".join(map(str, spec.shape)) or "scalar"
    if not spec.batched:
        want += f" (or with a leading axis of samples: K x {want})"
    return DataError(f"{source}: array '{spec.name}' has shape {got}; expected {want}")


def _typed(a: np.ndarray, spec: InputSpec, source: str) -> np.ndarray:
    """``a`` as the input's dtype; float inputs must be finite numbers."""
    if a.dtype.kind not in NUMERIC_KINDS:
        raise DataError(f"{source}: array '{spec.name}' has dtype {a.dtype}; expected numbers")
    want = np.dtype(spec.dtype) if spec.dtype != "unknown" else a.dtype
    if want.kind == "f":
        # Values beyond the float range become Inf, which the next check reports.
        with np.errstate(over="ignore"):
            a = a.astype(want, copy=False)
        if not np.isfinite(a).all():
            bad = int((~np.isfinite(a)).sum())
            raise DataError(
                f"{source}: array '{spec.name}' has {bad} NaN/Inf values (or values beyond "
                f"the {want} range); clean the data"
            )
        return a
    integral = a.dtype.kind != "f" or (np.isfinite(a).all() and (a == np.round(a)).all())
    if want.kind in "iub" and not integral:
        raise DataError(
            f"{source}: array '{spec.name}' holds non-integer values but the input is "
            f"{want}; give integers"
        )
    if want.kind in "iu":
        info = np.iinfo(want)
        lo, hi = (a.min(), a.max()) if a.size else (0, 0)
        if lo < info.min or hi > info.max:
            raise DataError(
                f"{source}: array '{spec.name}' has values {lo}..{hi} outside the range of {want}"
            )
    return a.astype(want, copy=False)


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
