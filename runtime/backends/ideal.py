"""The ``ideal`` backend: the float model's weights, no quantization, no chip effects.

``linear(layer, x)`` is exactly ``x @ layer.weight`` in float32. It proves the graph, the
lowering and the tiling right: a compiled model run on it must match onnxruntime to float
tolerance.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from anacc.compiler.mapping import AnalogLayer
from anacc.runtime.backends.base import Backend


class IdealBackend(Backend):
    """Float32 ``x @ weight``; see the module docstring."""

    name: ClassVar[str] = "ideal"
    quantizes: ClassVar[bool] = False

    def linear(self, layer: AnalogLayer, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 2 and x.shape[1] == layer.in_features, (
            f"linear expects (B, {layer.in_features}) inputs, got {tuple(x.shape)}"
        )
        weight = torch.as_tensor(layer.weight, dtype=torch.float32)
        return x.to(torch.float32) @ weight
