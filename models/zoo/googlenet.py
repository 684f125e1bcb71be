"""GoogLeNet, Inception v1 (Szegedy et al. 2015, "Going Deeper with Convolutions").

The layer table of the paper (Table 1) with BatchNorm after every convolution (as modern
definitions of the network have it; BatchNorm adds no multiply to an eval-mode network once
folded): 7x7/2 conv (64), 3x3/2 max pool, 1x1 conv (64), 3x3 conv (192), 3x3/2 max pool,
inception 3a, 3b, max pool, 4a-4e, max pool, 5a, 5b, global average pooling, dropout 0.4,
Linear to 1000 classes. Each inception module concatenates a 1x1 branch, a 1x1 -> 3x3 branch,
a 1x1 -> 5x5 branch and a 3x3 max pool -> 1x1 branch. The two auxiliary classifiers only
act in training and are left out. 7.01 M parameters; the paper's table sums to 6.8 M, its
per-layer counts running a little below what the layer shapes give (3a: 159 K against 163 K).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvNormAct

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection), Table 1 of the paper.
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


class Inception(nn.Module):
    """Four parallel branches concatenated along the channels."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        one, reduce3, three, reduce5, five, pool_proj = widths
        self.branch1 = ConvNormAct(in_channels, one, 1)
        self.branch3 = nn.Sequential(
            ConvNormAct(in_channels, reduce3, 1), ConvNormAct(reduce3, three, 3)
        )
        self.branch5 = nn.Sequential(
            ConvNormAct(in_channels, reduce5, 1), ConvNormAct(reduce5, five, 5)
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), ConvNormAct(in_channels, pool_proj, 1)
        )
        self.out_channels = one + three + five + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch3, self.branch5, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], dim=1)


def _pool() -> nn.Module:
    """3x3/2 max pool rounding up, so 112 -> 56 -> 28 -> 14 -> 7 as in the paper."""
    return nn.MaxPool2d(3, stride=2, ceil_mode=True)


def googlenet(num_classes: int = 1000, dropout: float = 0.4) -> nn.Module:
    """GoogLeNet for 3-channel images (224x224 in the paper)."""
    layers: list[nn.Module] = [
        ConvNormAct(3, 64, 7, stride=2),
        _pool(),
        ConvNormAct(64, 64, 1),
        ConvNormAct(64, 192, 3),
        _pool(),
    ]
    channels = 192
    for name, widths in INCEPTION.items():
        if name in ("4a", "5a"):
            layers.append(_pool())
        module = Inception(channels, widths)
        layers.append(module)
        channels = module.out_channels
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(channels, num_classes),
    ]
    return nn.Sequential(*layers)
