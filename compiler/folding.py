"""Constant folding of ONNX nodes, with shapes evaluated symbolically in the batch.

:func:`fold_node` evaluates one ``onnx.NodeProto`` whose value is known before run time:

- every input is a constant: the node is run once with ``onnx.reference`` (this covers
  Constant, ConstantOfShape, Cast, Range, Transpose of a weight, ...);
- ``Shape``/``Size`` of a tensor whose shape is known: the result is the shape itself, where
  the batch stays a symbol;
- the integer ops exporters apply to shapes (Gather, Slice, Unsqueeze, Squeeze, Concat, Cast,
  Identity, Reshape, Add/Sub/Mul/Div) on such symbolic values.

A folded value may not hold more than ``max_elements`` elements: a few bytes of model
(``ConstantOfShape`` of ``[50000, 50000]``) must not make the compiler allocate gigabytes.
ONNX's shape inference for the node tells the size before anything is evaluated; a node over
the limit is a :class:`~anacc.errors.ModelError`.

A symbolic value is a :class:`SymValue`: a rank-0 or rank-1 int64 tensor whose entries are
dims of :mod:`anacc.compiler.symdim` (``"N"``, ``"4*N"``, ints). Once no entry is symbolic it
becomes a plain numpy array. So ``x.view(x.size(0), -1)``, exported as
Shape -> Gather -> Unsqueeze -> Concat -> Reshape, leaves Reshape with the value ``["N", -1]``,
which the frontend turns into the attribute ``[0, -1]``, whatever chain the exporter chose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from anacc.compiler import symdim
from anacc.compiler.ir import Dim
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from anacc.errors import ModelError

# Inputs up to this many elements are handed to shape inference by value (shapes, repeats,
# ranges); larger ones, weights, only by type.
_DATA_FOR_INFERENCE = 1024

# Ops whose value differs between runs, or that hold subgraphs reading outer-scope values.
_NEVER_FOLD = frozenset(
    {
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "If",
        "Loop",
        "Scan",
    }
)


@dataclass(frozen=True)
class SymValue:
    """A rank-0 (``scalar``) or rank-1 int64 tensor whose entries may be symbolic dims."""

    items: tuple[Dim, ...]
    scalar: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return () if self.scalar else (len(self.items),)


Value = np.ndarray | SymValue
ShapeOf = Callable[[str], "tuple[Dim | None, ...] | None"]


def make_value(items: Sequence[Dim], scalar: bool) -> Value:
    """A numpy int64 array when every entry is static, else a :class:`SymValue`."""
    if any(isinstance(d, str) for d in items):
        assert not scalar or len(items) == 1
        return SymValue(tuple(items), scalar)
    arr = np.array(items, dtype=np.int64)
    return arr.reshape(()) if scalar else arr


def fold_node(
    node: onnx.NodeProto,
    values: Mapping[str, Value],
    shape_of: ShapeOf,
    opsets: Mapping[str, int],
    max_elements: int | None = None,
) -> dict[str, Value] | None:
    """The values of the node's outputs, or None if they are not known before run time.

    ``values`` holds the constant and symbolic tensors known so far, ``shape_of`` the shape
    of any other tensor (None, or a ``None`` entry, where unknown), ``opsets`` the model's
    opset imports. A constant output of more than ``max_elements`` elements is a ModelError.
    """
    if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER_FOLD:
        return None
    if node.op_type in ("Shape", "Size"):
        result = _fold_shape(node, values, shape_of)
        return None if result is None else {node.output[0]: result}
    if any(t and t not in values for t in node.input):
        return None
    inputs = [values[t] if t else None for t in node.input]
    if any(isinstance(v, SymValue) for v in inputs):
        result = _fold_symbolic(node, inputs, opsets[""])
        return None if result is None else {node.output[0]: result}
    if max_elements is not None:
        size = _largest_output(node, inputs, opsets)
        if size is not None and size > max_elements:
            raise ModelError(
                f"its constant output would hold {size:,} elements, more than the limit of "
                f"{max_elements:,} for this model; the model is malformed"
            )
    return _evaluate(node, inputs, opsets)


def _largest_output(
    node: onnx.NodeProto, inputs: list[Value | None], opsets: Mapping[str, int]
) -> int | None:
    """Elements of the node's largest output by ONNX shape inference; None if unknown."""
    arrays = {t: v for t, v in zip(node.input, inputs, strict=True) if isinstance(v, np.ndarray)}
    try:
        schema = onnx.defs.get_schema(
            node.op_type, opsets.get(node.domain, opsets[""]), node.domain
        )
        types = {
            t: onnx.helper.make_tensor_type_proto(
                onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape
            )
            for t, v in arrays.items()
        }
        data = {
            t: numpy_helper.from_array(v, t)
            for t, v in arrays.items()
            if v.size <= _DATA_FOR_INFERENCE
        }
        imports = [onnx.helper.make_opsetid(d, v) for d, v in opsets.items()]
        outputs = onnx.shape_inference.infer_node_outputs(schema, node, types, data, None, imports)
    # Inference fails in many ways (unknown ops, odd types); the size is then just unknown.
    except Exception:
        return None
    sizes = []
    for tp in outputs.values():
        shape = tp.tensor_type.shape
        if tp.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in shape.dim):
            sizes.append(int(np.prod([d.dim_value for d in shape.dim], dtype=object)))
    return max(sizes, default=None)


