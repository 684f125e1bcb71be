"""Execute one IR node on the host in torch, with the ONNX semantics of docs/ir.md.

:func:`run_op` takes the op name, its normalized IR attributes (every attribute present,
configuration inputs moved into attributes, axes non-negative) and its input tensors (``None``
for an absent optional input) and returns the list of output tensors. Every op works on float32
tensors of any batch size, is vectorized and differentiable, so the same code serves inference
and fine-tuning. :data:`DIGITAL_OPS` names the ops it supports; sliding-window ops live in
:mod:`anacc.runtime.digital_window_ops`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from anacc.runtime import digital_window_ops as window

Attrs = Mapping[str, Any]
Inputs = Sequence[torch.Tensor | None]


def _optional(inputs: Inputs, index: int) -> torch.Tensor | None:
    return inputs[index] if len(inputs) > index else None


def _gemm(attrs: Attrs, inputs: Inputs) -> torch.Tensor:
    a, b, c = inputs[0], inputs[1], _optional(inputs, 2)
    assert a.dim() == 2 and b.dim() == 2, "Gemm takes 2-D A and B"
    a = a.t() if attrs["transA"] else a
    b = b.t() if attrs["transB"] else b
    y = attrs["alpha"] * (a @ b)
    return y if c is None else y + attrs["beta"] * c


def _sum(attrs: Attrs, inputs: Inputs) -> torch.Tensor:
    assert inputs, "Sum needs at least one input"
    return functools.reduce(torch.add, inputs)


def _conv(attrs: Attrs, inputs: Inputs) -> torch.Tensor:
    x, w, b = inputs[0], inputs[1], _optional(inputs, 2)
    assert list(w.shape[2:]) == list(attrs["kernel_shape"]), "Conv weight vs kernel_shape"
    return window.conv(x, w, b, attrs["strides"], attrs["pads"], attrs["dilations"], attrs["group"])


def _batch_norm(attrs: Attrs, inputs: Inputs) -> torch.Tensor:
    x, scale, bias, mean, var = inputs
    per_channel = (-1,) + (1,) * (x.dim() - 2)
    factor = (scale / torch.sqrt(var + attrs["epsilon"])).reshape(per_channel)
    return (x - mean.reshape(per_channel)) * factor + bias.reshape(per_channel)


def _clip(attrs: Attrs, inputs: Inputs) -> torch.Tensor:
    low, high = attrs["min"], attrs["max"]
    if low is None and high is None:
        return inputs[0]
    return torch.clamp(inputs[0], min=low, max=high)


def _as_2d(x: torch.Tensor, axis: int) -> torch.Tensor:
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _softmax_like(fn: Callable[..., torch.Tensor]) -> Callable[[Attrs, Inputs], torch.Tensor]:
    def run(attrs: Attrs, inputs: Inputs) -> torch.Tensor:
        x, axis = inputs[0], attrs["axis"]
        if not attrs["coerce_2d"]:
            return fn(x, dim=axis)
        return fn(_as_2d(x, axis), dim=1).reshape(x.shape)

    return run


def _reduce_mean(attrs: Attrs, inputs: Inputs) -> torch.Tensor:
    x = inputs[0]
    axes = tuple(attrs["axes"]) or tuple(range(x.dim()))
    return x.mean(dim=axes, keepdim=bool(attrs["keepdims"]))


def _reshape(attrs: Attrs, inputs: Inputs) -> torch.Tensor:
    x = inputs[0]
    copy_zeros = not attrs["allowzero"]
    shape = [x.shape[i] if dim == 0 and copy_zeros else dim for i, dim in enumerate(attrs["shape"])]
    return x.reshape(shape)


def _squeeze(attrs: Attrs, inputs: Inputs) -> torch.Tensor:
    x, axes = inputs[0], tuple(attrs["axes"])
    assert all(x.shape[a] == 1 for a in axes), f"Squeeze axes {axes} of shape {tuple(x.shape)}"
    return x.squeeze(axes) if axes else x


def _unsqueeze(attrs: Attrs, inputs: Inputs) -> torch.Tensor:
    x = inputs[0]
    for axis in sorted(attrs["axes"]):
        x = x.unsqueeze(axis)
    return x


def _pad_indices(size: int, begin: int, end: int, mode: str) -> torch.Tensor:
    """Source index of every output position along one axis for reflect/edge padding."""
    positions = torch.arange(-begin, size + end)
    if mode == "edge":
        return positions.clamp(0, size - 1)
    assert size > 1, "reflect padding needs an axis of at least 2 elements"
    period = 2 * (size - 1)
    folded = positions.remainder(period)
    return torch.where(folded >= size, period - folded, folded)


def _pad(attrs: Attrs, inputs: Inputs) -> torch.Tensor:
    x, pads, mode = inputs[0], list(attrs["pads"]), attrs["mode"]
    rank = x.dim()
    assert len(pads) == 2 * rank, f"Pad pads {pads} do not match rank {rank}"
    if mode == "constant":
        return F.pad(x, window.torch_pad_list(pads[:rank], pads[rank:]), value=attrs["value"])
    assert mode in ("reflect", "edge"), f"Pad mode {mode!r}"
    for axis in range(rank):
        begin, end = pads[axis], pads[rank + axis]
        # Negative pads crop first; the remaining pads then reflect the cropped axis.
        crop_begin, crop_end = max(-begin, 0), max(-end, 0)
        x = x.narrow(axis, crop_begin, x.shape[axis] - crop_begin - crop_end)
        begin, end = max(begin, 0), max(end, 0)
        if begin or end:
            index = _pad_indices(x.shape[axis], begin, end, mode).to(x.device)
            x = x.index_select(axis, index)
    return x


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Attrs, Inputs], torch.Tensor]:
    return lambda attrs, inputs: fn(inputs[0])


def _binary(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[Attrs, Inputs], torch.Tensor]:
    return lambda attrs, inputs: fn(inputs[0], inputs[1])


_OPS: Mapping[str, Callable[[Attrs, Inputs], torch.Tensor]] = MappingProxyType(
    {
        "Gemm": _gemm,
        "MatMul": _binary(torch.matmul),
        "Add": _binary(torch.add),
        "Sub": _binary(torch.sub),
        "Mul": _binary(torch.mul),
        "Div": _binary(torch.div),
        "Sum": _sum,
        "Conv": _conv,
        "BatchNormalization": _batch_norm,
        "Relu": _unary(torch.relu),
        "Sigmoid": _unary(torch.sigmoid),
        "Tanh": _unary(torch.tanh),
        "Identity": _unary(lambda x: x),
        "Dropout": _unary(lambda x: x),
        "LeakyRelu": lambda attrs, inputs: F.leaky_relu(inputs[0], attrs["alpha"]),
        "Clip": _clip,
        "Softmax": _softmax_like(torch.softmax),
        "LogSoftmax": _softmax_like(torch.log_softmax),
        "MaxPool": lambda attrs, inputs: window.max_pool(
            inputs[0],
            attrs["kernel_shape"],
            attrs["strides"],
            attrs["pads"],
            attrs["dilations"],
            bool(attrs["ceil_mode"]),
        ),
        "AveragePool": lambda attrs, inputs: window.average_pool(
            inputs[0],
            attrs["kernel_shape"],
            attrs["strides"],
            attrs["pads"],
            bool(attrs["ceil_mode"]),
            bool(attrs["count_include_pad"]),
        ),
        "GlobalAveragePool": _unary(window.global_average_pool),
        "ReduceMean": _reduce_mean,
        "Flatten": lambda attrs, inputs: _as_2d(inputs[0], attrs["axis"]),
        "Reshape": _reshape,
        "Transpose": lambda attrs, inputs: inputs[0].permute(list(attrs["perm"])),
        "Squeeze": _squeeze,
        "Unsqueeze": _unsqueeze,
        "Concat": lambda attrs, inputs: torch.cat(list(inputs), dim=attrs["axis"]),
        "LRN": lambda attrs, inputs: window.lrn(
            inputs[0], attrs["size"], attrs["alpha"], attrs["beta"], attrs["bias"]
        ),
        "Pad": _pad,
    }
)

DIGITAL_OPS: frozenset[str] = frozenset(_OPS)


def run_op(op: str, attrs: Attrs, inputs: Inputs) -> list[torch.Tensor]:
    """Execute IR op ``op`` with normalized ``attrs`` on ``inputs``; returns its outputs.

    Raises ``NotImplementedError`` for an op outside :data:`DIGITAL_OPS`: the compiler only
    emits digital steps for supported ops, so reaching it is an internal failure.
    """
    fn = _OPS.get(op)
    if fn is None:
        raise NotImplementedError(f"no digital implementation of IR op {op!r}")
    return [fn(attrs, inputs)]
