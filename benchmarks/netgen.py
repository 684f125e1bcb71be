"""Generated networks for the benchmarks, with seeded random weights, exported to ONNX.

- :func:`resnet18`: the ResNet-18 layout (7x7 stem, max pool, four stages of two basic blocks,
  global average pool, one linear layer), BatchNorm kept in the graph as in the bundled models.
- :func:`mlp` and :func:`convnet`: a plain MLP and a plain stride-2 conv net whose width is
  solved for a requested parameter count, for the compile-time growth table.

Weights are He-normal from an explicit ``torch.Generator``; BatchNorm layers get a small seeded
spread of statistics so that folding them is real work. :func:`export` writes the file the way
``models/_common.py`` does (TorchScript exporter, opset 17, dynamic batch, BN unfolded).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 17


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    def __init__(self, classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        blocks, c = [], width
        for stage in range(4):
            c_out = width * 2**stage
            blocks += [BasicBlock(c, c_out, 1 if stage == 0 else 2), BasicBlock(c_out, c_out, 1)]
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def resnet18(seed: int = 0) -> nn.Module:
    """ResNet-18 for 3-channel images and 10 classes (11.2 M parameters), eval mode."""
    return init(ResNet18(), torch.Generator().manual_seed(seed))


def mlp(params: int, seed: int = 0, n_in: int = 256, depth: int = 4) -> nn.Module:
    """``depth`` hidden layers of one width (solved for ``params``) with ReLU, 10 outputs."""
    a, b = depth - 1, n_in + 10 + depth
    width = max(4, int((-b + math.sqrt(b * b + 4 * a * params)) / (2 * a)))
    layers: list[nn.Module] = []
    d = n_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, 10))
    return init(nn.Sequential(*layers), torch.Generator().manual_seed(seed))


def convnet(params: int, seed: int = 0, image: int = 16) -> nn.Module:
    """Four 3x3 stride-2 convs of one width (solved for ``params``) with BN and ReLU on a
    ``3 x image x image`` input, then one linear layer to 10 classes."""
    side = image // 16
    per_width2 = 3 * 9  # three c x c 3x3 convs
    per_width = 3 * 9 + 10 * side * side + 4 * 3  # first conv, head, BN and biases
    root = math.sqrt(per_width**2 + 4 * per_width2 * params)
    width = max(2, int((root - per_width) / (2 * per_width2)))
    layers: list[nn.Module] = []
    c = 3
    for _ in range(4):
        layers += [nn.Conv2d(c, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    layers += [nn.Flatten(), nn.Linear(width * side * side, 10)]
    return init(nn.Sequential(*layers), torch.Generator().manual_seed(seed))


def init(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """He-normal weights, zero biases, BatchNorm statistics near identity; eval mode."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator))
                m.weight.mul_(math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1 + 0.1 * torch.randn(n, generator=generator))
                m.bias.copy_(0.1 * torch.randn(n, generator=generator))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                m.running_var.copy_(1 + 0.1 * torch.rand(n, generator=generator))
    return module.eval()


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def export(module: nn.Module, sample_shape: tuple[int, ...], path: str | Path) -> Path:
    """Write ``module`` as a single-file ONNX model (input ``input``, output ``logits``)."""
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (torch.zeros(1, *sample_shape),),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            training=torch.onnx.TrainingMode.EVAL,
            do_constant_folding=False,
        )
    return path