def _evaluate(
    node: onnx.NodeProto, inputs: list[Value | None], opsets: Mapping[str, int]
) -> dict[str, Value] | None:
    feeds = {t: v for t, v in zip(node.input, inputs, strict=True) if t}
    try:
        results = ReferenceEvaluator(node, opsets=dict(opsets)).run(None, feeds)
    # The reference evaluator raises arbitrary errors for ops or dtypes it cannot run; such a
    # node is simply not folded and is judged like any other node.
    except Exception:
        return None
    return {t: np.asarray(r) for t, r in zip(node.output, results, strict=False) if t}


def _int_attr(node: onnx.NodeProto, name: str, default: int | None) -> int | None:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _ints_attr(node: onnx.NodeProto, name: str) -> list[int] | None:
    for a in node.attribute:
        if a.name == name:
            return [int(i) for i in a.ints]
    return None


def _fold_shape(
    node: onnx.NodeProto, values: Mapping[str, Value], shape_of: ShapeOf
) -> Value | None:
    src = node.input[0]
    shape = tuple(values[src].shape) if src in values else shape_of(src)
    if shape is None or any(d is None for d in shape):
        return None
    dims: list[Dim] = [d if isinstance(d, str) else int(d) for d in shape]  # type: ignore[arg-type]
    if node.op_type == "Size":
        size = symdim.product(dims)
        return None if size is None else make_value([size], scalar=True)
    start, end = _int_attr(node, "start", 0), _int_attr(node, "end", None)
    return make_value(dims[start:end], scalar=False)


def _as_items(v: Value | None) -> tuple[list[Dim], bool] | None:
    """Entries and scalar-ness of a rank <= 1 integer value."""
    if isinstance(v, SymValue):
        return list(v.items), v.scalar
    if v is None or v.ndim > 1 or not np.issubdtype(v.dtype, np.integer):
        return None
    return [int(x) for x in v.reshape(-1)], v.ndim == 0


def _ints(v: Value | None) -> list[int] | None:
    items = _as_items(v)
    if items is None or any(isinstance(d, str) for d in items[0]):
        return None
    return items[0]  # type: ignore[return-value]


def _axes(node: onnx.NodeProto, inputs: list[Value | None], opset: int) -> list[int] | None:
    if opset >= 13:
        return _ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else None
    return _ints_attr(node, "axes")


_INT_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)

_ARITH: dict[str, Callable[[Dim, Dim], Dim | None]] = {
    "Add": symdim.add,
    "Sub": symdim.sub,
    "Mul": symdim.mul,
    "Div": symdim.div_exact,
}


def _fold_symbolic(node: onnx.NodeProto, inputs: list[Value | None], opset: int) -> Value | None:
    op = node.op_type
    parsed = [_as_items(v) for v in inputs]
    if parsed[0] is None:
        return None
    items, scalar = parsed[0]
    if op == "Identity" or (op == "Cast" and _int_attr(node, "to", None) in _INT_TYPES):
        return make_value(items, scalar)
    if op in _ARITH:
        return _fold_arith(_ARITH[op], parsed)
    if op == "Concat":
        if any(p is None for p in parsed) or _int_attr(node, "axis", None) not in (0, -1):
            return None
        return make_value([d for p in parsed for d in p[0]], scalar=False)  # type: ignore[union-attr]
    if op == "Gather":
        return _fold_gather(node, items, scalar, inputs)
    if op == "Unsqueeze":
        unsqueezable = scalar and _axes(node, inputs, opset) in ([0], [-1])
        return make_value(items, scalar=False) if unsqueezable else None
    if op == "Squeeze":
        axes = _axes(node, inputs, opset)
        return make_value(items, True) if len(items) == 1 and axes in (None, [0], [-1]) else None
    if op == "Slice":
        return _fold_slice(node, items, scalar, inputs, opset)
    if op == "Reshape":
        target = _ints(inputs[1]) if len(inputs) > 1 else None
        if target == [-1] or (target == [1] and len(items) == 1):
            return make_value(items, scalar=False)
        if target == [] and len(items) == 1:
            return make_value(items, scalar=True)
    return None


def _fold_arith(fn: Callable[[Dim, Dim], Dim | None], parsed: list) -> Value | None:
    if len(parsed) != 2 or parsed[1] is None:
        return None
    (a, a_scalar), (b, b_scalar) = parsed
    if len(a) != len(b) and 1 not in (len(a), len(b)):
        return None
    n = max(len(a), len(b))
    out = [fn(a[i % len(a)], b[i % len(b)]) for i in range(n)]
    if any(d is None for d in out):
        return None
    return make_value(out, scalar=a_scalar and b_scalar)  # type: ignore[arg-type]


def _fold_gather(
    node: onnx.NodeProto, items: list[Dim], scalar: bool, inputs: list[Value | None]
) -> Value | None:
    parsed = _as_items(inputs[1])
    if scalar or parsed is None or _int_attr(node, "axis", 0) not in (0, -1):
        return None
    indices, idx_scalar = parsed
    if not all(isinstance(i, int) and -len(items) <= i < len(items) for i in indices):
        return None
    return make_value([items[i] for i in indices], idx_scalar)  # type: ignore[index]


def _fold_slice(
    node: onnx.NodeProto,
    items: list[Dim],
    scalar: bool,
    inputs: list[Value | None],
    opset: int,
) -> Value | None:
    if scalar:
        return None
    if opset >= 10:
        params = [_ints(v) if v is not None else None for v in inputs[1:5]]
        params += [None] * (4 - len(params))
        starts, ends, axes, steps = params
    else:
        starts, ends, axes = (_ints_attr(node, k) for k in ("starts", "ends", "axes"))
        steps = None
    if starts is None or ends is None or len(starts) != 1 or len(ends) != 1:
        return None
    if axes is not None and axes not in ([0], [-1]):
        return None
    step = steps[0] if steps else 1
    return make_value(items[starts[0] : ends[0] : step], scalar=False)
