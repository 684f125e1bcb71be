"""Output shapes of normalized IR nodes, with a symbolic batch dimension.

:func:`infer_output_shapes` takes a node in the form of docs/ir.md (attributes normalized,
configuration inputs already moved into attributes) and the shapes of its inputs, and returns
the shape of each output. Dimensions follow :mod:`anacc.compiler.symdim`: ints, or multiples
of one symbol. A shape that does not hold for every value of the symbol, or dims that do not
fit the op, raise :class:`~anacc.errors.ModelError` naming the node and the op.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from anacc.compiler import symdim
from anacc.compiler.ir import Dim, Node, Shape

from anacc.errors import ModelError

ShapeFn = Callable[[Node, Sequence[Shape]], Shape]


class ShapeError(Exception):
    """Dimensions that do not fit an op; :func:`infer_output_shapes` adds the node's name."""


def infer_output_shapes(node: Node, input_shapes: Sequence[Shape]) -> list[Shape]:
    """Shapes of ``node.outputs`` given the shapes of ``node.inputs`` (``()`` for ``""``)."""
    fn = _SHAPE_FNS.get(node.op)
    assert fn is not None, f"no shape function for {node.op}"
    try:
        shape = tuple(fn(node, input_shapes))
        if 0 in shape:
            raise ShapeError(f"the output {format_shape(shape)} is empty")
        return [shape]
    except ShapeError as exc:
        shapes = ", ".join(format_shape(s) for s in input_shapes if s is not None)
        raise ModelError(
            f"node {node.name} ({node.op}): {exc} (input shapes {shapes}); anacc needs shapes "
            "that hold for any batch size"
        ) from None


def format_shape(shape: Shape) -> str:
    """``N x 1 x 8 x 8``; a scalar is ``scalar``."""
    return " x ".join(str(d) for d in shape) if shape else "scalar"


def reshape_target(in_shape: Shape, target: Sequence[Dim], allowzero: int) -> Shape:
    """The output shape of ONNX Reshape for a (possibly symbolic) target shape."""
    out: list[Dim | None] = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(in_shape):
                raise ShapeError(f"shape entry {i} copies a dimension the input does not have")
            out.append(in_shape[i])
        elif d == -1:
            out.append(None)
        elif isinstance(d, int) and d < -1:
            raise ShapeError(f"invalid shape entry {d}")
        else:
            out.append(d)
    unknown = [i for i, d in enumerate(out) if d is None]
    total = symdim.product(in_shape)
    known = symdim.product(d for d in out if d is not None)
    if total is None or known is None:
        raise ShapeError("the element count is not a multiple of the batch")
    if len(unknown) > 1:
        raise ShapeError("more than one -1 in the shape")
    if unknown:
        rest = symdim.div_exact(total, known)
        if rest is None:
            raise ShapeError(f"cannot infer -1: {total} elements do not split by {known}")
        out[unknown[0]] = rest
    elif total != known:
        raise ShapeError(f"cannot reshape {total} elements into {format_shape(tuple(out))}")
    return tuple(d for d in out if d is not None)


def _broadcast(shapes: Sequence[Shape]) -> Shape:
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ShapeError(f"cannot broadcast dimensions {sorted(map(str, dims))}")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _same(node: Node, shapes: Sequence[Shape]) -> Shape:
    return shapes[0]


def _elementwise(node: Node, shapes: Sequence[Shape]) -> Shape:
    return _broadcast(shapes)


def _gemm(node: Node, shapes: Sequence[Shape]) -> Shape:
    a, b = shapes[0], shapes[1]
    if len(a) != 2 or len(b) != 2:
        raise ShapeError("Gemm needs 2-D A and B")
    m, k = (a[1], a[0]) if node.attrs["transA"] else a
    k2, n = (b[1], b[0]) if node.attrs["transB"] else b
    if k != k2:
        raise ShapeError(f"inner dimensions {k} and {k2} differ")
    if len(shapes) > 2 and shapes[2]:
        _broadcast([(m, n), shapes[2]])
    return (m, n)


