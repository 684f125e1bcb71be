"""Building blocks several zoo architectures share: conv-BatchNorm-activation, squeeze-excite."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Activation = Callable[[], nn.Module]


class ConvNormAct(nn.Sequential):
    """Conv2d without bias, BatchNorm2d, then ``activation`` (none if it is None).

    Padding is ``kernel_size // 2``: "same" at stride 1, a halved size at stride 2.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        activation: Activation | None = nn.ReLU,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel attention: global average, 1x1 conv down, activation, 1x1 conv up, gate, scale."""

    def __init__(
        self, channels: int, squeezed: int, activation: Activation, gate: Activation
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.activation = activation()
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.expand(self.activation(self.reduce(self.pool(x)))))
        return x * scale
