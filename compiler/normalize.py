"""Turn one ONNX node of any opset 9..21 into the opset-independent IR node of docs/ir.md.

:func:`normalize_node` reads the node's attributes, fills every default, moves configuration
that newer opsets pass as inputs (Clip bounds, Pad pads, Squeeze/Unsqueeze/ReduceMean axes,
Reshape shape) into attributes, makes axes non-negative and resolves ``auto_pad`` into
explicit ``pads``. Absent optional inputs at the end of the input list are dropped, as in
ONNX (an absent one before a present one stays ``""``). Only a node's first output is kept;
an extra output (a MaxPool index, a Dropout mask) that something reads is an error.
Configuration inputs must be constant; the only value that may depend on the batch is
Reshape's shape, which becomes an ONNX shape with ``0`` (copy the input's dimension) for the
batch.

A model exported with a fixed batch size ``b`` bakes ``b`` into constant Reshape shapes
(``[b, -1]``). As the batch is kept symbolic, a leading ``b`` in a constant Reshape shape is
read as "the batch" (``0``) when the input's leading dimension is the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from anacc.compiler import symdim
from anacc.compiler.folding import SymValue, Value
from anacc.compiler.ir import Dim, Node, Shape
from anacc.compiler.shapes import ShapeError, format_shape, reshape_target

from anacc.errors import ModelError


@dataclass(frozen=True)
class NormalizeContext:
    """What normalizing a node needs to know about the rest of the graph."""

    opset: int
    values: Mapping[str, Value]
    shapes: Mapping[str, Shape]
    fixed_batch: int | None = None


class _NodeView:
    """An ONNX node with decoded attributes and access to its inputs' shapes and values."""

    def __init__(self, proto: onnx.NodeProto, name: str, ctx: NormalizeContext) -> None:
        self.proto = proto
        self.name = name
        self.op = proto.op_type
        self.ctx = ctx
        self.attrs: dict[str, Any] = {a.name: _decode(a) for a in proto.attribute}

    def fail(self, message: str) -> ModelError:
        return ModelError(f"node {self.name} ({self.op}): {message}")

    def input(self, index: int) -> str:
        return self.proto.input[index] if index < len(self.proto.input) else ""

    def shape(self, index: int) -> Shape:
        tensor = self.input(index)
        if tensor in self.ctx.shapes:
            return self.ctx.shapes[tensor]
        return tuple(int(d) for d in self.ctx.values[tensor].shape)

    def rank(self) -> int:
        return len(self.shape(0))

    def constant(self, index: int, what: str) -> np.ndarray | None:
        """The constant value of an optional configuration input (None when absent)."""
        tensor = self.input(index)
        if not tensor:
            return None
        value = self.ctx.values.get(tensor)
        if not isinstance(value, np.ndarray):
            raise self.fail(
                f"its {what} input {tensor!r} is computed at run time; anacc needs it constant"
            )
        return value

    def axes(self, input_index: int | None) -> list[int] | None:
        """Axes from the ``axes`` attribute or, in newer opsets, a constant input."""
        if "axes" in self.attrs:
            return [int(a) for a in self.attrs["axes"]]
        value = None if input_index is None else self.constant(input_index, "axes")
        return None if value is None else [int(a) for a in value.reshape(-1)]

    def non_negative(self, axes: list[int], rank: int) -> list[int]:
        """``axes`` in ``0..rank-1``, in their order."""
        if any(not -rank <= a < rank for a in axes) or len(set(axes)) != len(axes):
            raise self.fail(f"axes {axes} are invalid for rank {rank}")
        return [a % rank for a in axes]

    def normalize_axes(self, axes: list[int], rank: int) -> list[int]:
        return sorted(self.non_negative(axes, rank))


def _decode(attr: onnx.AttributeProto) -> Any:
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


Normalized = tuple[str, list[str], dict[str, Any]]


def normalize_node(proto: onnx.NodeProto, name: str, ctx: NormalizeContext) -> Node:
    """The IR node for ``proto`` (a supported op), named ``name``; ModelError if not possible."""
    view = _NodeView(proto, name, ctx)
    op, inputs, attrs = _NORMALIZERS[proto.op_type](view)
    for t in inputs:
        if isinstance(ctx.values.get(t), SymValue):
            raise view.fail(
                f"reads {t!r}, a value computed from tensor shapes; anacc folds shapes only "
                "into Reshape"
            )
    while inputs and not inputs[-1]:
        inputs.pop()
    return Node(name, op, inputs, [proto.output[0]], attrs)


def _data(view: _NodeView, count: int) -> list[str]:
    return [view.input(i) for i in range(count)]


def _plain(view: _NodeView) -> Normalized:
    return view.op, list(view.proto.input), {}


def _dropout(view: _NodeView) -> Normalized:
    return "Dropout", _data(view, 1), {}


def _gemm(view: _NodeView) -> Normalized:
    attrs = {
        "alpha": float(view.attrs.get("alpha", 1.0)),
        "beta": float(view.attrs.get("beta", 1.0)),
        "transA": int(view.attrs.get("transA", 0)),
        "transB": int(view.attrs.get("transB", 0)),
    }
    return "Gemm", _data(view, 3), attrs


def _auto_pads(view: _NodeView, kernel: list[int], strides: list[int], dilations: list[int]):
    """Explicit ``pads`` (begin..., end...) of the node, resolving ``auto_pad``."""
    n = len(kernel)
    auto_pad = view.attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = [int(p) for p in view.attrs.get("pads", [0] * (2 * n))]
        if len(pads) != 2 * n:
            raise view.fail(f"pads {pads} do not match {n} spatial dims")
        return pads
    if auto_pad == "VALID":
        return [0] * (2 * n)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise view.fail(f"unknown auto_pad {auto_pad!r}")
    spatial = view.shape(0)[2:]
    if not all(isinstance(d, int) for d in spatial):
        raise view.fail(f"auto_pad {auto_pad} needs static spatial dims")
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        out = math.ceil(size / s)  # type: ignore[operator]
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)  # type: ignore[operator]
        head = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        begin.append(head)
        end.append(total - head)
    return begin + end


def _window_attrs(view: _NodeView, kernel: list[int]) -> dict[str, Any]:
    n = len(kernel)
    strides = [int(s) for s in view.attrs.get("strides", [1] * n)]
    dilations = [int(d) for d in view.attrs.get("dilations", [1] * n)]
    if len(strides) != n or len(dilations) != n:
        raise view.fail(f"strides/dilations do not match kernel_shape {kernel}")
    return {
        "kernel_shape": kernel,
        "strides": strides,
        "pads": _auto_pads(view, kernel, strides, dilations),
        "dilations": dilations,
    }


def _conv(view: _NodeView) -> Normalized:
    w_shape = view.shape(1)
    kernel = [int(k) for k in view.attrs.get("kernel_shape", w_shape[2:])]
    attrs = _window_attrs(view, kernel)
    attrs["group"] = int(view.attrs.get("group", 1))
    return "Conv", _data(view, 3), attrs


def _pool_kernel(view: _NodeView) -> list[int]:
    if "kernel_shape" not in view.attrs:
        raise view.fail("kernel_shape is missing")
    return [int(k) for k in view.attrs["kernel_shape"]]


def _max_pool(view: _NodeView) -> Normalized:
    attrs = _window_attrs(view, _pool_kernel(view))
    attrs["ceil_mode"] = int(view.attrs.get("ceil_mode", 0))
    return "MaxPool", _data(view, 1), attrs


def _average_pool(view: _NodeView) -> Normalized:
    attrs = _window_attrs(view, _pool_kernel(view))
    if any(d != 1 for d in attrs.pop("dilations")):
        raise view.fail("AveragePool with dilations is not supported")
    attrs["ceil_mode"] = int(view.attrs.get("ceil_mode", 0))
    attrs["count_include_pad"] = int(view.attrs.get("count_include_pad", 0))
    return "AveragePool", _data(view, 1), attrs


def _batch_norm(view: _NodeView) -> Normalized:
    if view.attrs.get("training_mode", 0):
        raise view.fail("training mode is not supported; export the model in eval mode")
    return "BatchNormalization", _data(view, 5), {"epsilon": float(view.attrs.get("epsilon", 1e-5))}


