"""Reading and validating an ONNX model file: :func:`load_onnx`.

The model is read with its external data (only from plain files inside the model's folder),
checked (protobuf parse, UTF-8 text fields, ``onnx.checker``, tensor data sizes, an optional
parameter limit), brought to an opset anacc reads and shape inferred:

- default-domain opsets 9..21 are read as they are; older ones are converted to 17 with
  ONNX's version converter;
- newer ones are converted to 21 where the converter can (the torch forms of fine-tuning
  follow the semantics of opsets 9..21), else kept as they are when onnxruntime runs the
  model at its own opset (ops that exist only in newer opsets, adapters ONNX lacks): the
  digital side runs them there;
- ONNX's strict shape inference must accept the model, unless onnxruntime runs it: then its
  shapes count (ONNX's inference is wrong about a few ops, e.g. the size of a ceil-mode pool
  whose last window would start in the padding), and the frontend measures every shape in
  onnxruntime anyway.

Every problem is one :class:`~anacc.errors.ModelError` line that names the file.
:func:`model_sha256` hashes the model with its external data; :func:`external_data_files`
lists those files (the CLI refuses to overwrite them).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from onnx import external_data_helper

from anacc.errors import ModelError

MIN_OPSET = 9
MAX_OPSET = 21
# What older and newer default-domain opsets are converted to.
UPGRADE_OPSET = 17
DOWNGRADE_OPSET = MAX_OPSET

_PROTOBUF_LIMIT = 2**31 - 1
# Longest quote of a library's error message in ours.
_MESSAGE_CHARS = 300


def load_onnx(path: str | os.PathLike, *, max_params: int | None = None) -> onnx.ModelProto:
    """The validated, shape-inferred model at ``path`` in an opset anacc reads (see the
    module docstring)."""
    p, model = _read(path)
    n_params = sum(int(np.prod(t.dims, dtype=object)) for t in model.graph.initializer)
    if max_params is not None and n_params > max_params:
        raise ModelError(
            f"{path}: the model has {n_params:,} parameters, more than the limit of "
            f"{max_params:,}; raise the limit (--max-params) to read it"
        )
    external = _external_files(path, p, model)
    _load_external_data(path, p, model)
    size = p.stat().st_size + sum(f.stat().st_size for f in external)
    try:
        onnx.checker.check_model(model if size < _PROTOBUF_LIMIT else str(p))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelError(f"{path}: invalid ONNX model: {one_line(exc)}") from None
    _check_tensor_data(path, model)
    model = _supported_opset(path, p, model)
    if size >= _PROTOBUF_LIMIT:
        return model
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    # Besides its own errors, inference raises ValueError for unknown element types.
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError) as exc:
        if _onnxruntime_error(model) is not None:
            raise ModelError(f"{path}: ONNX shape inference failed: {one_line(exc)}") from None
    try:
        return onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError):
        return model


def external_data_files(path: str | os.PathLike) -> list[Path]:
    """The external data files the model at ``path`` reads (to protect them from ``-o``)."""
    p, model = _read(path)
    return _external_files(path, p, model)


def model_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the model file followed by each external data file (sorted by name)."""
    p, model = _read(path)
    digest = hashlib.sha256(p.read_bytes())
    for f in _external_files(path, p, model):
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (ONNX spreads some over several), shortened."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = text or type(exc).__name__
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."


def _read(path: str | os.PathLike) -> tuple[Path, onnx.ModelProto]:
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{path}: no such file; check the model path")
    if not p.is_file():
        raise ModelError(f"{path}: is not a file; pass the path of an .onnx model file")
    try:
        model = onnx.load_model(str(p), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"{path}: not an ONNX model, or the file is truncated ({one_line(exc)}); "
            "re-export or re-download it"
        ) from None
    where = _non_utf8_field(model, "model")
    if where is not None:
        raise ModelError(
            f"{path}: the text field {where} is not valid UTF-8, so the file is corrupt; "
            "re-export or re-download it"
        )
    return p, model


def _non_utf8_field(msg: Message, where: str) -> str | None:
    """The path of the first string field that is not valid UTF-8 (protobuf hands such a
    proto2 field over as ``bytes``), or None."""
    for fd, value in msg.ListFields():
        if fd.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
            continue
        for item in [value] if isinstance(value, (str, bytes, Message)) else value:
            if isinstance(item, bytes):
                return f"{where}.{fd.name}"
            if isinstance(item, Message):
                found = _non_utf8_field(item, f"{where}.{fd.name}")
                if found is not None:
                    return found
    return None


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for g in attr.graphs:
                yield from _all_tensors(g)


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in _all_tensors(model.graph) if external_data_helper.uses_external_data(t)]


def _external_file(path: str | os.PathLike, p: Path, location: str) -> Path:
    """The file an external data ``location`` names; it must be a plain file in the model's
    folder (or below it), so that a model cannot make anacc read files elsewhere."""
    rel = Path(location)
    if not location or "\0" in location or rel.is_absolute() or ".." in rel.parts:
        raise ModelError(
            f"{path}: external data location {location!r} is not a file name inside the "
            f"model's folder {p.parent}; keep the data file next to the model"
        )
    f = p.parent / rel
    if f.is_symlink() or (f.exists() and not f.resolve().is_relative_to(p.parent.resolve())):
        raise ModelError(
            f"{path}: external data file {location!r} is a symbolic link or lies outside "
            f"{p.parent}; copy the data file next to the model"
        )
    if not f.is_file():
        raise ModelError(
            f"{path}: external data file {location!r} is missing; keep it in "
            f"{p.parent} next to the model"
        )
    return f


