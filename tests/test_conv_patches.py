"""ConvGeometry.im2col against torch's unfold on an explicitly padded input, for both of its
strategies (few channels: one copy of a strided view; many: one copy per tap)."""

from __future__ import annotations

import itertools

import pytest
import torch
from anacc.compiler.conv import ConvGeometry


@pytest.mark.parametrize("channels", [1, 2, 7, 30])
def test_2d_patches_equal_unfold_with_the_padding_value(channels):
    torch.manual_seed(channels)
    for kernel, stride, dilation in itertools.product(
        [(1, 1), (2, 3), (5, 5)], [(1, 1), (2, 1), (3, 2)], [(1, 1), (2, 1)]
    ):
        geometry = ConvGeometry(kernel, stride, (1, 0, 2, 1), dilation, 1, channels, 4)
        x = torch.randn(3, channels, 11, 12)
        padded = torch.nn.functional.pad(x, (0, 1, 1, 2), value=0.5)
        ref = torch.nn.functional.unfold(padded, kernel, dilation=dilation, stride=stride)
        ref = ref.transpose(1, 2).reshape(-1, channels * kernel[0] * kernel[1])
        assert torch.equal(geometry.im2col(x, 0.5), ref), (kernel, stride, dilation)


@pytest.mark.parametrize("channels", [1, 4, 20])
def test_1d_patches_equal_unfold_with_the_padding_value(channels):
    torch.manual_seed(channels)
    for kernel, stride, dilation in itertools.product([1, 3, 9], [1, 2], [1, 2]):
        geometry = ConvGeometry((kernel,), (stride,), (2, 1), (dilation,), 1, channels, 4)
        x = torch.randn(2, channels, 30)
        padded = torch.nn.functional.pad(x, (2, 1), value=-1.0).unsqueeze(2)
        ref = torch.nn.functional.unfold(
            padded, (1, kernel), dilation=(1, dilation), stride=(1, stride)
        )
        ref = ref.transpose(1, 2).reshape(-1, channels * kernel)
        assert torch.equal(geometry.im2col(x, -1.0), ref), (kernel, stride, dilation)