def _leaky_relu(view: _NodeView) -> Normalized:
    return "LeakyRelu", _data(view, 1), {"alpha": float(view.attrs.get("alpha", 0.01))}


def _clip(view: _NodeView) -> Normalized:
    if view.ctx.opset < 11:
        low, high = view.attrs.get("min"), view.attrs.get("max")
    else:
        low_v, high_v = view.constant(1, "min"), view.constant(2, "max")
        if any(v is not None and v.size != 1 for v in (low_v, high_v)):
            raise view.fail("min and max must be scalars")
        low = None if low_v is None else low_v.item()
        high = None if high_v is None else high_v.item()
    return (
        "Clip",
        _data(view, 1),
        {
            "min": None if low is None else float(low),
            "max": None if high is None else float(high),
        },
    )


def _softmax(view: _NodeView) -> Normalized:
    coerce_2d = view.ctx.opset < 13
    axis = int(view.attrs.get("axis", 1 if coerce_2d else -1))
    [axis] = view.normalize_axes([axis], view.rank())
    return view.op, _data(view, 1), {"axis": axis, "coerce_2d": coerce_2d}


def _reduce_mean(view: _NodeView) -> Normalized:
    axes = view.axes(1 if view.ctx.opset >= 18 else None) or []
    keepdims = int(view.attrs.get("keepdims", 1))
    if not axes and view.attrs.get("noop_with_empty_axes", 0):
        return "Identity", _data(view, 1), {}
    rank = view.rank()
    axes = view.normalize_axes(axes, rank) if axes else list(range(rank))
    return "ReduceMean", _data(view, 1), {"axes": axes, "keepdims": keepdims}


def _flatten(view: _NodeView) -> Normalized:
    rank = view.rank()
    axis = int(view.attrs.get("axis", 1))
    if not -rank <= axis <= rank:
        raise view.fail(f"axis {axis} is out of range for rank {rank}")
    return "Flatten", _data(view, 1), {"axis": axis + rank if axis < 0 else axis}


def _reshape(view: _NodeView) -> Normalized:
    allowzero = int(view.attrs.get("allowzero", 0))
    tensor = view.input(1)
    value = view.ctx.values.get(tensor)
    if value is None:
        raise view.fail(
            f"its shape input {tensor!r} is computed from data at run time; anacc needs a "
            "shape known before run time"
        )
    in_shape = view.shape(0)
    if isinstance(value, SymValue):
        shape = _encode_symbolic_shape(view, in_shape, list(value.items), allowzero)
    else:
        shape = [int(d) for d in value.reshape(-1)]
        shape, allowzero = _batch_baked_in(view, in_shape, shape, allowzero)
    return "Reshape", _data(view, 1), {"shape": shape, "allowzero": allowzero}


def _encode_symbolic_shape(
    view: _NodeView, in_shape: Shape, target: list[Dim], allowzero: int
) -> list[int]:
    try:
        out = reshape_target(in_shape, target, allowzero)
    except ShapeError as exc:
        raise view.fail(str(exc)) from None
    encoded = []
    for i, d in enumerate(out):
        if isinstance(d, int):
            encoded.append(d)
        elif i < len(in_shape) and in_shape[i] == d and not allowzero:
            encoded.append(0)
        else:
            encoded.append(-1)
    if encoded.count(-1) > 1:
        raise view.fail(
            f"the shape {format_shape(out)} has several batch-dependent dims that are not "
            "copied from the input"
        )
    return encoded


def _batch_baked_in(
    view: _NodeView, in_shape: Shape, shape: list[int], allowzero: int
) -> tuple[list[int], int]:
    """``shape`` with a baked-in fixed batch size in front replaced by ``0`` (copy)."""
    batch = view.ctx.fixed_batch
    leads_with_batch = (
        bool(in_shape) and isinstance(in_shape[0], str) and symdim.per_sample(in_shape[0]) == 1
    )
    if batch is None or not shape or shape[0] != batch or not leads_with_batch:
        return shape, allowzero
    if allowzero and 0 in shape[1:]:
        return shape, allowzero
    # Without zeros in the shape, allowzero changes nothing, so the copy semantics may be used.
    return [0, *shape[1:]], 0


