"""Shape, layout and indexing ops: Reshape, Transpose, Slice, Gather, Concat, Split, Pad, ...

Configuration that newer opsets pass as inputs (Reshape's shape, Slice's starts, Squeeze's
axes) is read from the input tensors at run time, so batch-dependent shapes computed in the
graph (Shape -> Gather -> Concat -> Reshape) work as they do in onnxruntime.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from anacc.compiler.ops._common import attr_or_input, axes, axis, ints, optional, torch_dtype
from anacc.compiler.ops.base import Inputs, OpCall, OpDef, always_nonneg, inputs_nonneg
from anacc.compiler.ops.window import torch_pad_list


def _reshape(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, shape = inputs[0], ints(inputs[1])
    if not call.attr("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [x.reshape(shape)]


def _flatten(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    at = axis(int(call.attr("axis", 1)), x.dim())
    return [x.reshape(math.prod(x.shape[:at]), math.prod(x.shape[at:]))]


def _transpose(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    perm = call.attr("perm")
    return [x.permute(*(perm if perm is not None else reversed(range(x.dim()))))]


def _squeeze(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    picked = attr_or_input(call, "axes", inputs, 1, 13)
    if picked is None:
        return [x.squeeze()]
    return [x.squeeze(tuple(axes(picked, x.dim()))) if picked else x]


def _unsqueeze(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    picked = attr_or_input(call, "axes", inputs, 1, 13) or []
    rank = x.dim() + len(picked)
    shape = list(x.shape)
    for a in sorted(axes(picked, rank)):
        shape.insert(a, 1)
    return [x.reshape(shape)]


def _concat(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    tensors = [t for t in inputs if t is not None]
    return [torch.cat(tensors, dim=axis(int(call.attr("axis")), tensors[0].dim()))]


def _split(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    at = axis(int(call.attr("axis", 0)), x.dim())
    sizes = attr_or_input(call, "split", inputs, 1, 13)
    count = len(call.node.outputs)
    if not sizes:
        size = x.shape[at]
        part = -(-size // count) if call.opset >= 18 else size // count
        sizes = [min(part, size - i * part) for i in range(count)]
    return list(torch.split(x, sizes, dim=at))


def _clamped_range(start: int, end: int, step: int, size: int) -> torch.Tensor:
    """The indices ONNX Slice takes along an axis of ``size`` (its clamping rules)."""
    start = start + size if start < 0 else start
    end = end + size if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), size), min(max(end, 0), size)
    else:
        start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
    return torch.arange(start, end, step)


def _slice(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    if call.opset < 10:
        starts, ends = call.attr("starts"), call.attr("ends")
        picked, steps = call.attr("axes"), None
    else:
        starts, ends = ints(inputs[1]), ints(inputs[2])
        picked, steps = ints(optional(inputs, 3)), ints(optional(inputs, 4))
    picked = axes(picked if picked is not None else range(len(starts)), x.dim())
    steps = steps or [1] * len(starts)
    for a, start, end, step in zip(picked, starts, ends, steps, strict=True):
        size = x.shape[a]
        if step == 1:
            index = _clamped_range(start, end, 1, size)
            first = int(index[0]) if index.numel() else 0
            x = x.narrow(a, first, index.numel())
        else:
            x = x.index_select(a, _clamped_range(start, end, step, size))
    return [x]


def _gather(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, index = inputs[0], inputs[1].to(torch.int64)
    at = axis(int(call.attr("axis", 0)), x.dim())
    index = torch.where(index < 0, index + x.shape[at], index)
    flat = x.index_select(at, index.reshape(-1))
    return [flat.reshape((*x.shape[:at], *index.shape, *x.shape[at + 1 :]))]


def _gather_elements(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, index = inputs[0], inputs[1].to(torch.int64)
    at = axis(int(call.attr("axis", 0)), x.dim())
    index = torch.where(index < 0, index + x.shape[at], index)
    return [torch.gather(x, at, index)]


def _gather_nd(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, index = inputs[0], inputs[1].to(torch.int64)
    batch = int(call.attr("batch_dims", 0))
    depth = index.shape[-1]
    lead = x.shape[:batch]
    xb = x.reshape(math.prod(lead), *x.shape[batch:])
    ib = index.reshape(math.prod(lead), -1, depth)
    dims = torch.tensor(x.shape[batch : batch + depth])
    ib = torch.where(ib < 0, ib + dims, ib)
    strides = torch.tensor(
        [math.prod(x.shape[batch + d + 1 : batch + depth]) for d in range(depth)]
    )
    flat_index = (ib * strides).sum(-1)  # (B, M)
    inner = xb.reshape(xb.shape[0], -1, *x.shape[batch + depth :])
    out = torch.stack([inner[b].index_select(0, flat_index[b]) for b in range(inner.shape[0])])
    return [out.reshape((*lead, *index.shape[batch:-1], *x.shape[batch + depth :]))]


def _expand(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    shape = torch.broadcast_shapes(tuple(x.shape), tuple(ints(inputs[1])))
    return [x.expand(shape)]


def _tile(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    return [inputs[0].repeat(*ints(inputs[1]))] if inputs[0].dim() else [inputs[0]]


def _pad_indices(size: int, begin: int, end: int, mode: str) -> torch.Tensor:
    """Source index of every output position along one axis for reflect/edge/wrap padding."""
    positions = torch.arange(-begin, size + end)
    if mode == "edge":
        return positions.clamp(0, size - 1)
    if mode == "wrap":
        return positions.remainder(size)
    assert size > 1, "reflect padding needs an axis of at least 2 elements"
    period = 2 * (size - 1)
    folded = positions.remainder(period)
    return torch.where(folded >= size, period - folded, folded)


def _pad(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, mode = inputs[0], call.attr("mode", "constant")
    rank = x.dim()
    if call.opset < 11:
        pads, value = list(call.attr("pads")), float(call.attr("value", 0.0))
    else:
        pads = ints(inputs[1])
        fill = optional(inputs, 2)
        value = 0 if fill is None or fill.numel() == 0 else fill.reshape(-1)[0].item()
        picked = ints(optional(inputs, 3)) if call.opset >= 18 else None
        if picked is not None:
            full = [0] * (2 * rank)
            for i, a in enumerate(axes(picked, rank)):
                full[a], full[a + rank] = pads[i], pads[i + len(picked)]
            pads = full
    if mode == "constant":
        return [F.pad(x, torch_pad_list(pads[:rank], pads[rank:]), value=value)]
    for a in range(rank):
        begin, end = pads[a], pads[rank + a]
        crop_begin, crop_end = max(-begin, 0), max(-end, 0)
        x = x.narrow(a, crop_begin, x.shape[a] - crop_begin - crop_end)
        begin, end = max(begin, 0), max(end, 0)
        if begin or end:
            x = x.index_select(a, _pad_indices(x.shape[a], begin, end, mode))
    return [x]


def _pad_nonneg(node, ctx) -> bool:
    if not ctx.nonneg(node.inputs[0]):
        return False
    if node.attrs.get("mode", "constant") != "constant":
        return True
    if len(node.inputs) > 2 and node.inputs[2]:
        value = ctx.constant(node.inputs[2])
        return value is not None and (value.size == 0 or float(value.reshape(-1)[0]) >= 0)
    return float(node.attrs.get("value", 0.0)) >= 0


def _shape(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    dims = list(inputs[0].shape)
    start, end = call.attr("start", 0), call.attr("end")
    return [torch.tensor(dims[slice(start, end)], dtype=torch.int64)]


def _constant_of_shape(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    value = call.attr("value")
    fill = torch.from_numpy(np.array(value)).reshape(-1) if value is not None else None
    dtype = fill.dtype if fill is not None else torch.float32
    out = torch.zeros(ints(inputs[0]), dtype=dtype)
    return [out.fill_(fill[0]) if fill is not None else out]


def _constant(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    for name in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if name in call.node.attrs:
            value = np.asarray(call.attr(name))
            if name in ("value_int", "value_ints"):
                value = value.astype(np.int64)
            elif name != "value":
                value = value.astype(np.float32)
            return [torch.from_numpy(value.copy())]
    raise AssertionError(f"Constant {call.node.name} holds no numeric value")


def _range(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    start, limit, delta = (t.reshape(()).item() for t in inputs[:3])
    count = max(math.ceil((limit - start) / delta), 0)
    return [(torch.arange(count, dtype=torch.float64) * delta + start).to(inputs[0].dtype)]


def _depth_to_space(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, b = inputs[0], int(call.attr("blocksize"))
    n, c, h, w = x.shape
    if call.attr("mode", "DCR") == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    return [y.reshape(n, c // (b * b), h * b, w * b)]


def _space_to_depth(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    """Blocks become channels, block offsets outermost (DCR) or innermost (CRD, opset 28)."""
    x, b = inputs[0], int(call.attr("blocksize"))
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b)
    if call.attr("mode", "DCR") == "DCR":
        y = y.permute(0, 3, 5, 1, 2, 4)
    else:
        y = y.permute(0, 1, 3, 5, 2, 4)
    return [y.reshape(n, c * b * b, h // b, w // b)]


def _trilu(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, k = inputs[0], optional(inputs, 1)
    shift = 0 if k is None else int(k.reshape(()).item())
    return [torch.triu(x, shift) if call.attr("upper", 1) else torch.tril(x, shift)]


def _cumsum(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    at = axis(int(inputs[1].reshape(()).item()), x.dim())
    if call.attr("reverse", 0):
        x = x.flip(at)
    out = torch.cumsum(x, dim=at, dtype=x.dtype)
    if call.attr("exclusive", 0):
        out = out - x
    return [out.flip(at) if call.attr("reverse", 0) else out]


def _one_hot(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    index, depth, values = inputs[0], int(inputs[1].reshape(-1)[0].item()), inputs[2]
    index = index.to(torch.int64)
    index = torch.where(index < 0, index + depth, index)
    hot = F.one_hot(index.clamp(0, depth - 1), depth).bool() & (index >= 0).unsqueeze(-1)
    hot &= (index < depth).unsqueeze(-1)
    out = torch.where(hot, values[1], values[0])
    at = axis(int(call.attr("axis", -1)), out.dim())
    return [out.movedim(-1, at)]


def _top_k(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, k = inputs[0], int(inputs[1].reshape(-1)[0].item())
    at = axis(int(call.attr("axis", -1)), x.dim())
    largest = bool(call.attr("largest", 1))
    # a stable sort: of equal values the one with the lower index comes first, as ONNX asks
    values, index = torch.sort(x, dim=at, descending=largest, stable=True)
    return [values.narrow(at, 0, k), index.narrow(at, 0, k)]


def _non_zero(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    return [torch.nonzero(x.reshape(1) if x.dim() == 0 else x).T.contiguous()]


def _scatter_elements(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, index, updates = inputs[0], inputs[1].to(torch.int64), inputs[2]
    at = axis(int(call.attr("axis", 0)), x.dim())
    index = torch.where(index < 0, index + x.shape[at], index)
    reduction = call.attr("reduction", "none")
    if reduction == "none":
        return [x.scatter(at, index, updates)]
    reduce = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}[reduction]
    return [x.scatter_reduce(at, index, updates, reduce=reduce)]


def _scatter_nd(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, index, updates = inputs[0], inputs[1].to(torch.int64), inputs[2]
    depth = index.shape[-1]
    strides = torch.tensor([math.prod(x.shape[d + 1 : depth]) for d in range(depth)])
    flat = (index.reshape(-1, depth) * strides).sum(-1)
    out = x.reshape(math.prod(x.shape[:depth]), *x.shape[depth:]).clone()
    rows = updates.reshape(flat.numel(), *x.shape[depth:])
    reduction = call.attr("reduction", "none")
    if reduction == "none":
        out[flat] = rows
    elif reduction == "add":
        out.index_add_(0, flat, rows)
    else:
        reduce = {"mul": "prod", "max": "amax", "min": "amin"}[reduction]
        where = flat.reshape(-1, *[1] * (rows.dim() - 1)).expand_as(rows)
        out = out.scatter_reduce(0, where, rows, reduce)
    return [out.reshape(x.shape)]


def _eye_like(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    dtype = torch_dtype(call.attr("dtype")) if call.attr("dtype") is not None else x.dtype
    eye = torch.zeros(x.shape, dtype=dtype)
    k = int(call.attr("k", 0))
    rows = torch.arange(max(0, -k), min(x.shape[0], x.shape[1] - k))
    eye[rows, rows + k] = 1
    return [eye]


def _size(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    return [torch.tensor(inputs[0].numel(), dtype=torch.int64)]


_LAYOUT = inputs_nonneg(0)

OPS: list[OpDef] = [
    OpDef("Reshape", torch=_reshape, sign=_LAYOUT),
    OpDef("Flatten", torch=_flatten, sign=_LAYOUT),
    OpDef("Transpose", torch=_transpose, sign=_LAYOUT),
    OpDef("Squeeze", torch=_squeeze, sign=_LAYOUT),
    OpDef("Unsqueeze", torch=_unsqueeze, sign=_LAYOUT),
    OpDef("Concat", torch=_concat, sign=inputs_nonneg()),
    OpDef("Split", torch=_split, sign=_LAYOUT),
    OpDef("Slice", torch=_slice, sign=_LAYOUT),
    OpDef("Gather", torch=_gather, sign=_LAYOUT),
    OpDef("GatherElements", torch=_gather_elements, sign=_LAYOUT),
    OpDef("GatherND", torch=_gather_nd, sign=_LAYOUT),
    OpDef("Expand", torch=_expand, sign=_LAYOUT),
    OpDef("Tile", torch=_tile, sign=_LAYOUT),
    OpDef("Pad", torch=_pad, sign=_pad_nonneg),
    OpDef("DepthToSpace", torch=_depth_to_space, sign=_LAYOUT),
    OpDef("SpaceToDepth", torch=_space_to_depth, sign=_LAYOUT),
    OpDef("Trilu", torch=_trilu, sign=_LAYOUT),
    OpDef("CumSum", torch=_cumsum, sign=_LAYOUT),
    OpDef("ScatterElements", torch=_scatter_elements, sign=inputs_nonneg(0, 2)),
    OpDef("ScatterND", torch=_scatter_nd, sign=inputs_nonneg(0, 2)),
    OpDef("OneHot", torch=_one_hot, sign=inputs_nonneg(2)),
    OpDef("TopK", torch=_top_k, sign=_LAYOUT),
    OpDef("Shape", torch=_shape, sign=always_nonneg, shape_op=True),
    OpDef("Size", torch=_size, sign=always_nonneg, shape_op=True),
    OpDef("NonZero", torch=_non_zero, sign=always_nonneg, shape_op=True),
    OpDef("ConstantOfShape", torch=_constant_of_shape, shape_op=True),
    OpDef("Constant", torch=_constant, shape_op=True),
    OpDef("Range", torch=_range, shape_op=True),
    OpDef("EyeLike", torch=_eye_like, sign=always_nonneg),
]
