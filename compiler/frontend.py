"""Read an ONNX model file and build the anacc graph IR of docs/ir.md from it.

- :func:`load_onnx`: read and validate a model file (external data next to it included):
  protobuf parse, ``onnx.checker``, opset (9..21 read directly, others converted to 17),
  ONNX shape inference, an optional parameter limit. Every problem is one
  :class:`~anacc.errors.ModelError` line that names the file.
- :func:`graph_from_onnx`: the IR of a validated model. Each graph input's first dimension
  becomes the symbolic batch; constants and shape computations are folded
  (:mod:`anacc.compiler.folding`); every remaining node is normalized
  (:mod:`anacc.compiler.normalize`) and its output shapes inferred
  (:mod:`anacc.compiler.shapes`). Unsupported ops are reported together in one
  :class:`~anacc.errors.UnsupportedOpError` before any other problem.
- :func:`load_model`: both of the above.
- :func:`model_sha256`: a hash of the model file and its external data files.
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
from google.protobuf.message import DecodeError
from onnx import external_data_helper, numpy_helper

from anacc.errors import ModelError, OptionError, UnsupportedOpError

# A protobuf message cannot exceed 2 GiB; larger models are checked through their path.
_PROTOBUF_LIMIT = 2**31 - 1
# Node names listed per unsupported op type before the rest is summarized as a count.
_NAMES_PER_OP = 10


def load_onnx(path: str | os.PathLike, *, max_params: int | None = None) -> onnx.ModelProto:
    """The validated, shape-inferred model at ``path`` in a default-domain opset 9..21."""
    p, model = _read(path)
    n_params = sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer)
    if max_params is not None and n_params > max_params:
        raise ModelError(
            f"{path}: the model has {n_params:,} parameters, more than the limit of "
            f"{max_params:,}; raise the limit (--max-params) to read it"
        )
    external = _external_files(p, model)
    _load_external_data(path, p, model)
    size = p.stat().st_size + sum(f.stat().st_size for f in external)
    try:
        onnx.checker.check_model(model if size < _PROTOBUF_LIMIT else str(p))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelError(f"{path}: invalid ONNX model: {_first_line(exc)}") from None
    model = _supported_opset(path, model)
    if size >= _PROTOBUF_LIMIT:
        return model
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        raise ModelError(f"{path}: ONNX shape inference failed: {_first_line(exc)}") from None


def load_model(
    path: str | os.PathLike, *, max_params: int | None = None, batch_dim: str = "N"
) -> Graph:
    """The graph IR of the ONNX model at ``path`` (see the module docstring)."""
    model = load_onnx(path, max_params=max_params)
    return graph_from_onnx(model, batch_dim=batch_dim, name=Path(path).stem, source=str(path))


def model_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the model file followed by each external data file (sorted by name)."""
    p, model = _read(path)
    digest = hashlib.sha256(p.read_bytes())
    for f in _external_files(p, model):
        if not f.is_file():
            raise ModelError(f"{path}: external data file {f.name!r} is missing")
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


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _read(path: str | os.PathLike) -> tuple[Path, onnx.ModelProto]:
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{path}: no such file; check the model path")
    if not p.is_file():
        raise ModelError(f"{path}: is not a file; pass the path of an .onnx model file")
    try:
        return p, onnx.load_model(str(p), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"{path}: not an ONNX model, or the file is truncated ({_first_line(exc)}); "
            "re-export or re-download it"
        ) from None


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


def _external_files(p: Path, model: onnx.ModelProto) -> list[Path]:
    locations = {
        external_data_helper.ExternalDataInfo(t).location for t in _external_tensors(model)
    }
    return [p.parent / loc for loc in sorted(locations)]


def _load_external_data(path: str | os.PathLike, p: Path, model: onnx.ModelProto) -> None:
    for tensor in _external_tensors(model):
        info = external_data_helper.ExternalDataInfo(tensor)
        f = p.parent / info.location
        if not f.is_file():
            raise ModelError(
                f"{path}: external data file {info.location!r} is missing; keep it in "
                f"{p.parent} next to the model"
            )
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        needed = int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
        if info.length and info.length != needed or f.stat().st_size < info.offset + needed:
            raise ModelError(
                f"{path}: external data file {info.location!r} is too short for tensor "
                f"{tensor.name!r} (truncated?); re-export the model"
            )
    try:
        external_data_helper.load_external_data_for_model(model, str(p.parent))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read external data: {_first_line(exc)}") from None


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
            f"({_first_line(exc)}); re-export the model with opset {CONVERT_OPSET}"
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
        folded = fold_node(proto, self.values, self._shape_of, self.opsets)
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