def _external_files(path: str | os.PathLike, p: Path, model: onnx.ModelProto) -> list[Path]:
    locations = {_external_info(path, t).location for t in _external_tensors(model)}
    return [_external_file(path, p, loc) for loc in sorted(locations)]


def _external_info(
    path: str | os.PathLike, tensor: onnx.TensorProto
) -> external_data_helper.ExternalDataInfo:
    try:
        return external_data_helper.ExternalDataInfo(tensor)
    except ValueError as exc:
        raise ModelError(
            f"{path}: tensor {tensor.name!r} has an invalid external data reference "
            f"({one_line(exc)}); re-export the model"
        ) from None


def _load_external_data(path: str | os.PathLike, p: Path, model: onnx.ModelProto) -> None:
    for tensor in _external_tensors(model):
        info = _external_info(path, tensor)
        f = _external_file(path, p, info.location)
        if tensor.data_type not in _WHOLE_BYTE_TYPES:
            raise ModelError(
                f"{path}: external tensor {tensor.name!r} has data type {tensor.data_type}, "
                "which anacc does not read from external data; re-export the model"
            )
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        needed = int(np.prod(tensor.dims, dtype=object)) * itemsize
        offset = info.offset or 0
        if info.length and info.length != needed or f.stat().st_size < offset + needed:
            raise ModelError(
                f"{path}: external data file {info.location!r} is too short for tensor "
                f"{tensor.name!r} (truncated?); re-export the model"
            )
    try:
        external_data_helper.load_external_data_for_model(model, str(p.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise ModelError(f"{path}: cannot read external data: {one_line(exc)}") from None


# Element types stored as whole bytes, one element per entry of their typed field; the
# sub-byte types (INT4, FLOAT4E2M1, ...) pack several elements and anacc computes on none.
_WHOLE_BYTE_TYPES = frozenset(
    getattr(onnx.TensorProto, name)
    for name in (
        "FLOAT",
        "UINT8",
        "INT8",
        "UINT16",
        "INT16",
        "INT32",
        "INT64",
        "BOOL",
        "FLOAT16",
        "DOUBLE",
        "UINT32",
        "UINT64",
        "BFLOAT16",
        "FLOAT8E4M3FN",
        "FLOAT8E4M3FNUZ",
        "FLOAT8E5M2",
        "FLOAT8E5M2FNUZ",
    )
    if hasattr(onnx.TensorProto, name)
)


def _check_tensor_data(path: str | os.PathLike, model: onnx.ModelProto) -> None:
    """Every tensor holds exactly the data its shape needs; ``onnx.checker`` only refuses
    too little, and numpy would fail on too much."""
    for t in _all_tensors(model.graph):
        if t.data_type not in _WHOLE_BYTE_TYPES:
            continue
        n = int(np.prod(t.dims, dtype=object))
        if t.HasField("raw_data"):
            have = len(t.raw_data)
            need = n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
            unit = "bytes"
        else:
            have = len(getattr(t, onnx.helper.tensor_dtype_to_field(t.data_type)))
            need, unit = n, "values"
        if have != need:
            raise ModelError(
                f"{path}: tensor {t.name!r} holds {have} {unit} of data but its shape "
                f"{list(t.dims)} needs {need}; the file is corrupt, re-export it"
            )


def _default_opset(model: onnx.ModelProto) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def _onnxruntime_error(model: onnx.ModelProto | Path) -> str | None:
    """Why onnxruntime's CPU provider cannot load ``model`` (a model or its file), or None."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    try:
        ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        return one_line(exc)
    return None


def _supported_opset(path: str | os.PathLike, p: Path, model: onnx.ModelProto) -> onnx.ModelProto:
    opset = _default_opset(model)
    if opset is None:
        raise ModelError(f"{path}: the model does not import the default ONNX domain")
    if MIN_OPSET <= opset <= MAX_OPSET:
        return model
    target = DOWNGRADE_OPSET if opset > MAX_OPSET else UPGRADE_OPSET
    try:
        return onnx.version_converter.convert_version(model, target)
    # The converter raises plain RuntimeErrors, and others, from its C++ adapters.
    except Exception as exc:
        converter = one_line(exc)
    if opset < MIN_OPSET:
        raise ModelError(
            f"{path}: opset {opset} is not supported (anacc reads opsets {MIN_OPSET} and "
            f"newer) and converting it to opset {target} failed ({converter}); re-export the "
            f"model with opset {target}"
        )
    # the file itself: it holds the same model, and needs no serializing (however large)
    runtime = _onnxruntime_error(p)
    if runtime is None:
        return model
    raise ModelError(
        f"{path}: opset {opset} is not supported: onnxruntime does not run the model at that "
        f"opset ({runtime}) and converting it to opset {target} failed ({converter}); "
        f"re-export the model with opset {target}"
    )
