"""Reductions over axes (ReduceSum, ReduceMean, ... ArgMax) with ONNX's axes and keepdims rules.

Axes are an attribute before opset 13 (ReduceSum) or 18 (the others) and an optional input
after; no axes means all of them, unless ``noop_with_empty_axes`` asks for the identity.
Reducing an empty set gives the reduction's identity element, as ONNX defines it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from anacc.compiler.ops._common import attr_or_input, axes
from anacc.compiler.ops.base import Inputs, OpCall, OpDef, always_nonneg, inputs_nonneg

Reducer = Callable[[torch.Tensor, tuple[int, ...], bool], torch.Tensor]


def _reduce(fn: Reducer, empty: float, axes_input_since: int = 18):
    def run(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
        x = inputs[0]
        keepdims = bool(call.attr("keepdims", 1))
        picked = attr_or_input(call, "axes", inputs, 1, axes_input_since)
        if not picked:
            if call.attr("noop_with_empty_axes", 0):
                return [x]
            picked = list(range(x.dim()))
        dims = tuple(sorted(set(axes(picked, x.dim()))))
        if x.dim() == 0:
            return [fn(x.reshape(1), (0,), False).reshape(())]
        if math.prod(x.shape[d] for d in dims) == 0:
            shape = [1 if d in dims else s for d, s in enumerate(x.shape)]
            out = x.new_full(shape, empty)
            return [out if keepdims else out.squeeze(dims)]
        return [fn(x, dims, keepdims)]

    return run


def _mean(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    return x.mean(dim=dims, keepdim=keep) if x.is_floating_point() else _sum(x, dims, keep)


def _sum(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    return x.sum(dim=dims, keepdim=keep, dtype=x.dtype)


def _prod(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        x = x.prod(dim=d, keepdim=keep, dtype=x.dtype)
    return x


def _log_sum_exp(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    return torch.logsumexp(x, dim=dims, keepdim=keep)


def _arg(fn: Callable[..., torch.Tensor]):
    def run(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
        x = inputs[0]
        axis = int(call.attr("axis", 0)) % max(x.dim(), 1)
        keepdims = bool(call.attr("keepdims", 1))
        if call.attr("select_last_index", 0):
            flipped = fn(x.flip(axis), dim=axis, keepdim=keepdims)
            return [x.shape[axis] - 1 - flipped]
        return [fn(x, dim=axis, keepdim=keepdims)]

    return run


OPS: list[OpDef] = [
    OpDef("ReduceMean", torch=_reduce(_mean, math.nan), sign=inputs_nonneg(0)),
    OpDef("ReduceSum", torch=_reduce(_sum, 0.0, 13), sign=inputs_nonneg(0)),
    OpDef(
        "ReduceMax",
        torch=_reduce(lambda x, d, k: x.amax(dim=d, keepdim=k), -math.inf),
        sign=inputs_nonneg(0),
    ),
    OpDef(
        "ReduceMin",
        torch=_reduce(lambda x, d, k: x.amin(dim=d, keepdim=k), math.inf),
        sign=inputs_nonneg(0),
    ),
    OpDef("ReduceProd", torch=_reduce(_prod, 1.0), sign=inputs_nonneg(0)),
    OpDef(
        "ReduceL1",
        torch=_reduce(lambda x, d, k: _sum(x.abs(), d, k), 0.0),
        sign=always_nonneg,
    ),
    OpDef(
        "ReduceL2",
        torch=_reduce(lambda x, d, k: torch.sqrt(_sum(x * x, d, k)), 0.0),
        sign=always_nonneg,
    ),
    OpDef(
        "ReduceSumSquare",
        torch=_reduce(lambda x, d, k: _sum(x * x, d, k), 0.0),
        sign=always_nonneg,
    ),
    OpDef("ReduceLogSum", torch=_reduce(lambda x, d, k: torch.log(_sum(x, d, k)), -math.inf)),
    OpDef("ReduceLogSumExp", torch=_reduce(_log_sum_exp, -math.inf)),
    OpDef("ArgMax", torch=_arg(torch.argmax), sign=always_nonneg, shape_op=True),
    OpDef("ArgMin", torch=_arg(torch.argmin), sign=always_nonneg, shape_op=True),
]
