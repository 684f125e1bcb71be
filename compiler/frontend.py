"""Read an ONNX model file and build the anacc graph IR of docs/ir.md from it.

- :func:`load_onnx`: read and validate a model file (external data included, read only from
  plain files inside the model's folder): protobuf parse, ``onnx.checker``, tensor data sizes,
  opset (9..21 read directly, others converted to 17), ONNX shape inference, an optional
  parameter limit. Every problem is one :class:`~anacc.errors.ModelError` line that names
  the file.
- :func:`graph_from_onnx`: the IR of a validated model. Each graph input's first dimension
  becomes the symbolic batch; constants and shape computations are folded
  (:mod:`anacc.compiler.folding`); every remaining node is normalized
  (:mod:`anacc.compiler.normalize`) and its output shapes inferred
  (:mod:`anacc.compiler.shapes`). Unsupported ops are reported together in one
  :class:`~anacc.errors.UnsupportedOpError` before any other problem.
- :func:`load_model`: both of the above.
- :func:`model_sha256`: a hash of the model file and its external data files;
  :func:`external_data_files`: those files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from anacc.compiler.folding import SymValue, Value, fold_node
from anacc.compiler.ir import Dim, Graph, Node, Shape, TensorInfo
from anacc.compiler.normalize import NormalizeContext, normalize_node
from anacc.compiler.opset import CONVERT_OPSET, MAX_OPSET, MIN_OPSET, SUPPORTED_OPS
from anacc.compiler.shapes import infer_output_shapes
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from onnx import external_data_helper, numpy_helper

from anacc.errors import ModelError, OptionError, UnsupportedOpError

# A protobuf message cannot exceed 2 GiB; larger models are checked through their path.
_PROTOBUF_LIMIT = 2**31 - 1
# Node names listed per unsupported op type before the rest is summarized as a count.
_NAMES_PER_OP = 10
# Longest quote of a library's error message in ours.
_MESSAGE_CHARS = 300
# Elements a folded constant may always hold, however small the model.
_MIN_FOLD_LIMIT = 1 << 22
# Ops whose constant inputs are trained parameters, which must be finite numbers.
_PARAMETER_OPS = frozenset({"Gemm", "MatMul", "Conv", "BatchNormalization"})


def load_onnx(path: str | os.PathLike, *, max_params: int | None = None) -> onnx.ModelProto:
    """The validated, shape-inferred model at ``path`` in a default-domain opset 9..21."""
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
        raise ModelError(f"{path}: invalid ONNX model: {_one_line(exc)}") from None
    _check_tensor_data(path, model)
    model = _supported_opset(path, model)
    if size >= _PROTOBUF_LIMIT:
        return model
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    # Besides its own errors, inference raises ValueError for unknown element types.
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError) as exc:
        raise ModelError(f"{path}: ONNX shape inference failed: {_one_line(exc)}") from None


def load_model(
    path: str | os.PathLike, *, max_params: int | None = None, batch_dim: str = "N"
) -> Graph:
    """The graph IR of the ONNX model at ``path`` (see the module docstring)."""
    model = load_onnx(path, max_params=max_params)
    return graph_from_onnx(model, batch_dim=batch_dim, name=Path(path).stem, source=str(path))


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


def graph_from_onnx(
    model: onnx.ModelProto,
    *,
    batch_dim: str = "N",
    name: str | None = None,
    source: str = "model",
) -> Graph:
    """The IR of ``model``, which must be valid and in a default-domain opset 9..21.

    ``source`` names the model in error messages, ``name`` becomes ``graph.name`` (default:
    the ONNX graph's name).
    """
    if not batch_dim or not batch_dim.isidentifier():
        raise OptionError(f"batch_dim {batch_dim!r} must be an identifier such as 'N'")
    return _GraphBuilder(model, batch_dim, source).build(name or model.graph.name or "graph")


# -- reading and validating -----------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
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
            f"{path}: not an ONNX model, or the file is truncated ({_one_line(exc)}); "
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
            f"({_one_line(exc)}); re-export the model"
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
        raise ModelError(f"{path}: cannot read external data: {_one_line(exc)}") from None


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


def _supported_opset(path: str | os.PathLike, model: onnx.ModelProto) -> onnx.ModelProto:
    opset = _default_opset(model)
    if opset is None:
        raise ModelError(f"{path}: the model does not import the default ONNX domain")
    if MIN_OPSET <= opset <= MAX_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, CONVERT_OPSET)
    # The converter raises plain RuntimeErrors, and others, from its C++ adapters.
    except Exception as exc:
        raise ModelError(
            f"{path}: opset {opset} is not supported (anacc reads opsets {MIN_OPSET}.."
            f"{MAX_OPSET}) and converting it to opset {CONVERT_OPSET} failed "
            f"({_one_line(exc)}); re-export the model with opset {CONVERT_OPSET}"
        ) from None


# -- building the IR ------------------------------------------------------------------------


def _dims(value_info: onnx.ValueInfoProto) -> tuple[Dim | None, ...] | None:
    tensor_type = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
        return None
    return tuple(
        int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None)
        for d in tensor_type.shape.dim
    )


def _dtype(elem_type: int) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name


class _GraphBuilder:
    """One walk over the ONNX nodes in their (topological) order: fold, or normalize."""

    def __init__(self, model: onnx.ModelProto, batch_dim: str, source: str) -> None:
        self.model = model
        self.batch_dim = batch_dim
        self.source = source
        self.opsets = {
            ("" if i.domain == "ai.onnx" else i.domain): i.version for i in model.opset_import
        }
        opset = self.opsets.get("")
        if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
            raise ModelError(
                f"{source}: opset {opset} is not supported; read the model with load_onnx"
            )
        self.values: dict[str, Value] = {
            t.name: numpy_helper.to_array(t) for t in model.graph.initializer
        }
        # A folded constant may be as large as all of the model's parameters, or a little.
        self.max_folded = max(
            _MIN_FOLD_LIMIT,
            sum(int(v.size) for v in self.values.values()),  # type: ignore[union-attr]
        )
        self.shapes: dict[str, Shape] = {}
        self.dtypes: dict[str, str] = {}
        self.unknown: set[str] = set()
        self.nodes: list[Node] = []
        self.unsupported: dict[str, list[str]] = {}
        self.first_error: str | None = None
        self.read = {t for n in model.graph.node for t in n.input if t}
        self.read |= {o.name for o in model.graph.output}
        self._onnx_shapes: dict[str, tuple[Dim | None, ...]] | None = None
        self.inputs, fixed_batch = self._graph_inputs()
        self.ctx = NormalizeContext(opset, self.values, self.shapes, fixed_batch)

    def _graph_inputs(self) -> tuple[list[TensorInfo], int | None]:
        infos, declared = [], set()
        for vi in self.model.graph.input:
            if vi.name in self.values:
                continue
            dims = _dims(vi)
            if dims is None:
                raise ModelError(
                    f"{self.source}: graph input {vi.name!r} has no tensor shape; anacc needs "
                    "the rank and the non-batch dimensions"
                )
            for axis, d in enumerate(dims[1:], start=1):
                if not isinstance(d, int):
                    raise ModelError(
                        f"{self.source}: graph input {vi.name!r} has a dynamic dimension "
                        f"{d or '?'} at axis {axis}; only axis 0 (the batch) may be dynamic, "
                        "re-export with fixed sizes"
                    )
                if d < 1:
                    raise ModelError(
                        f"{self.source}: graph input {vi.name!r} has dimension {d} at axis "
                        f"{axis}; anacc needs at least one element per sample, re-export it"
                    )
            if dims:
                declared.add(dims[0])
            shape: Shape = (self.batch_dim, *dims[1:]) if dims else ()  # type: ignore[assignment]
            info = TensorInfo(vi.name, shape, _dtype(vi.type.tensor_type.elem_type))
            infos.append(info)
            self.shapes[vi.name] = info.shape
            self.dtypes[vi.name] = info.dtype
        fixed = declared.pop() if len(declared) == 1 else None
        return infos, fixed if isinstance(fixed, int) else None

    # -- the walk -----------------------------------------------------------------------
    def build(self, name: str) -> Graph:
        used_names: set[str] = set()
        for index, proto in enumerate(self.model.graph.node):
            self._visit(proto, self._node_name(proto, index, used_names))
        if self.unsupported:
            raise UnsupportedOpError(self._unsupported_message())
        if self.first_error:
            raise ModelError(f"{self.source}: {self.first_error}")
        return self._assemble(name)

    def _node_name(self, proto: onnx.NodeProto, index: int, used: set[str]) -> str:
        base = proto.name or f"{proto.op_type}_{index}"
        name, i = base, 1
        while name in used:
            name, i = f"{base}_{i}", i + 1
        used.add(name)
        return name

    def _visit(self, proto: onnx.NodeProto, name: str) -> None:
        try:
            folded = fold_node(proto, self.values, self._shape_of, self.opsets, self.max_folded)
        except ModelError as exc:
            self.first_error = self.first_error or f"node {name} ({proto.op_type}): {exc}"
            self.unknown.update(proto.output)
            return
        if folded is not None:
            self.values.update(folded)
            return
        if proto.domain not in ("", "ai.onnx") or proto.op_type not in SUPPORTED_OPS:
            op = f"{proto.domain}.{proto.op_type}" if proto.domain else proto.op_type
            self.unsupported.setdefault(op, []).append(name)
            self.unknown.update(proto.output)
            return
        if self.first_error or any(t in self.unknown for t in proto.input):
            self.unknown.update(proto.output)
            return
        try:
            self._check_extra_outputs(proto, name)
            node = normalize_node(proto, name, self.ctx)
            self._check_parameters(node)
            [shape] = infer_output_shapes(node, [self._shape(t) for t in node.inputs])
        except ModelError as exc:
            self.first_error = str(exc)
            self.unknown.update(proto.output)
            return
        out = node.outputs[0]
        self.shapes[out] = shape
        self.dtypes[out] = self._dtype_of(node.inputs[0])
        self.nodes.append(node)

    def _check_extra_outputs(self, proto: onnx.NodeProto, name: str) -> None:
        for out in proto.output[1:]:
            if out and out in self.read:
                raise ModelError(
                    f"node {name} ({proto.op_type}): its extra output {out!r} is used; anacc "
                    f"supports only the first output of {proto.op_type}"
                )

    def _check_parameters(self, node: Node) -> None:
        if node.op not in _PARAMETER_OPS:
            return
        for t in node.inputs:
            value = self.values.get(t)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                bad = int((~np.isfinite(value)).sum())
                if bad:
                    raise ModelError(
                        f"node {node.name} ({node.op}): its parameter {t!r} has {bad} NaN/Inf "
                        "values; the model is broken, re-train or re-export it"
                    )

    def _shape(self, tensor: str) -> Shape:
        if tensor in self.shapes:
            return self.shapes[tensor]
        return tuple(int(d) for d in self.values[tensor].shape)

    def _dtype_of(self, tensor: str) -> str:
        if tensor in self.dtypes:
            return self.dtypes[tensor]
        value = self.values[tensor]
        return value.dtype.name if isinstance(value, np.ndarray) else "int64"

    def _shape_of(self, tensor: str) -> tuple[Dim | None, ...] | None:
        if tensor in self.shapes:
            return self.shapes[tensor]
        return self._fallback_shapes().get(tensor)

    def _fallback_shapes(self) -> dict[str, tuple[Dim | None, ...]]:
        """ONNX's own inferred shapes with a symbolic batch, for tensors the walk lost track
        of (after an unsupported op), so that shape computations behind it still fold."""
        if self._onnx_shapes is None:
            model = onnx.ModelProto()
            model.CopyFrom(self.model)
            del model.graph.value_info[:]
            for vi in model.graph.input:
                dims = vi.type.tensor_type.shape.dim
                if vi.name not in self.values and dims:
                    dims[0].Clear()
                    dims[0].dim_param = self.batch_dim
            for vi in model.graph.output:
                vi.type.tensor_type.ClearField("shape")
            try:
                inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
            except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
                inferred = []
            self._onnx_shapes = {}
            for vi in inferred:
                dims = _dims(vi)
                if dims is not None:
                    self._onnx_shapes[vi.name] = tuple(
                        d if isinstance(d, int) or d == self.batch_dim else None for d in dims
                    )
        return self._onnx_shapes

    def _unsupported_message(self) -> str:
        parts = []
        for op in sorted(self.unsupported):
            names = self.unsupported[op]
            shown = ", ".join(names[:_NAMES_PER_OP])
            if len(names) > _NAMES_PER_OP:
                shown += f" and {len(names) - _NAMES_PER_OP} more"
            parts.append(f"{op} (node{'s' if len(names) > 1 else ''} {shown})")
        return (
            f"{self.source} uses unsupported ops: {', '.join(parts)}; supported: "
            f"{', '.join(sorted(SUPPORTED_OPS))}"
        )

    # -- the result ---------------------------------------------------------------------
    def _assemble(self, name: str) -> Graph:
        outputs = [self._output_info(vi.name) for vi in self.model.graph.output]
        tensors = {t: TensorInfo(t, shape, self.dtypes[t]) for t, shape in self.shapes.items()}
        graph = Graph(name, self.inputs, outputs, tensors=tensors, opset=self.ctx.opset)
        needed = {t for n in self.nodes for t in n.inputs} | {o.name for o in outputs}
        for t, value in self.values.items():
            if t in needed and isinstance(value, np.ndarray):
                graph.add_initializer(t, value)
        for node in self.nodes:
            graph.add_node(node)
        graph.prune_unused()
        live = {t.name for t in graph.inputs + graph.outputs} | set(graph.initializers)
        live |= {t for n in graph.nodes() for t in (*n.inputs, *n.outputs)}
        for t in [t for t in graph.tensors if t not in live]:
            del graph.tensors[t]
        return graph

    def _output_info(self, tensor: str) -> TensorInfo:
        if tensor in self.shapes:
            return TensorInfo(tensor, self.shapes[tensor], self.dtypes[tensor])
        value = self.values.get(tensor)
        if isinstance(value, np.ndarray):
            return TensorInfo(tensor, tuple(int(d) for d in value.shape), value.dtype.name)
        assert isinstance(value, SymValue), f"graph output {tensor!r} was never computed"
        raise ModelError(
            f"{self.source}: graph output {tensor!r} is computed from tensor shapes only; "
            "anacc needs outputs computed from the inputs' data"
        )
