"""Build the anacc graph IR of docs/ir.md from a validated ONNX model.

- :func:`graph_from_onnx`: one walk over the ONNX nodes. A node whose outputs are known before
  run time (constants, shapes of static tensors and the integer arithmetic exporters do on
  them, see :mod:`anacc.compiler.folding`) is computed now and becomes initializers; every
  other node stays in its ONNX form (op, domain, attributes). Tensor shapes and dtypes come
  from ONNX shape inference, with every graph input whose first dimension is symbolic taking
  the batch symbol ``N``; a fixed first dimension stays as declared.
- Ops that neither the analog array nor onnxruntime's CPU provider can run are reported
  together, each named alone, in one :class:`~anacc.errors.UnsupportedOpError`.
- :func:`load_model`: :func:`~anacc.compiler.onnx_file.load_onnx` and then the IR.

Reading and validating the file lives in :mod:`anacc.compiler.onnx_file`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from anacc.compiler.folding import SymValue, Value, fold_node
from anacc.compiler.ir import BATCH, Dim, Graph, Node, Shape, TensorInfo
from anacc.compiler.onnx_file import (
    external_data_files,
    load_onnx,
    model_sha256,
    one_line,
)
from anacc.compiler.onnx_nodes import ir_node
from anacc.compiler.ops import lookup, runs_digitally
from onnx import numpy_helper

from anacc.errors import ModelError, UnsupportedOpError

__all__ = [
    "external_data_files",
    "graph_from_onnx",
    "load_model",
    "load_onnx",
    "model_sha256",
]

# Node names listed per unsupported op type before the rest is summarized as a count.
_NAMES_PER_OP = 10
# Elements a folded constant may always hold, however small the model.
_MIN_FOLD_LIMIT = 1 << 22
# Unknown dimensions (data-dependent sizes) in inferred shapes.
UNKNOWN_DIM = "?"


def load_model(path: str | os.PathLike, *, max_params: int | None = None) -> Graph:
    """The graph IR of the ONNX model at ``path`` (see the module docstring)."""
    model = load_onnx(path, max_params=max_params)
    return graph_from_onnx(model, name=Path(path).stem, source=str(path))


def graph_from_onnx(
    model: onnx.ModelProto, *, name: str | None = None, source: str = "model"
) -> Graph:
    """The IR of ``model``, which must be valid (:func:`load_onnx` made it so).

    ``source`` names the model in error messages, ``name`` becomes ``graph.name`` (default:
    the ONNX graph's name).
    """
    return _GraphBuilder(model, source).build(name or model.graph.name or "graph")


def _dims(value_info: onnx.ValueInfoProto) -> tuple[Dim | None, ...] | None:
    tensor_type = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
        return None
    return tuple(
        int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None)
        for d in tensor_type.shape.dim
    )


def _dtype(elem_type: int) -> str:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except KeyError:
        return "unknown"


class _GraphBuilder:
    """One walk over the ONNX nodes in their (topological) order: fold, or keep."""

    def __init__(self, model: onnx.ModelProto, source: str) -> None:
        self.model = model
        self.source = source
        self.opsets = {
            ("" if i.domain == "ai.onnx" else i.domain): int(i.version) for i in model.opset_import
        }
        if "" not in self.opsets:
            raise ModelError(f"{source}: the model does not import the default ONNX domain")
        self.values: dict[str, Value] = {
            t.name: numpy_helper.to_array(t) for t in model.graph.initializer
        }
        # A folded constant may be as large as all of the model's parameters, or a little.
        self.max_folded = max(
            _MIN_FOLD_LIMIT,
            sum(int(v.size) for v in self.values.values()),  # type: ignore[union-attr]
        )
        self.outputs = {o.name for o in model.graph.output}
        self.inputs = self._graph_inputs()
        self.types = self._inferred_types()
        measure_shapes(model, self.inputs, self.types)
        self.nodes: list[Node] = []
        self.folded: dict[str, str] = {}
        self.unsupported: dict[str, list[str]] = {}

    def _graph_inputs(self) -> list[TensorInfo]:
        infos = []
        for vi in self.model.graph.input:
            if vi.name in self.values:
                continue  # an initializer listed as an input (older IR versions)
            if not vi.type.HasField("tensor_type"):
                raise ModelError(
                    f"{self.source}: graph input {vi.name!r} is not a tensor (a sequence, map "
                    "or optional); anacc takes tensor inputs only"
                )
            dims = _dims(vi)
            if dims is None:
                raise ModelError(
                    f"{self.source}: graph input {vi.name!r} has no tensor shape; anacc needs "
                    "the rank and the sizes of every axis but the first"
                )
            for axis, d in enumerate(dims):
                if isinstance(d, int) and d < 0:
                    raise ModelError(
                        f"{self.source}: graph input {vi.name!r} has dimension {d} at axis "
                        f"{axis}; the file is malformed, re-export it"
                    )
            for axis, d in enumerate(dims[1:], start=1):
                if not isinstance(d, int):
                    raise ModelError(
                        f"{self.source}: graph input {vi.name!r} has a dynamic dimension "
                        f"{d or '?'} at axis {axis}; only axis 0 (the batch) may be dynamic, "
                        "re-export with fixed sizes"
                    )
            lead: tuple[Dim, ...] = ()
            if dims:
                lead = (dims[0] if isinstance(dims[0], int) else BATCH,)
            shape: Shape = (*lead, *dims[1:])  # type: ignore[assignment]
            infos.append(TensorInfo(vi.name, shape, _dtype(vi.type.tensor_type.elem_type)))
        return infos

    def _inferred_types(self) -> dict[str, TensorInfo]:
        """ONNX's inferred shape and dtype of every tensor, with the batch named ``N``."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        del model.graph.value_info[:]
        batched = {t.name for t in self.inputs if t.batched}
        for vi in model.graph.input:
            dims = vi.type.tensor_type.shape.dim
            if vi.name in batched:
                dims[0].Clear()
                dims[0].dim_param = BATCH
        for vi in model.graph.output:
            vi.type.tensor_type.ClearField("shape")
        try:
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
            raise ModelError(
                f"{self.source}: ONNX shape inference failed: {one_line(exc)}"
            ) from None
        types = {}
        graph = inferred.graph
        for vi in [*graph.input, *graph.value_info, *graph.output]:
            dims = _dims(vi)
            if dims is None or not vi.type.HasField("tensor_type"):
                continue
            shape = tuple(UNKNOWN_DIM if d is None else d for d in dims)
            types[vi.name] = TensorInfo(vi.name, shape, _dtype(vi.type.tensor_type.elem_type))
        types.update({t.name: t for t in self.inputs})
        return types

    # -- the walk -----------------------------------------------------------------------
    def build(self, name: str) -> Graph:
        used_names: set[str] = set()
        for index, proto in enumerate(self.model.graph.node):
            self._visit(proto, self._node_name(proto, index, used_names))
        if self.unsupported:
            raise UnsupportedOpError(self._unsupported_message())
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
            raise ModelError(f"{self.source}: node {name} ({proto.op_type}): {exc}") from None
        if folded is not None:
            self.values.update(folded)
            constant = all(isinstance(v, np.ndarray) for v in folded.values())
            if constant and not any(t in self.outputs for t in proto.output):
                self.folded[name] = proto.op_type
                return
        domain = "" if proto.domain == "ai.onnx" else proto.domain
        opset = self.opsets.get(domain)
        op = lookup(proto.op_type, domain)
        if opset is None or not (op.analog or runs_digitally(proto.op_type, domain, opset)):
            label = f"{domain}.{proto.op_type}" if domain else proto.op_type
            self.unsupported.setdefault(label, []).append(name)
            return
        node = ir_node(proto, name)
        self._check_parameters(node)
        self.nodes.append(node)

    def _check_parameters(self, node: Node) -> None:
        if not lookup(node.op, node.domain).analog and node.op != "BatchNormalization":
            return
        for t in node.inputs:
            value = self.values.get(t)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                bad = int((~np.isfinite(value)).sum())
                if bad:
                    raise ModelError(
                        f"{self.source}: node {node.name} ({node.op}): its parameter {t!r} "
                        f"has {bad} NaN/Inf values; the model is broken, re-train or re-export it"
                    )

    def _shape_of(self, tensor: str) -> tuple[Dim | None, ...] | None:
        info = self.types.get(tensor)
        if info is None:
            return None
        return tuple(None if d == UNKNOWN_DIM else d for d in info.shape)

    def _unsupported_message(self) -> str:
        parts = []
        for op in sorted(self.unsupported):
            names = self.unsupported[op]
            shown = ", ".join(names[:_NAMES_PER_OP])
            if len(names) > _NAMES_PER_OP:
                shown += f" and {len(names) - _NAMES_PER_OP} more"
            parts.append(f"{op} (node{'s' if len(names) > 1 else ''} {shown})")
        return (
            f"{self.source} uses ops that neither the analog array nor the digital side "
            f"(onnxruntime's CPU provider) can run: {', '.join(parts)}; see docs/ops.md"
        )

    # -- the result ---------------------------------------------------------------------
    def _assemble(self, name: str) -> Graph:
        outputs = [self._info(vi.name) for vi in self.model.graph.output]
        graph = Graph(name, self.inputs, outputs, opsets=self.opsets)
        graph.folded = self.folded
        needed = {t for n in self.nodes for t in n.reads} | {o.name for o in outputs}
        for t, value in self.values.items():
            if t in needed and isinstance(value, np.ndarray):
                graph.add_initializer(t, value)
        for node in self.nodes:
            for t in node.outputs:
                if t and t in self.types:
                    graph.set_tensor(self.types[t])
            graph.add_node(node)
        missing = [o.name for o in outputs if graph.producer(o.name) is None]
        missing = [t for t in missing if t not in graph.initializers and not _is_input(graph, t)]
        assert not missing, f"graph outputs {missing} are never computed"
        kept = {n.name: n.op for n in graph.nodes()}
        graph.prune_unused()
        # nodes only folded values read (a Shape whose dims folded further) were folded too
        graph.folded.update((n, op) for n, op in kept.items() if n not in graph)
        return graph

    def _info(self, tensor: str) -> TensorInfo:
        if tensor in self.types:
            return self.types[tensor]
        value = self.values.get(tensor)
        if isinstance(value, np.ndarray):
            return TensorInfo(tensor, tuple(int(d) for d in value.shape), value.dtype.name)
        assert not isinstance(value, SymValue), f"graph output {tensor!r} is kept as a node"
        return TensorInfo(tensor, (), "unknown")


def measure_shapes(
    model: onnx.ModelProto, inputs: list[TensorInfo], types: dict[str, TensorInfo]
) -> None:
    """Every tensor's shape as onnxruntime computes it, over ONNX's inferred one (which is
    unknown after a Reshape to a shape computed at run time, and in rare cases differs from
    what onnxruntime computes). The model runs on zeros with every tensor exposed: a batched
    model at batch 2 and 3, where a dimension that grows by ``k`` per sample becomes ``k*N``,
    a fixed-shape model once as declared. Tensors the run does not give, and every tensor of
    a model that does not run on zeros, keep their inferred shape. A model with an empty input
    (a declared size of 0) is not probed: some onnxruntime kernels abort the process on empty
    tensors instead of raising."""
    import onnxruntime as ort

    names = [t for n in model.graph.node for t in n.output if t]
    if not names or any(d == 0 for t in inputs for d in t.shape):
        return
    # The probe is the model with every tensor as an output and no value_info (onnxruntime
    # would check the inferred shapes against its own), serialized from the model itself and
    # restored after: a copy of the proto would hold a second copy of the weights.
    graph = model.graph
    value_info = list(graph.value_info)
    n_outputs = len(graph.output)
    declared = {o.name for o in graph.output}
    del graph.value_info[:]
    graph.output.extend(onnx.ValueInfoProto(name=t) for t in names if t not in declared)
    try:
        probe = model.SerializeToString()
    finally:
        del graph.output[n_outputs:]
        graph.value_info.extend(value_info)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    batched = any(t.batched for t in inputs)
    measured = []
    try:
        sess = ort.InferenceSession(probe, opts, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in sess.get_outputs()]
        for batch in (2, 3) if batched else (None,):
            feeds = {
                t.name: np.zeros(
                    tuple(batch if d == BATCH else d for d in t.shape), dtype=np.dtype(t.dtype)
                )
                for t in inputs
            }
            values = sess.run(None, feeds)
            measured.append({k: np.shape(v) for k, v in zip(outputs, values, strict=True)})
    except Exception:  # a model that needs real data to run keeps ONNX's shapes
        return
    for t in names:
        found = [m.get(t) for m in measured]
        if any(f is None for f in found) or len({len(f) for f in found}) != 1:
            continue
        dtype = types[t].dtype if t in types else "unknown"
        if not batched:
            types[t] = TensorInfo(t, tuple(int(d) for d in found[0]), dtype)
            continue
        dims: list[Dim] = []
        for a, b in zip(*found, strict=True):
            k = b - a
            if k == 0:
                dims.append(int(a))
            elif a == 2 * k:
                dims.append(BATCH if k == 1 else f"{k}*{BATCH}")
            else:
                dims.append(UNKNOWN_DIM)
        types[t] = TensorInfo(t, tuple(dims), dtype)


def _is_input(graph: Graph, tensor: str) -> bool:
    return any(t.name == tensor for t in graph.inputs)
