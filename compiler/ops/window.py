"""Sliding-window ops in torch with exact ONNX semantics: Conv, pools and LRN.

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


def max_pool(
    x: torch.Tensor,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: bool,
) -> torch.Tensor:
    """ONNX MaxPool (values only); padding never wins a window since it is -inf."""
    rank = _spatial_rank(x, pads)
    extras = _pool_extra_ends(x.shape[2:], kernel_shape, strides, pads, dilations, ceil_mode)
    ends = [e + extra for e, extra in zip(pads[rank:], extras, strict=True)]
    x = F.pad(x, torch_pad_list(pads[:rank], ends), value=float("-inf"))
    pool_nd = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[rank - 1]
    return pool_nd(x, list(kernel_shape), list(strides), 0, list(dilations))


def average_pool(
    x: torch.Tensor,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    ceil_mode: bool,
    count_include_pad: bool,
) -> torch.Tensor:
    """ONNX AveragePool: window sum over the number of counted positions (module docstring)."""
    rank = _spatial_rank(x, pads)
    ones = [1] * rank
    in_sizes = list(x.shape[2:])
    extras = _pool_extra_ends(in_sizes, kernel_shape, strides, pads, ones, ceil_mode)
    begins, ends = list(pads[:rank]), list(pads[rank:])
    full_ends = [e + extra for e, extra in zip(ends, extras, strict=True)]
    pool_nd = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1]

    def window_mean(t: torch.Tensor) -> torch.Tensor:
        return pool_nd(t, list(kernel_shape), list(strides), 0)

    counted = x.new_ones([1, 1, *in_sizes])
    if count_include_pad:
        counted = F.pad(counted, torch_pad_list(begins, ends), value=1.0)
        counted = F.pad(counted, torch_pad_list([0] * rank, extras))
    else:
        counted = F.pad(counted, torch_pad_list(begins, full_ends))
    total = window_mean(F.pad(x, torch_pad_list(begins, full_ends)))
    return total / window_mean(counted)


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
