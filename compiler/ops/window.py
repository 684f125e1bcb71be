"""Sliding-window ops in torch with exact ONNX semantics: Conv, pools (max, average, Lp)
and LRN.

Every function takes explicit pads (auto_pad resolved) and the other attributes, works on
``(N, C, *spatial)`` float tensors of any batch size with 1-D or 2-D (also 3-D) spatial shape,
and is differentiable. ``pads`` lists the begins of all spatial axes, then their ends.

Pools reproduce onnxruntime's output size and divisors:
- ceil_mode rounds the output size up, but drops a last window that would start in the end
  padding (it must start inside the input or the begin padding);
- the elements a ceil-mode window reaches past the end padding are never counted in an
  AveragePool divisor, even with ``count_include_pad=1``; the pads themselves count only with
  ``count_include_pad=1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def torch_pad_list(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """The ``F.pad`` argument for per-axis ``begins``/``ends`` of the trailing axes.

    ``F.pad`` lists the last axis first, as (begin, end) pairs.
    """
    assert len(begins) == len(ends)
    pairs: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends), strict=True):
        pairs += [int(begin), int(end)]
    return pairs


def _spatial_rank(x: torch.Tensor, pads: Sequence[int]) -> int:
    rank = x.dim() - 2
    assert rank >= 1, f"window op needs an (N, C, *spatial) input, got shape {tuple(x.shape)}"
    assert len(pads) == 2 * rank, f"pads {list(pads)} do not match {rank} spatial axes"
    return rank


def conv(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
) -> torch.Tensor:
    """ONNX Conv; asymmetric pads are applied explicitly, since torch pads symmetrically."""
    rank = _spatial_rank(x, pads)
    begins, ends = list(pads[:rank]), list(pads[rank:])
    if begins == ends:
        padding = begins
    else:
        x = F.pad(x, torch_pad_list(begins, ends))
        padding = [0] * rank
    conv_nd = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
    return conv_nd(x, w, b, list(strides), padding, list(dilations), int(group))


def _pool_extra_ends(
    in_sizes: Sequence[int],
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: bool,
) -> list[int]:
    """Per spatial axis, how far the last ceil-mode window reaches past the end padding.

    Padding the input by ``pads`` plus these extras and pooling without padding in floor mode
    yields ONNX's (onnxruntime's) output size.
    """
    rank = len(in_sizes)
    extras = []
    for i, size in enumerate(in_sizes):
        begin, end = pads[i], pads[rank + i]
        span = dilations[i] * (kernel_shape[i] - 1) + 1
        reach = size + begin + end - span
        assert reach >= 0, f"pool window {span} exceeds padded input {size + begin + end}"
        if not ceil_mode:
            extras.append(0)
            continue
        out_size = -(-reach // strides[i]) + 1
        if (out_size - 1) * strides[i] >= size + begin:
            out_size -= 1
        extras.append(max((out_size - 1) * strides[i] + span - (size + begin + end), 0))
    return extras


def _max_pool_padded(
    x: torch.Tensor,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: bool,
) -> torch.Tensor:
    """``x`` padded for a floor-mode pool without padding: pads and ceil-mode extras hold
    the dtype's lowest value, so they never win a window."""
    rank = _spatial_rank(x, pads)
    extras = _pool_extra_ends(x.shape[2:], kernel_shape, strides, pads, dilations, ceil_mode)
    ends = [e + extra for e, extra in zip(pads[rank:], extras, strict=True)]
    low = float("-inf") if x.is_floating_point() else torch.iinfo(x.dtype).min
    return F.pad(x, torch_pad_list(pads[:rank], ends), value=low)


def max_pool(
    x: torch.Tensor,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: bool,
) -> torch.Tensor:
    """ONNX MaxPool (values only)."""
    padded = _max_pool_padded(x, kernel_shape, strides, pads, dilations, ceil_mode)
    pool_nd = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[x.dim() - 3]
    return pool_nd(padded, list(kernel_shape), list(strides), 0, list(dilations))