def _transpose(view: _NodeView) -> Normalized:
    rank = view.rank()
    perm = [int(p) for p in view.attrs.get("perm", range(rank - 1, -1, -1))]
    return "Transpose", _data(view, 1), {"perm": perm}


def _squeeze(view: _NodeView) -> Normalized:
    shape = view.shape(0)
    axes = view.axes(1 if view.ctx.opset >= 13 else None)
    if axes is None:
        # The batch is never squeezed: it is a batch of any size, not a dimension of 1.
        axes = [i for i, d in enumerate(shape) if d == 1]
    return "Squeeze", _data(view, 1), {"axes": view.normalize_axes(axes, len(shape))}


def _unsqueeze(view: _NodeView) -> Normalized:
    axes = view.axes(1 if view.ctx.opset >= 13 else None)
    if axes is None:
        raise view.fail("axes are missing")
    rank = view.rank() + len(axes)
    return "Unsqueeze", _data(view, 1), {"axes": view.normalize_axes(axes, rank)}


def _concat(view: _NodeView) -> Normalized:
    if "axis" not in view.attrs:
        raise view.fail("axis is missing")
    [axis] = view.normalize_axes([int(view.attrs["axis"])], view.rank())
    return "Concat", list(view.proto.input), {"axis": axis}


def _lrn(view: _NodeView) -> Normalized:
    if "size" not in view.attrs:
        raise view.fail("size is missing")
    attrs = {
        "size": int(view.attrs["size"]),
        "alpha": float(view.attrs.get("alpha", 1e-4)),
        "beta": float(view.attrs.get("beta", 0.75)),
        "bias": float(view.attrs.get("bias", 1.0)),
    }
    return "LRN", _data(view, 1), attrs


def _pad(view: _NodeView) -> Normalized:
    rank = view.rank()
    mode = view.attrs.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise view.fail(f"mode {mode!r} is not supported (constant, reflect, edge are)")
    if view.ctx.opset < 11:
        pads = [int(p) for p in view.attrs.get("pads", [])]
        value = float(view.attrs.get("value", 0.0))
    else:
        pads_v = view.constant(1, "pads")
        if pads_v is None:
            raise view.fail("pads are missing")
        pads = [int(p) for p in pads_v.reshape(-1)]
        value_v = view.constant(2, "constant_value")
        if value_v is not None and value_v.size != 1:
            raise view.fail("constant_value must be a scalar")
        value = 0.0 if value_v is None else float(value_v.reshape(-1)[0])
        axes = view.axes(3) if view.ctx.opset >= 18 else None
        if axes is not None:
            pads = _pads_for_axes(view, pads, view.non_negative(axes, rank), rank)
    if len(pads) != 2 * rank:
        raise view.fail(f"pads {pads} do not match rank {rank}")
    return "Pad", _data(view, 1), {"pads": pads, "mode": mode, "value": value}


def _pads_for_axes(view: _NodeView, pads: list[int], axes: list[int], rank: int) -> list[int]:
    if len(pads) != 2 * len(axes):
        raise view.fail(f"pads {pads} do not match axes {axes}")
    full = [0] * (2 * rank)
    for i, a in enumerate(axes):
        full[a] = pads[i]
        full[a + rank] = pads[i + len(axes)]
    return full


_NORMALIZERS: dict[str, Callable[[_NodeView], Normalized]] = {
    **{
        op: _plain
        for op in (
            "MatMul",
            "Add",
            "Sub",
            "Mul",
            "Div",
            "Sum",
            "Relu",
            "Sigmoid",
            "Tanh",
            "Identity",
            "GlobalAveragePool",
        )
    },
    "Dropout": _dropout,
    "Gemm": _gemm,
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "LeakyRelu": _leaky_relu,
    "Clip": _clip,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "ReduceMean": _reduce_mean,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": _concat,
    "LRN": _lrn,
    "Pad": _pad,
}
