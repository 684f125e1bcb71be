"""ResNet-18 (He et al. 2016, "Deep Residual Learning for Image Recognition").

Stem 7x7/2 conv (64) and 3x3/2 max pool, four stages of two basic blocks (two 3x3 convs and an
identity shortcut) with 64, 128, 256, 512 channels, the first block of stages 2-4 halving the
size with a 1x1/2 conv-BN projection shortcut (option B of the paper), global average pooling,
Linear to 1000 classes. 11.69 M parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvNormAct

STAGE_CHANNELS = (64, 128, 256, 512)
STAGE_BLOCKS = (2, 2, 2, 2)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, out_channels, 3, stride=stride)
        self.conv2 = ConvNormAct(out_channels, out_channels, 3, activation=None)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = ConvNormAct(in_channels, out_channels, 1, stride, activation=None)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


def resnet18(num_classes: int = 1000) -> nn.Module:
    """ResNet-18 for 3-channel images of any size from 32x32 up (224x224 in the paper)."""
    layers: list[nn.Module] = [
        ConvNormAct(3, 64, 7, stride=2),
        nn.MaxPool2d(3, stride=2, padding=1),
    ]
    in_channels = 64
    for stage, (channels, blocks) in enumerate(zip(STAGE_CHANNELS, STAGE_BLOCKS, strict=True)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(in_channels, channels, stride))
            in_channels = channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes)]
    return nn.Sequential(*layers)
