"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks").

Width multiplier 1.0: stem 3x3/2 conv (32), the seventeen inverted-residual bottlenecks of the
paper's Table 2 (1x1 expansion by t with ReLU6, depthwise 3x3 with ReLU6, linear 1x1
projection, residual where stride is 1 and channels match), 1x1 conv to 1280, global average
pooling, dropout, Linear to 1000 classes. 3.50 M parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvNormAct

# (expansion t, output channels c, repeats n, first stride s), Table 2 of the paper.
BOTTLENECKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


class InvertedResidual(nn.Module):
    """Expand (skipped when t = 1), depthwise 3x3, linear projection, residual if shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvNormAct(in_channels, hidden, 1, activation=nn.ReLU6))
        layers += [
            ConvNormAct(hidden, hidden, 3, stride=stride, groups=hidden, activation=nn.ReLU6),
            ConvNormAct(hidden, out_channels, 1, activation=None),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def mobilenet_v2(num_classes: int = 1000, dropout: float = 0.2) -> nn.Module:
    """MobileNetV2 (width 1.0) for 3-channel images (224x224 in the paper)."""
    layers: list[nn.Module] = [ConvNormAct(3, STEM_CHANNELS, 3, stride=2, activation=nn.ReLU6)]
    in_channels = STEM_CHANNELS
    for expansion, channels, repeats, first_stride in BOTTLENECKS:
        for index in range(repeats):
            stride = first_stride if index == 0 else 1
            layers.append(InvertedResidual(in_channels, channels, stride, expansion))
            in_channels = channels
    layers += [
        ConvNormAct(in_channels, LAST_CHANNELS, 1, activation=nn.ReLU6),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(LAST_CHANNELS, num_classes),
    ]
    return nn.Sequential(*layers)