def _matmul(node: Node, shapes: Sequence[Shape]) -> Shape:
    a, b = shapes
    if not a or not b:
        raise ShapeError("MatMul needs tensors of rank >= 1")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ShapeError(f"inner dimensions {a2[-1]} and {b2[-2]} differ")
    batch = _broadcast([a2[:-2], b2[:-2]]) if len(a2) > 2 or len(b2) > 2 else ()
    out = (*batch, a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _static_spatial(shape: Shape, what: str) -> list[int]:
    dims = list(shape[2:])
    if not all(isinstance(d, int) for d in dims):
        raise ShapeError(f"{what} needs static spatial dimensions")
    return dims  # type: ignore[return-value]


def _window_out(
    size: int, kernel: int, stride: int, pads: tuple[int, int], dilation: int, ceil_mode: int
) -> int:
    span = size + pads[0] + pads[1] - dilation * (kernel - 1) - 1
    if span < 0:
        raise ShapeError("the window is larger than the padded input")
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    # A last window that would start inside the end padding is dropped (ONNX, onnxruntime).
    return out - 1 if (out - 1) * stride >= size + pads[0] else out


def _windowed(node: Node, shapes: Sequence[Shape], channels: Dim) -> Shape:
    x = shapes[0]
    spatial = _static_spatial(x, node.op)
    kernel = node.attrs["kernel_shape"]
    if len(kernel) != len(spatial):
        raise ShapeError(f"kernel_shape {kernel} does not match {len(spatial)} spatial dims")
    n = len(spatial)
    pads = node.attrs["pads"]
    strides = node.attrs["strides"]
    dilations = node.attrs.get("dilations", [1] * n)
    ceil_mode = node.attrs.get("ceil_mode", 0)
    if len(pads) != 2 * n or len(strides) != n or len(dilations) != n:
        raise ShapeError(f"pads, strides or dilations do not match {n} spatial dims")
    if min((*kernel, *strides, *dilations), default=1) < 1 or min(pads, default=0) < 0:
        raise ShapeError("kernel, strides and dilations must be positive, pads non-negative")
    out = [
        _window_out(
            spatial[i], kernel[i], strides[i], (pads[i], pads[i + n]), dilations[i], ceil_mode
        )
        for i in range(n)
    ]
    return (x[0], channels, *out)


def _conv(node: Node, shapes: Sequence[Shape]) -> Shape:
    x, w = shapes[0], shapes[1]
    if len(x) < 3 or len(w) != len(x):
        raise ShapeError("Conv needs X and W of equal rank >= 3")
    if list(w[2:]) != list(node.attrs["kernel_shape"]):
        raise ShapeError(f"weight shape {format_shape(w)} does not match kernel_shape")
    group = node.attrs["group"]
    if x[1] != symdim.mul(w[1], group) or symdim.per_sample(w[0]) % group:
        raise ShapeError(
            f"{x[1]} input channels do not fit weight {format_shape(w)}, group {group}"
        )
    return _windowed(node, shapes, w[0])


def _pool(node: Node, shapes: Sequence[Shape]) -> Shape:
    if len(shapes[0]) < 3:
        raise ShapeError(f"{node.op} needs an input of rank >= 3")
    return _windowed(node, shapes, shapes[0][1])


def _global_pool(node: Node, shapes: Sequence[Shape]) -> Shape:
    x = shapes[0]
    if len(x) < 3:
        raise ShapeError("GlobalAveragePool needs an input of rank >= 3")
    return (x[0], x[1], *([1] * (len(x) - 2)))


def _check_axes(axes: Sequence[int], rank: int) -> None:
    if any(a < 0 or a >= rank for a in axes) or len(set(axes)) != len(axes):
        raise ShapeError(f"axes {list(axes)} are invalid for rank {rank}")


def _reduce_mean(node: Node, shapes: Sequence[Shape]) -> Shape:
    x = shapes[0]
    axes = node.attrs["axes"]
    _check_axes(axes, len(x))
    if node.attrs["keepdims"]:
        return tuple(1 if i in axes else d for i, d in enumerate(x))
    return tuple(d for i, d in enumerate(x) if i not in axes)


def _flatten(node: Node, shapes: Sequence[Shape]) -> Shape:
    x, axis = shapes[0], node.attrs["axis"]
    if not 0 <= axis <= len(x):
        raise ShapeError(f"axis {axis} is invalid for rank {len(x)}")
    head, tail = symdim.product(x[:axis]), symdim.product(x[axis:])
    if head is None or tail is None:
        raise ShapeError("the flattened size is not a multiple of the batch")
    return (head, tail)


def _reshape(node: Node, shapes: Sequence[Shape]) -> Shape:
    return reshape_target(shapes[0], node.attrs["shape"], node.attrs["allowzero"])


def _transpose(node: Node, shapes: Sequence[Shape]) -> Shape:
    x, perm = shapes[0], node.attrs["perm"]
    if sorted(perm) != list(range(len(x))):
        raise ShapeError(f"perm {perm} is not a permutation of rank {len(x)}")
    return tuple(x[p] for p in perm)


def _squeeze(node: Node, shapes: Sequence[Shape]) -> Shape:
    x, axes = shapes[0], node.attrs["axes"]
    _check_axes(axes, len(x))
    if any(x[a] != 1 for a in axes):
        raise ShapeError(f"axes {axes} are not all of size 1")
    return tuple(d for i, d in enumerate(x) if i not in axes)


def _unsqueeze(node: Node, shapes: Sequence[Shape]) -> Shape:
    x, axes = shapes[0], node.attrs["axes"]
    rank = len(x) + len(axes)
    _check_axes(axes, rank)
    rest = iter(x)
    return tuple(1 if i in axes else next(rest) for i in range(rank))


def _concat(node: Node, shapes: Sequence[Shape]) -> Shape:
    axis, first = node.attrs["axis"], shapes[0]
    _check_axes([axis], len(first))
    total: Dim | None = 0
    for s in shapes:
        if len(s) != len(first) or any(s[i] != first[i] for i in range(len(first)) if i != axis):
            raise ShapeError("inputs differ outside the concatenation axis")
        total = None if total is None else symdim.add(total, s[axis])
    if total is None:
        raise ShapeError("the concatenated size is not a multiple of the batch")
    return (*first[:axis], total, *first[axis + 1 :])


def _pad(node: Node, shapes: Sequence[Shape]) -> Shape:
    x, pads = shapes[0], node.attrs["pads"]
    if len(pads) != 2 * len(x):
        raise ShapeError(f"pads {pads} do not match rank {len(x)}")
    out = []
    for i, d in enumerate(x):
        extra = pads[i] + pads[i + len(x)]
        new = d if extra == 0 else symdim.add(d, extra)
        if new is None or (isinstance(new, int) and new < 0):
            raise ShapeError(f"cannot pad dimension {d} by {extra}")
        out.append(new)
    return tuple(out)


_SHAPE_FNS: dict[str, ShapeFn] = {
    **{op: _elementwise for op in ("Add", "Sub", "Mul", "Div", "Sum")},
    **{
        op: _same
        for op in (
            "BatchNormalization",
            "Relu",
            "Sigmoid",
            "Tanh",
            "Identity",
            "Dropout",
            "LeakyRelu",
            "Clip",
            "Softmax",
            "LogSoftmax",
            "LRN",
        )
    },
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Conv": _conv,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _global_pool,
    "ReduceMean": _reduce_mean,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": _concat,
    "Pad": _pad,
}
