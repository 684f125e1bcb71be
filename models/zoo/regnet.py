"""RegNetX-400MF (Radosavovic et al. 2020, "Designing Network Design Spaces").

The X block is a ResNeXt bottleneck without the bottleneck (ratio 1): 1x1 conv-BN-ReLU, 3x3
group conv (group width 16) with the stage's stride, BN, ReLU, 1x1 conv-BN, shortcut (a 1x1
conv-BN projection where the shape changes), ReLU. Stage widths and depths come from the paper's
quantized linear rule with the 400MF parameters (depth 22, w0 24, wa 24.48, wm 2.54):
depths 1, 2, 7, 12 and widths 32, 64, 160, 384. Stem 3x3/2 conv (32), global average pooling,
Linear to 1000 classes. 5.16 M parameters (the paper's table: 5.2 M).

Rounding the last width to the group width goes half to even here (392 / 16 = 24.5 -> 384), as
in the paper's reference implementation; definitions that round half up get 400 and 5.50 M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .layers import ConvNormAct

STEM_CHANNELS = 32
WIDTH_QUANTUM = 8


@dataclass(frozen=True)
class RegNetParams:
    """The design-space parameters of one RegNetX model."""

    depth: int
    w0: float
    wa: float
    wm: float
    group_width: int


REGNET_X_400MF = RegNetParams(depth=22, w0=24, wa=24.48, wm=2.54, group_width=16)


def stage_layout(params: RegNetParams) -> list[tuple[int, int]]:
    """(width, depth) of every stage from the quantized linear rule of the paper.

    Block j gets width u_j = w0 + wa * j, snapped to w0 * wm^round(log(u_j / w0) / log(wm))
    and rounded to a multiple of 8; consecutive blocks of equal width form a stage. Each width
    is then made a multiple of the group width (numpy rounding: halves go to even).
    """
    linear = params.w0 + params.wa * np.arange(params.depth)
    steps = np.round(np.log(linear / params.w0) / math.log(params.wm))
    widths = params.w0 * np.power(params.wm, steps)
    widths = (np.round(widths / WIDTH_QUANTUM) * WIDTH_QUANTUM).astype(int)
    layout: list[tuple[int, int]] = []
    for width in widths.tolist():
        if layout and layout[-1][0] == width:
            layout[-1] = (width, layout[-1][1] + 1)
        else:
            layout.append((width, 1))
    group = params.group_width
    return [(max(group, int(np.round(width / group)) * group), depth) for width, depth in layout]


class XBlock(nn.Module):
    """RegNet X block (bottleneck ratio 1) with a residual connection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, group_width: int) -> None:
        super().__init__()
        groups = out_channels // group_width
        self.block = nn.Sequential(
            ConvNormAct(in_channels, out_channels, 1),
            ConvNormAct(out_channels, out_channels, 3, stride=stride, groups=groups),
            ConvNormAct(out_channels, out_channels, 1, activation=None),
        )
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = ConvNormAct(in_channels, out_channels, 1, stride, activation=None)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.block(x) + self.shortcut(x))


def regnet_x(params: RegNetParams, num_classes: int = 1000) -> nn.Module:
    """A RegNetX; every stage starts with a stride-2 block."""
    layers: list[nn.Module] = [ConvNormAct(3, STEM_CHANNELS, 3, stride=2)]
    in_channels = STEM_CHANNELS
    for width, depth in stage_layout(params):
        for index in range(depth):
            layers.append(XBlock(in_channels, width, 2 if index == 0 else 1, params.group_width))
            in_channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes)]
    return nn.Sequential(*layers)


def regnet_x_400mf(num_classes: int = 1000) -> nn.Module:
    """RegNetX-400MF for 3-channel images (224x224 in the paper)."""
    return regnet_x(REGNET_X_400MF, num_classes)