def max_pool_indices(
    x: torch.Tensor,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: bool,
    storage_order: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ONNX MaxPool with its Indices output: where each maximum lies in the input flattened
    whole, the spatial axes of each (n, c) plane row-major (``storage_order`` 0) or
    column-major (1)."""
    rank = x.dim() - 2
    padded = _max_pool_padded(x, kernel_shape, strides, pads, dilations, ceil_mode)
    pool_nd = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[rank - 1]
    # torch gives indices for float pools only; float64 holds every int32 value exactly
    values, where = pool_nd(
        padded.to(torch.float64) if not x.is_floating_point() else padded,
        list(kernel_shape),
        list(strides),
        0,
        list(dilations),
        return_indices=True,
    )
    coords = []
    for d in reversed(padded.shape[2:]):  # ``where`` is row-major in the padded plane
        coords.append(where.remainder(int(d)))
        where = where.div(int(d), rounding_mode="floor")
    coords = [c - int(p) for c, p in zip(reversed(coords), pads[:rank], strict=True)]
    sizes = [int(d) for d in x.shape[2:]]
    flat = torch.zeros_like(coords[0])
    for i in range(rank) if storage_order == 0 else reversed(range(rank)):
        flat = flat * sizes[i] + coords[i]
    planes = torch.arange(x.shape[0] * x.shape[1]).reshape(x.shape[0], x.shape[1], *[1] * rank)
    return values.to(x.dtype), flat + planes * math.prod(sizes)


def window_sum(
    x: torch.Tensor, kernel_shape: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> torch.Tensor:
    """The sum over every (dilated) window of an unpadded ``(N, C, *spatial)`` tensor."""
    n, c, *spatial = x.shape
    ones = x.new_ones([1, 1, *kernel_shape])
    conv_nd = (F.conv1d, F.conv2d, F.conv3d)[len(spatial) - 1]
    sums = conv_nd(x.reshape(n * c, 1, *spatial), ones, None, list(strides), 0, list(dilations))
    return sums.reshape(n, c, *sums.shape[2:])


def average_pool(
    x: torch.Tensor,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    ceil_mode: bool,
    count_include_pad: bool,
    dilations: Sequence[int] | None = None,
) -> torch.Tensor:
    """ONNX AveragePool: window sum over the number of counted positions (module docstring)."""
    rank = _spatial_rank(x, pads)
    dilations = list(dilations or [1] * rank)
    in_sizes = list(x.shape[2:])
    extras = _pool_extra_ends(in_sizes, kernel_shape, strides, pads, dilations, ceil_mode)
    begins, ends = list(pads[:rank]), list(pads[rank:])
    full_ends = [e + extra for e, extra in zip(ends, extras, strict=True)]
    counted = x.new_ones([1, 1, *in_sizes])
    if count_include_pad:
        counted = F.pad(counted, torch_pad_list(begins, ends), value=1.0)
        counted = F.pad(counted, torch_pad_list([0] * rank, extras))
    else:
        counted = F.pad(counted, torch_pad_list(begins, full_ends))

    def window_total(t: torch.Tensor) -> torch.Tensor:  # a sum or a mean: only ratios count
        if any(d != 1 for d in dilations):
            return window_sum(t, kernel_shape, strides, dilations)
        pool_nd = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1]
        return pool_nd(t, list(kernel_shape), list(strides), 0)

    return window_total(F.pad(x, torch_pad_list(begins, full_ends))) / window_total(counted)


def lp_pool(
    x: torch.Tensor,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: bool,
    p: int,
) -> torch.Tensor:
    """ONNX LpPool: the p-norm of every window, padding counting as zeros."""
    rank = _spatial_rank(x, pads)
    extras = _pool_extra_ends(x.shape[2:], kernel_shape, strides, pads, dilations, ceil_mode)
    ends = [e + extra for e, extra in zip(pads[rank:], extras, strict=True)]
    padded = F.pad(x.abs() ** p, torch_pad_list(pads[:rank], ends))
    return window_sum(padded, kernel_shape, strides, dilations) ** (1.0 / p)


def global_average_pool(x: torch.Tensor) -> torch.Tensor:
    """ONNX GlobalAveragePool: mean over all spatial axes, kept as size-1 axes."""
    assert x.dim() >= 3, f"GlobalAveragePool needs (N, C, *spatial), got {tuple(x.shape)}"
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


def lrn(x: torch.Tensor, size: int, alpha: float, beta: float, bias: float) -> torch.Tensor:
    """ONNX LRN: ``x / (bias + alpha / size * sum of x^2 over a channel window) ** beta``.

    The window around channel c spans floor((size-1)/2) channels before and ceil((size-1)/2)
    after, clipped to the existing channels.
    """
    assert x.dim() >= 2, f"LRN needs (N, C, ...), got {tuple(x.shape)}"
    before = (size - 1) // 2
    after = size - 1 - before
    rest = x.dim() - 2
    squares = F.pad(x.square(), [0, 0] * rest + [before, after])
    square_sum = squares.unfold(1, size, 1).sum(dim=-1)
    return x / (bias + alpha / size * square_sum) ** beta
