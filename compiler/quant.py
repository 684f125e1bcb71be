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


def _patch_slices(spatial: tuple[int, int], conv: dict) -> tuple[tuple, tuple, list]:
    """The geometry of :func:`im2col` on a 2-D ``spatial`` (a 1-D conv as height 1): the pads
    (top, left, bottom, right), the output size and kernel size, and per kernel offset
    ``(i, j)`` the slices of the padded input that it reads, in (kh, kw) order."""
    k, s, d, p = conv["kernel_shape"], conv["strides"], conv["dilations"], conv["pads"]
    if len(k) == 1:
        k, s, d, p = (1, k[0]), (1, s[0]), (1, d[0]), (0, p[0], 0, p[1])
    height, width = spatial[0] + p[0] + p[2], spatial[1] + p[1] + p[3]
    out_h = (height - d[0] * (k[0] - 1) - 1) // s[0] + 1
    out_w = (width - d[1] * (k[1] - 1) - 1) // s[1] + 1
    slices = [
        (
            i,
            j,
            slice(i * d[0], i * d[0] + s[0] * (out_h - 1) + 1, s[0]),
            slice(j * d[1], j * d[1] + s[1] * (out_w - 1) + 1, s[1]),
        )
        for i in range(k[0])
        for j in range(k[1])
    ]
    return tuple(p), (out_h, out_w, k[0], k[1]), slices


def im2col(x: torch.Tensor, conv: dict) -> torch.Tensor:
    """Patches of a conv input ``(N, C, *spatial)`` as rows ``(N * positions, C * prod(k))``,
    channel-major like the lowered weight matrix; positions in row-major output order.

    One strided copy per kernel offset from a zero-padded channels-last copy of ``x`` (a
    fraction of the time of ``torch.nn.functional.unfold`` plus its transposed copy).
    """
    if len(conv["kernel_shape"]) == 1:
        x = x.unsqueeze(2)
    n, c, h, w = x.shape
    p, (out_h, out_w, kh, kw), slices = _patch_slices((h, w), conv)
    padded = x.new_zeros(n, h + p[0] + p[2], w + p[1] + p[3], c)
    padded[:, p[0] : p[0] + h, p[1] : p[1] + w] = x.permute(0, 2, 3, 1)
    rows = x.new_empty(n, out_h, out_w, c, kh, kw)
    for i, j, along_h, along_w in slices:
        rows[..., i, j] = padded[:, along_h, along_w]
    return rows.view(n * out_h * out_w, c * kh * kw)


def im2col_multiplicity(spatial: tuple[int, ...], conv: dict) -> torch.Tensor:
    """How often :func:`im2col` copies each input position (float ``spatial``)."""
    hw = (1, *spatial) if len(conv["kernel_shape"]) == 1 else tuple(spatial)
    p, _, slices = _patch_slices(hw, conv)
    count = torch.zeros(hw[0] + p[0] + p[2], hw[1] + p[1] + p[3])
    for _, _, along_h, along_w in slices:
        count[along_h, along_w] += 1
    return count[p[0] : p[0] + hw[0], p[1] : p[1] + hw[1]].reshape(tuple(spatial))


def col2im(rows: torch.Tensor, batch: int, out_spatial: tuple[int, ...]) -> torch.Tensor:
    """Inverse layout of :func:`im2col` for the outputs: ``(N * positions, C_out)`` ->
    ``(N, C_out, *out_spatial)``."""
    c_out = rows.shape[1]
    return rows.reshape(batch, -1, c_out).transpose(1, 2).reshape(batch, c_out, *out_spatial)
