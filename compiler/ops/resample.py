"""Resampling ops: Resize, Upsample and GridSample, with ONNX's coordinate and rounding rules.

Resize is separable: every resized axis is one matrix product with an (output x input)
interpolation matrix, built from the axis' sizes and the op's attributes. The matrix holds the
whole of ONNX's rules (where an output position samples the input, which neighbours it
weighs and how, edge clamping, ``exclude_outside``, antialiasing), so one code path serves
nearest, linear and cubic modes and the result is differentiable in the input.

- The source coordinate ``x`` of output index ``i`` follows ``coordinate_transformation_mode``
  (``half_pixel`` by default from opset 11; ``asymmetric`` for Resize-10 and Upsample).
- ``nearest`` picks one input index by ``nearest_mode``; Resize-10 and Upsample round the
  way onnxruntime does for them (down when enlarging, up when shrinking).
- ``linear`` and ``cubic`` weigh the neighbours of ``x`` by the triangle or the cubic
  convolution kernel (``cubic_coeff_a``); with ``antialias`` a shrinking axis widens the
  kernel by the inverse scale and normalizes the weights.
- Neighbours outside the input take the value at the edge, or with ``exclude_outside`` get
  no weight (the others renormalized); ``tf_crop_and_resize`` gives ``extrapolation_value``
  where ``x`` falls outside the input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from anacc.compiler.ir import Node
from anacc.compiler.ops._common import axes, optional
from anacc.compiler.ops.base import Inputs, OpCall, OpDef, SignContext


@dataclass(frozen=True)
class Sampling:
    """How Resize samples along every axis (its attributes, with the opset's defaults)."""

    mode: str = "nearest"
    coordinates: str = "half_pixel"
    nearest: str = "round_prefer_floor"
    cubic_a: float = -0.75
    exclude_outside: bool = False
    extrapolation: float = 0.0
    antialias: bool = False


def source_coordinates(
    out_size: int, in_size: int, scale: float, coordinates: str, roi: tuple[float, float]
) -> torch.Tensor:
    """Where each output index samples the input axis (float64, may lie outside it)."""
    i = torch.arange(out_size, dtype=torch.float64)
    length = scale * in_size  # the resized length before rounding to whole indices
    if coordinates == "asymmetric":
        return i / scale
    if coordinates == "align_corners":
        return i * 0.0 if length == 1 else i * (in_size - 1) / (length - 1)
    if coordinates == "pytorch_half_pixel":
        return i * 0.0 - 0.5 if length == 1 else (i + 0.5) / scale - 0.5
    if coordinates == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if coordinates == "half_pixel_symmetric":
        offset = in_size / 2 * (1 - out_size / length)
        return offset + (i + 0.5) / scale - 0.5
    assert coordinates == "tf_crop_and_resize", f"unknown coordinate mode {coordinates}"
    start, end = roi
    if length == 1:
        return i * 0.0 + (end - start) * (in_size - 1) / 2 + start * (in_size - 1)
    return i * (end - start) * (in_size - 1) / (length - 1) + start * (in_size - 1)


def _nearest_index(x: torch.Tensor, rule: str, shrinking: bool) -> torch.Tensor:
    if rule == "simple":  # Resize-10 and Upsample in onnxruntime
        rule = "ceil" if shrinking else "floor"
    if rule == "round_prefer_floor":
        return torch.ceil(x - 0.5)
    if rule == "round_prefer_ceil":
        return torch.floor(x + 0.5)
    return torch.floor(x) if rule == "floor" else torch.ceil(x)


def _cubic(d: torch.Tensor, a: float) -> torch.Tensor:
    d = d.abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def interpolation_matrix(
    in_size: int,
    out_size: int,
    scale: float,
    sampling: Sampling,
    roi: tuple[float, float] = (0.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (out_size, in_size) float64 matrix that resizes one axis, and the output positions
    that take ``extrapolation_value`` instead (tf_crop_and_resize), else None."""
    x = source_coordinates(out_size, in_size, scale, sampling.coordinates, roi)
    rows = torch.arange(out_size)
    if sampling.mode == "nearest":
        index = _nearest_index(x, sampling.nearest, scale < 1).long().clamp(0, in_size - 1)
        matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
        matrix[rows, index] = 1.0
    else:
        support = 1.0 if sampling.mode == "linear" else 2.0
        stretch = min(scale, 1.0) if sampling.antialias else 1.0
        reach = math.ceil(support / stretch)
        taps = torch.floor(x)[:, None] + torch.arange(1 - reach, reach + 1)[None, :]
        distance = (taps - x[:, None]) * stretch
        if sampling.mode == "linear":
            weights = (1 - distance.abs()).clamp(min=0)
        else:
            weights = _cubic(distance, sampling.cubic_a)
        inside = (taps >= 0) & (taps <= in_size - 1)
        if sampling.exclude_outside:
            weights = torch.where(inside, weights, torch.zeros_like(weights))
        if sampling.exclude_outside or sampling.antialias:
            total = weights.sum(1, keepdim=True)
            weights = weights / torch.where(total == 0, torch.ones_like(total), total)
        index = taps.long().clamp(0, in_size - 1)
        matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
        matrix.index_put_((rows[:, None].expand_as(index), index), weights, accumulate=True)
    outside = None
    if sampling.coordinates == "tf_crop_and_resize":
        outside = (x < 0) | (x > in_size - 1)
    return matrix, outside


def resize(
    x: torch.Tensor,
    out_sizes: Sequence[int],
    scales: Sequence[float],
    sampling: Sampling,
    rois: Sequence[tuple[float, float]] | None = None,
) -> torch.Tensor:
    """``x`` resized to ``out_sizes`` (all axes), sampling by ``scales`` (output/input)."""
    y = x if x.is_floating_point() else x.to(torch.float64)
    for at, (out_size, scale) in enumerate(zip(out_sizes, scales, strict=True)):
        in_size = x.shape[at]
        roi = rois[at] if rois is not None else (0.0, 1.0)
        if out_size == in_size and scale == 1 and roi == (0.0, 1.0):
            continue
        matrix, outside = interpolation_matrix(in_size, out_size, scale, sampling, roi)
        moved = y.movedim(at, -1)
        moved = moved @ matrix.to(y.dtype).T
        if outside is not None:
            moved = torch.where(outside, torch.full_like(moved, sampling.extrapolation), moved)
        y = moved.movedim(-1, at)
    if x.is_floating_point():
        return y
    info = torch.iinfo(x.dtype)
    return torch.round(y).clamp(info.min, info.max).to(x.dtype)


def _floats(t: torch.Tensor | None) -> list[float] | None:
    return None if t is None or t.numel() == 0 else [float(v) for v in t.reshape(-1).tolist()]


def _sizes(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None or t.numel() == 0 else [int(v) for v in t.reshape(-1).tolist()]


def _resize(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    rank = x.dim()
    if call.opset < 11:
        sampling = Sampling(call.attr("mode", "nearest"), "asymmetric", "simple")
        return [_by_scales(x, _floats(inputs[1]) or [1.0] * rank, sampling)]
    sampling = Sampling(
        mode=call.attr("mode", "nearest"),
        coordinates=call.attr("coordinate_transformation_mode", "half_pixel"),
        nearest=call.attr("nearest_mode", "round_prefer_floor"),
        cubic_a=float(call.attr("cubic_coeff_a", -0.75)),
        exclude_outside=bool(call.attr("exclude_outside", 0)),
        extrapolation=float(call.attr("extrapolation_value", 0.0)),
        antialias=bool(call.attr("antialias", 0)),
    )
    picked = axes(call.attr("axes", list(range(rank))), rank)
    roi_values = _floats(optional(inputs, 1))
    rois = None
    if roi_values is not None:
        rois = [(0.0, 1.0)] * rank
        for i, a in enumerate(picked):
            rois[a] = (roi_values[i], roi_values[len(picked) + i])
    scales_given, sizes_given = _floats(optional(inputs, 2)), _sizes(optional(inputs, 3))
    scales = [1.0] * rank
    out_sizes = list(x.shape)
    if sizes_given is not None:
        for i, a in enumerate(picked):
            out_sizes[a] = sizes_given[i]
            scales[a] = sizes_given[i] / x.shape[a]
        policy = call.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            common = pick(scales[a] for a in picked)
            for a in picked:
                scales[a] = common
                out_sizes[a] = int(common * x.shape[a] + 0.5)
    else:
        assert scales_given is not None, "Resize needs scales or sizes"
        for i, a in enumerate(picked):
            scales[a] = scales_given[i]
            out_sizes[a] = math.floor(scales_given[i] * x.shape[a])
    return [resize(x, out_sizes, scales, sampling, rois)]


def _by_scales(x: torch.Tensor, scales: Sequence[float], sampling: Sampling) -> torch.Tensor:
    out_sizes = [math.floor(s * n) for s, n in zip(scales, x.shape, strict=True)]
    return resize(x, out_sizes, scales, sampling)


def _upsample(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    scales = call.attr("scales") if call.opset < 9 else _floats(inputs[1])
    sampling = Sampling(call.attr("mode", "nearest"), "asymmetric", "simple")
    return [_by_scales(x, list(scales), sampling)]


_GRID_MODES = {"linear": "bilinear", "cubic": "bicubic", "bilinear": "bilinear"}


def _grid_sample(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, grid = inputs[0], inputs[1]
    mode = call.attr("mode", "bilinear" if call.opset < 20 else "linear")
    return [
        F.grid_sample(
            x,
            grid.to(x.dtype),
            mode=_GRID_MODES.get(mode, mode),
            padding_mode=call.attr("padding_mode", "zeros"),
            align_corners=bool(call.attr("align_corners", 0)),
        )
    ]


def _resize_nonneg(node: Node, ctx: SignContext) -> bool:
    """Nearest and linear sampling keep non-negative inputs non-negative; cubic overshoots."""
    return (
        node.attrs.get("mode", "nearest") != "cubic"
        and float(node.attrs.get("extrapolation_value", 0.0)) >= 0
        and ctx.nonneg(node.inputs[0])
    )


OPS: list[OpDef] = [
    OpDef("Resize", torch=_resize, sign=_resize_nonneg),
    OpDef("Upsample", torch=_upsample, sign=_resize_nonneg),
    OpDef("GridSample", torch=_grid_sample),
]
