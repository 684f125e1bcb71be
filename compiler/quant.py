"""The input encoding shared by the compiler and the runtime.

Inputs are mapped to the chip's unsigned range according to the layer's signed-input
strategy. Keeping the encoding in one module means the compiler's gain selection sees exactly
the integers the chip will receive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Encoding:
    """The float value of one input LSB and the offset subtracted first (``shift``)."""

    scale: float
    offset: float = 0.0


def encode(x: torch.Tensor, signed: str, enc: Encoding, input_max: int) -> torch.Tensor:
    """Float inputs -> unsigned integers in ``0..input_max`` (float dtype): one part, or for
    ``split`` the positive then the negative part stacked along the first axis
    (``(2 * B, ...)``). Out-of-range values clip. One new tensor, then in place."""
    if signed == "split":
        batch = x.shape[0]
        both = x.new_empty((2 * batch, *x.shape[1:]))
        torch.clamp(x, min=0.0, out=both[:batch])
        torch.clamp(x, max=0.0, out=both[batch:]).neg_()
        return both.div_(enc.scale).round_().clamp_(max=input_max)
    y = x - enc.offset if signed == "shift" else x / enc.scale
    if signed == "shift":
        y.div_(enc.scale)
    return y.round_().clamp_(0, input_max)


def encode_parts(x: torch.Tensor, signed: str, enc: Encoding, input_max: int) -> list[torch.Tensor]:
    """:func:`encode` as a list of parts: one (``none``, ``shift``) or two (``split``)."""
    stacked = encode(x, signed, enc, input_max)
    batch = x.shape[0]
    return [stacked[:batch], stacked[batch:]] if signed == "split" else [stacked]


def zero_code(signed: str, enc: Encoding, input_max: int) -> float:
    """The integer that encodes the float 0 (the value of convolution padding)."""
    if signed != "shift":
        return 0.0
    return float(min(max(round(-enc.offset / enc.scale), 0), input_max))
