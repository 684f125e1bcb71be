"""DenseNet-121 (Huang et al. 2017, "Densely Connected Convolutional Networks").

DenseNet-BC with growth rate 32: stem 7x7/2 conv (64), BN, ReLU, 3x3/2 max pool; four dense
blocks of 6, 12, 24 and 16 layers, each layer BN-ReLU-1x1 conv (4 x growth) - BN-ReLU-3x3 conv
(growth) whose output is concatenated to its input; between blocks a transition BN-ReLU-1x1 conv
halving the channels (compression 0.5) and 2x2 average pooling; final BN, ReLU, global average
pooling, Linear to 1000 classes. 7.98 M parameters.
"""

from __future__ import annotations

import torch
from torch import nn

GROWTH = 32
BLOCK_LAYERS = (6, 12, 24, 16)
STEM_CHANNELS = 64
BOTTLENECK_FACTOR = 4
COMPRESSION = 0.5


def _norm_act_conv(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    """Pre-activation: BN, ReLU, then a bias-free conv with "same" padding."""
    return [
        nn.BatchNorm2d(in_channels),
        nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
    ]


class DenseLayer(nn.Module):
    """Bottleneck layer whose ``GROWTH`` new channels are concatenated to its input."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *_norm_act_conv(in_channels, BOTTLENECK_FACTOR * GROWTH, 1),
            *_norm_act_conv(BOTTLENECK_FACTOR * GROWTH, GROWTH, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layers(x)], dim=1)


def densenet121(num_classes: int = 1000) -> nn.Module:
    """DenseNet-121 for 3-channel images (224x224 in the paper)."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, STEM_CHANNELS, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(STEM_CHANNELS),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
    ]
    channels = STEM_CHANNELS
    for block, num_layers in enumerate(BLOCK_LAYERS):
        for _ in range(num_layers):
            layers.append(DenseLayer(channels))
            channels += GROWTH
        if block < len(BLOCK_LAYERS) - 1:
            reduced = int(channels * COMPRESSION)
            layers += [*_norm_act_conv(channels, reduced, 1), nn.AvgPool2d(2, stride=2)]
            channels = reduced
    layers += [
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, num_classes),
    ]
    return nn.Sequential(*layers)
