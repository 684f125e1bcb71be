"""Small CNNs of the test family, each built around one block of a modern architecture.

Every model takes a 3x32x32 image (``fixed_batch_cnn``: 1x28x28) and has a stem, the block(s)
it is named after, global average pooling and a Linear head, well under a million parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvNormAct, SqueezeExcite

# ConvNeXt starts layer scales at 1e-6, which would hide the block under export round-off;
# a trained network's scales are of order 0.1 to 1.
LAYER_SCALE_RANGE = (0.1, 1.0)


class MobileNetV3Block(nn.Module):
    """Inverted residual of MobileNetV3: expand, depthwise, squeeze-excite, project, residual.

    HardSwish after the expansion and the depthwise conv, ReLU and HardSigmoid in the
    squeeze-excite, no activation after the projection.
    """

    def __init__(self, channels: int, expanded: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.expand = ConvNormAct(channels, expanded, 1, activation=nn.Hardswish)
        self.depthwise = ConvNormAct(
            expanded, expanded, kernel_size, groups=expanded, activation=nn.Hardswish
        )
        self.excite = SqueezeExcite(expanded, expanded // 4, nn.ReLU, nn.Hardsigmoid)
        self.project = ConvNormAct(expanded, channels, 1, activation=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.excite(self.depthwise(self.expand(x))))


def mobilenetv3_block(num_classes: int = 10) -> nn.Module:
    """Stem conv 3x3/2 (16), two MobileNetV3 blocks (16 -> 64 -> 16), 1x1 conv to 96, head."""
    return nn.Sequential(
        ConvNormAct(3, 16, 3, stride=2, activation=nn.Hardswish),
        MobileNetV3Block(16, 64),
        MobileNetV3Block(16, 64, kernel_size=5),
        ConvNormAct(16, 96, 1, activation=nn.Hardswish),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(96, num_classes),
    )


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor (through a channels-last permute)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7, channels-last LayerNorm, Linear 4x, GELU, Linear, scale.

    The scaled branch is added to the input (residual).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.expand = nn.Linear(channels, 4 * channels)
        self.activation = nn.GELU()
        self.project = nn.Linear(4 * channels, channels)
        self.layer_scale = nn.Parameter(torch.ones(channels))

    def init_parameters(self, generator: torch.Generator) -> None:
        self.layer_scale.uniform_(*LAYER_SCALE_RANGE, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.depthwise(x).permute(0, 2, 3, 1))
        y = self.project(self.activation(self.expand(y))) * self.layer_scale
        return x + y.permute(0, 3, 1, 2)


def convnext_block(num_classes: int = 10) -> nn.Module:
    """Patchify stem (4x4/4 conv to 32, LayerNorm), two ConvNeXt blocks, pool, LayerNorm, head."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 4, stride=4),
        ChannelLayerNorm(32),
        ConvNeXtBlock(32),
        ConvNeXtBlock(32),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.LayerNorm(32, eps=1e-6),
        nn.Linear(32, num_classes),
    )


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups: reshape, transpose, reshape."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


def _shuffle_branch(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1x1 conv-BN-ReLU, depthwise 3x3 conv-BN (stride), 1x1 conv-BN-ReLU."""
    return nn.Sequential(
        ConvNormAct(in_channels, out_channels, 1),
        ConvNormAct(
            out_channels, out_channels, 3, stride=stride, groups=out_channels, activation=None
        ),
        ConvNormAct(out_channels, out_channels, 1),
    )


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit.

    At stride 1 the input is split in two halves along the channels (``chunk``), one half passes
    unchanged and the other through a branch; at stride 2 both branches see the whole input
    (the left one a depthwise 3x3/2 and a 1x1). Concat, then a channel shuffle of two groups.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        half = out_channels // 2
        self.stride = stride
        if stride == 1:
            assert in_channels == out_channels, (in_channels, out_channels)
            self.left = nn.Identity()
            self.right = _shuffle_branch(half, half, 1)
        else:
            self.left = nn.Sequential(
                ConvNormAct(in_channels, in_channels, 3, stride, in_channels, activation=None),
                ConvNormAct(in_channels, half, 1),
            )
            self.right = _shuffle_branch(in_channels, half, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            left, right = x.chunk(2, dim=1)
        else:
            left, right = x, x
        return channel_shuffle(torch.cat([self.left(left), self.right(right)], dim=1), 2)


def shufflenet_split(num_classes: int = 10) -> nn.Module:
    """Stem 3x3/2 (24), ShuffleNetV2 units 24 -> 48 (stride 2), 48 (x2), 1x1 to 128, head."""
    return nn.Sequential(
        ConvNormAct(3, 24, 3, stride=2),
        ShuffleUnit(24, 48, 2),
        ShuffleUnit(48, 48, 1),
        ShuffleUnit(48, 48, 1),
        ConvNormAct(48, 128, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )


def fixed_batch_cnn(num_classes: int = 10) -> nn.Module:
    """LeNet-like CNN on 1x28x28: two conv-BN-ReLU-maxpool stages, flatten, two Linears.

    The zoo exports it with a fixed batch of one, so its graph has static shapes throughout
    (the flatten becomes a Reshape or Flatten with constant sizes).
    """
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5, padding=2),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )
