"""The input side of an analog step in compiled loops: encoding, checks and layout, one pass.

Before a backend call the layer's float input becomes the chip's unsigned integers
(:func:`~anacc.compiler.quant.encode`), is checked (NaN, the entries outside the encoded
range) and, for a convolution, copied channels-last with its padding for the im2col
(:meth:`~anacc.compiler.conv.ConvGeometry.patches`). As torch operations that is one pass
each for the extremes, the clip count, every step of the encoding (about five for
``split``), the padding and a transposing copy, which for inputs of ``4 KiB`` per channel
(a 32 x 32 image) reads every channel in the same cache set. :func:`encode_rows` and
:func:`encode_channels_last` do all of it in one pass over the input (a row's checks and
codes while it is in cache); their results equal the torch form's bit for bit (the same
float32 operations: ``max(x, 0) / scale``, or ``(x - offset) / scale``, rounded half to
even, clamped).

``mode``: 0 ``none``, 1 ``shift``, 2 ``split`` (:data:`MODES`). ``terms`` float64:
``(scale, offset, input_max, low, high)``, ``low``/``high`` the range the encoding
represents (entries outside count as clipped). Both return ``(NaN entries, clipped)``,
``clipped`` weighted by ``copies`` for a convolution (how many patches read the entry).

The loops compile on first use (numba) and are cached on disk.
"""

from __future__ import annotations

import numpy as np
from numba import njit

MODES = {"none": 0, "shift": 1, "split": 2}
# positions of one input row transposed together (a cache line of float32)
_BLOCK = 16

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(inline="always", **_JIT)
def _encode_line(src, dst, mode, scale, offset, top):  # pragma: no cover - compiled
    """``dst[k]`` = the code of ``src[k]`` (the positive part for ``split``)."""
    if mode == 2:
        for k in range(src.size):
            dst[k] = min(np.rint(max(src[k], np.float32(0.0)) / scale), top)
    elif mode == 1:
        for k in range(src.size):
            dst[k] = min(max(np.rint((src[k] - offset) / scale), np.float32(0.0)), top)
    else:
        for k in range(src.size):
            dst[k] = min(max(np.rint(src[k] / scale), np.float32(0.0)), top)


@njit(inline="always", **_JIT)
def _negative_line(src, dst, scale, top):  # pragma: no cover - compiled
    """``dst[k]`` = the negative part's code of ``src[k]`` (``split``): ``-min(v, 0) /
    scale``, rounded, at most ``top`` (the torch form's -0.0 included)."""
    for k in range(src.size):
        dst[k] = min(np.rint(-min(src[k], np.float32(0.0)) / scale), top)


@njit(**_JIT)
def encode_rows(x, mode, terms, out):  # pragma: no cover - compiled
    """``x`` ``(M, K)`` float32 -> ``out`` ``(M, K)``, for ``split`` ``(2M, K)`` (positive
    part, then negative part); see the module docstring."""
    rows, width = x.shape
    scale, offset, top = np.float32(terms[0]), np.float32(terms[1]), np.float32(terms[2])
    low, high = terms[3], terms[4]
    split = mode == 2
    if out.shape[0] != (2 * rows if split else rows) or out.shape[1] != width:
        raise ValueError("encode_rows: the output does not match the input")
    nans = 0
    clipped = 0
    for m in range(rows):
        src = x[m]
        for k in range(width):
            v = src[k]
            nans += v != v
            clipped += (v < low) | (v > high)
        _encode_line(src, out[m], mode, scale, offset, top)
        if split:
            _negative_line(src, out[rows + m], scale, top)
    return nans, clipped


@njit(**_JIT)
def encode_channels_last(x, mode, terms, pad_value, pads, copies, out):  # pragma: no cover
    """``x`` ``(N, C, H, W)`` float32 -> ``out`` ``(P * N, H + top + bottom, W + left +
    right, C)``: the encoded input channels-last (``split``: the positive parts of the ``N``
    samples, then the negative ones) inside a border of ``pad_value``; ``pads`` ``(top,
    left, bottom, right)``; ``copies`` ``(H, W)`` int64 weighs the clip count. Blocks of
    :data:`_BLOCK` positions of an input row are encoded together, then written to their
    places a channel apart."""
    n, channels, height, width = x.shape
    top_pad, left = pads[0], pads[1]
    parts = 2 if mode == 2 else 1
    if (
        out.shape[0] != parts * n
        or out.shape[1] != height + pads[0] + pads[2]
        or out.shape[2] != width + pads[1] + pads[3]
        or out.shape[3] != channels
        or copies.shape[0] != height
        or copies.shape[1] != width
    ):
        raise ValueError("encode_channels_last: the output does not match the input")
    scale, offset, top = np.float32(terms[0]), np.float32(terms[1]), np.float32(terms[2])
    low, high = terms[3], terms[4]
    pad = np.float32(pad_value)
    full_h = out.shape[1]
    for s in range(parts * n):  # the border
        for h in range(full_h):
            if h < top_pad or h >= top_pad + height:
                out[s, h, :, :] = pad
            else:
                out[s, h, :left, :] = pad
                out[s, h, left + width :, :] = pad
    nans = 0
    clipped = 0
    codes = np.empty(_BLOCK, np.float32)
    for s in range(n):
        for h in range(height):
            weights = copies[h]
            for c in range(channels):
                src = x[s, c, h]
                for w in range(width):
                    v = src[w]
                    nans += v != v
                    clipped += weights[w] * ((v < low) | (v > high))
            for part in range(parts):
                dst = out[part * n + s, top_pad + h]
                for w0 in range(0, width, _BLOCK):
                    w1 = min(w0 + _BLOCK, width)
                    for c in range(channels):
                        src = x[s, c, h, w0:w1]
                        if part == 0:
                            _encode_line(src, codes, mode, scale, offset, top)
                        else:
                            _negative_line(src, codes, scale, top)
                        for w in range(w1 - w0):
                            dst[left + w0 + w, c] = codes[w]
    return nans, clipped


@njit(**_JIT)
def gather_patches(padded, geometry, out):  # pragma: no cover - compiled
    """``padded`` ``(N, Hp, Wp, C)`` -> ``out`` ``(N * out_h * out_w, C * kh * kw)``: the
    channel-major patches, positions in row-major order; ``geometry`` int64 ``(kh, kw,
    stride_h, stride_w, dilation_h, dilation_w, out_h, out_w)``."""
    n, _, _, channels = padded.shape
    kh, kw, sh, sw, dh, dw, out_h, out_w = geometry
    taps = kh * kw
    if out.shape[0] != n * out_h * out_w or out.shape[1] != channels * taps:
        raise ValueError("gather_patches: the output does not match the input")
    row = 0
    for s in range(n):
        for i in range(out_h):
            for j in range(out_w):
                dst = out[row]
                for a in range(kh):
                    for b in range(kw):
                        src = padded[s, i * sh + a * dh, j * sw + b * dw]
                        tap = a * kw + b
                        for c in range(channels):
                            dst[c * taps + tap] = src[c]
                row += 1
