"""The integer arithmetic shared by the compiler and the runtime.

Inputs are mapped to the chip's unsigned range according to the layer's signed-input
strategy; analog results are mapped back to float. Keeping both directions in one module
means the compiler's gain selection sees exactly the integers the chip will receive.
"""

from __future__ import annotations

import torch


def encode_inputs(
    x: torch.Tensor, signed: str, scale: torch.Tensor | float, offset: float, input_max: int
) -> list[torch.Tensor]:
    """Float inputs -> one (``none``, ``shift``) or two (``split``: +, -) unsigned integer
    tensors in ``0..input_max`` (float dtype, integer values). Out-of-range values clip."""
    stacked = encode_stacked(x, signed, scale, offset, input_max)
    batch = x.shape[0]
    return [stacked[:batch], stacked[batch:]] if signed == "split" else [stacked]


def encode_stacked(
    x: torch.Tensor, signed: str, scale: torch.Tensor | float, offset: float, input_max: int
) -> torch.Tensor:
    """:func:`encode_inputs` with the parts stacked along the batch: ``(parts * B, n)``, the
    ``split`` parts as the positive then the negative inputs of every sample."""
    # one new tensor, then in place: the encoding runs on every analog input
    if signed == "split":
        batch = x.shape[0]
        both = x.new_empty((2 * batch, *x.shape[1:]))
        torch.clamp(x, min=0.0, out=both[:batch])
        torch.clamp(x, max=0.0, out=both[batch:]).neg_()
        return both.div_(scale).round_().clamp_(max=input_max)
    y = x - offset if signed == "shift" else x / scale
    if signed == "shift":
        y.div_(scale)
    return y.round_().clamp_(0, input_max)


def conv_output_shape(spatial: tuple[int, ...], conv: dict) -> tuple[int, ...]:
    """Output spatial size of a (lowered) convolution; ``pads`` are begins then ends."""
    n = len(spatial)
    k, s, d, p = conv["kernel_shape"], conv["strides"], conv["dilations"], conv["pads"]
    return tuple(
        (spatial[i] + p[i] + p[i + n] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(n)
    )


def im2col(x: torch.Tensor, conv: dict) -> torch.Tensor:
    """Patches of a conv input ``(N, C, *spatial)`` as rows ``(N * positions, C * prod(k))``,
    channel-major like the lowered weight matrix; positions in row-major output order.

    One strided copy per kernel offset from a zero-padded channels-last copy of ``x`` (a
    fraction of the time of ``torch.nn.functional.unfold`` plus its transposed copy).
    """
    k, s, d, p = conv["kernel_shape"], conv["strides"], conv["dilations"], conv["pads"]
    if len(k) == 1:  # as 2-D with a height of 1
        x, k, s, d, p = x.unsqueeze(2), (1, k[0]), (1, s[0]), (1, d[0]), (0, p[0], 0, p[1])
    n, c, h, w = x.shape
    height, width = h + p[0] + p[2], w + p[1] + p[3]
    out_h = (height - d[0] * (k[0] - 1) - 1) // s[0] + 1
    out_w = (width - d[1] * (k[1] - 1) - 1) // s[1] + 1
    padded = x.new_zeros(n, height, width, c)
    padded[:, p[0] : p[0] + h, p[1] : p[1] + w] = x.permute(0, 2, 3, 1)
    rows = x.new_empty(n, out_h, out_w, c, k[0], k[1])
    for i in range(k[0]):
        top = i * d[0]
        for j in range(k[1]):
            left = j * d[1]
            rows[..., i, j] = padded[
                :,
                top : top + s[0] * (out_h - 1) + 1 : s[0],
                left : left + s[1] * (out_w - 1) + 1 : s[1],
            ]
    return rows.view(n * out_h * out_w, c * k[0] * k[1])


def im2col_multiplicity(spatial: tuple[int, ...], conv: dict) -> torch.Tensor:
    """How often :func:`im2col` copies each input position (float ``spatial``)."""
    k, s, d, p = conv["kernel_shape"], conv["strides"], conv["dilations"], conv["pads"]
    if len(k) == 1:
        spatial, k, s, d, p = (1, *spatial), (1, k[0]), (1, s[0]), (1, d[0]), (0, p[0], 0, p[1])
    h, w = spatial
    height, width = h + p[0] + p[2], w + p[1] + p[3]
    out_h = (height - d[0] * (k[0] - 1) - 1) // s[0] + 1
    out_w = (width - d[1] * (k[1] - 1) - 1) // s[1] + 1
    count = torch.zeros(height, width)
    for i in range(k[0]):
        for j in range(k[1]):
            top, left = i * d[0], j * d[1]
            count[
                top : top + s[0] * (out_h - 1) + 1 : s[0],
                left : left + s[1] * (out_w - 1) + 1 : s[1],
            ] += 1
    count = count[p[0] : p[0] + h, p[1] : p[1] + w]
    return count.reshape(tuple(spatial[-1:]) if len(conv["kernel_shape"]) == 1 else (h, w))


def col2im(rows: torch.Tensor, batch: int, out_spatial: tuple[int, ...]) -> torch.Tensor:
    """Inverse layout of :func:`im2col` for the outputs: ``(N * positions, C_out)`` ->
    ``(N, C_out, *out_spatial)``."""
    c_out = rows.shape[1]
    return rows.reshape(batch, -1, c_out).transpose(1, 2).reshape(batch, c_out, *out_spatial)
