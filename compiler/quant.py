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
    # one new tensor per part, then in place: the encoding runs on every analog input
    if signed == "split":
        pos = torch.relu(x).div_(scale).round_().clamp_(0, input_max)
        neg = torch.relu(-x).div_(scale).round_().clamp_(0, input_max)
        return [pos, neg]
    y = x - offset if signed == "shift" else x / scale
    if signed == "shift":
        y.div_(scale)
    return [y.round_().clamp_(0, input_max)]


def combine_parts(parts: list[torch.Tensor]) -> torch.Tensor:
    """Digital combination of the per-part integer results (``split``: positive - negative)."""
    return parts[0] if len(parts) == 1 else parts[0] - parts[1]


def conv_output_shape(spatial: tuple[int, ...], conv: dict) -> tuple[int, ...]:
    """Output spatial size of a (lowered) convolution; ``pads`` are begins then ends."""
    n = len(spatial)
    k, s, d, p = conv["kernel_shape"], conv["strides"], conv["dilations"], conv["pads"]
    return tuple(
        (spatial[i] + p[i] + p[i + n] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(n)
    )


def im2col(x: torch.Tensor, conv: dict) -> torch.Tensor:
    """Patches of a conv input ``(N, C, *spatial)`` as rows ``(N * positions, C * prod(k))``,
    channel-major like the lowered weight matrix; positions in row-major output order."""
    k, s, d, p = conv["kernel_shape"], conv["strides"], conv["dilations"], conv["pads"]
    if len(k) == 1:
        x = torch.nn.functional.pad(x, (p[0], p[1])).unsqueeze(2)
        cols = torch.nn.functional.unfold(x, (1, k[0]), dilation=(1, d[0]), stride=(1, s[0]))
    else:
        x = torch.nn.functional.pad(x, (p[1], p[3], p[0], p[2]))
        cols = torch.nn.functional.unfold(x, tuple(k), dilation=tuple(d), stride=tuple(s))
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def col2im(rows: torch.Tensor, batch: int, out_spatial: tuple[int, ...]) -> torch.Tensor:
    """Inverse layout of :func:`im2col` for the outputs: ``(N * positions, C_out)`` ->
    ``(N, C_out, *out_spatial)``."""
    c_out = rows.shape[1]
    return rows.reshape(batch, -1, c_out).transpose(1, 2).reshape(batch, c_out, *out_spatial)
