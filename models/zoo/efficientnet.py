"""EfficientNet-B0 (Tan and Le 2019, "EfficientNet: Rethinking Model Scaling for CNNs").

Stem 3x3/2 conv (32) with SiLU (the paper's Swish), the sixteen MBConv blocks of the paper's
Table 1 (1x1 expansion by 1 or 6, depthwise 3x3 or 5x5, squeeze-excite to a quarter of the
block's input channels with SiLU and a sigmoid gate, linear 1x1 projection, residual where stride
is 1 and channels match), 1x1 conv to 1280, global average pooling, dropout, Linear to 1000
classes. Stochastic depth only acts in training and is left out. 5.29 M parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvNormAct, SqueezeExcite

# (expansion, kernel size, first stride, output channels, repeats), Table 1 of the paper.
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
SQUEEZE_RATIO = 0.25


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excite."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expansion: int
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvNormAct(in_channels, hidden, 1, activation=nn.SiLU))
        squeezed = max(1, int(in_channels * SQUEEZE_RATIO))
        layers += [
            ConvNormAct(hidden, hidden, kernel_size, stride, groups=hidden, activation=nn.SiLU),
            SqueezeExcite(hidden, squeezed, nn.SiLU, nn.Sigmoid),
            ConvNormAct(hidden, out_channels, 1, activation=None),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def efficientnet_b0(num_classes: int = 1000, dropout: float = 0.2) -> nn.Module:
    """EfficientNet-B0 for 3-channel images (224x224 in the paper)."""
    layers: list[nn.Module] = [ConvNormAct(3, STEM_CHANNELS, 3, stride=2, activation=nn.SiLU)]
    in_channels = STEM_CHANNELS
    for expansion, kernel_size, first_stride, channels, repeats in STAGES:
        for index in range(repeats):
            stride = first_stride if index == 0 else 1
            layers.append(MBConv(in_channels, channels, kernel_size, stride, expansion))
            in_channels = channels
    layers += [
        ConvNormAct(in_channels, HEAD_CHANNELS, 1, activation=nn.SiLU),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(HEAD_CHANNELS, num_classes),
    ]
    return nn.Sequential(*layers)
