"""Seeded weights for zoo models: every parameter drawn from one ``torch.Generator``.

Module constructors draw from torch's global generator; `initialize` redraws every parameter
from the caller's generator, so a zoo model is a function of its seed alone. The scheme aims at
the activation statistics of a trained network, not at a good starting point for training:

- Conv weights: normal, variance 2 / fan_in (He); Linear weights: variance 1 / fan_in (LeCun).
  Biases uniform in +-1/sqrt(fan_in), torch's own range.
- Recurrent weights and biases (RNN, GRU, LSTM): uniform in +-1/sqrt(hidden_size), torch's range.
- Attention input projections (``nn.MultiheadAttention.in_proj_*``): as a Linear.
- Norm scales 1 + 0.1 N(0, 1) and shifts 0.1 N(0, 1), so that a folded normalisation is not an
  identity.
- Modules that own other parameters (class token, position embedding, layer scale) define
  ``init_parameters(generator)``; a parameter no rule covers is an error.
- BatchNorm running statistics are measured: one forward pass in which only the BatchNorm layers
  are in training mode, over a seeded standard-normal batch, so every BatchNorm normalises what
  actually reaches it (as after training) instead of assuming zero mean and unit variance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
RECURRENT_TYPES = (nn.RNN, nn.GRU, nn.LSTM)
# Enough samples for stable BatchNorm statistics without a slow pass at 224x224.
CALIBRATION_VALUES = 2**20
CALIBRATION_BATCH = (4, 64)


def initialize(
    model: nn.Module, input_shape: Sequence[int], generator: torch.Generator
) -> nn.Module:
    """Draw every parameter of ``model`` from ``generator``, measure BatchNorm statistics.

    ``input_shape`` is the per-sample input shape of the calibration batch. Returns ``model``
    in eval mode.
    """
    with torch.no_grad():
        for module in model.modules():
            _init_own_parameters(module, generator)
        _calibrate_batch_norm(model, input_shape, generator)
    return model.eval()


def _init_own_parameters(module: nn.Module, generator: torch.Generator) -> None:
    own = dict(module.named_parameters(recurse=False))
    if not own:
        return
    if hasattr(module, "init_parameters"):
        module.init_parameters(generator)
    elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
        _fan_in_init(module.weight, module.bias, gain=2.0, generator=generator)
    elif isinstance(module, nn.Linear):
        _fan_in_init(module.weight, module.bias, gain=1.0, generator=generator)
    elif isinstance(module, NORM_TYPES):
        normal_(module.weight, 1.0, 0.1, generator)
        normal_(module.bias, 0.0, 0.1, generator)
    elif isinstance(module, RECURRENT_TYPES):
        bound = 1.0 / math.sqrt(module.hidden_size)
        for weight in own.values():
            weight.uniform_(-bound, bound, generator=generator)
    elif isinstance(module, nn.MultiheadAttention):
        assert module._qkv_same_embed_dim, "separate q/k/v projection weights are not covered"
        _fan_in_init(module.in_proj_weight, module.in_proj_bias, gain=1.0, generator=generator)
    else:
        raise AssertionError(f"no seeded initialisation for {type(module).__name__}")


def normal_(tensor: torch.Tensor, mean: float, std: float, generator: torch.Generator) -> None:
    """Fill ``tensor`` in place with N(mean, std^2) drawn from ``generator``."""
    tensor.normal_(mean, std, generator=generator)


def _fan_in_init(
    weight: torch.Tensor, bias: torch.Tensor | None, gain: float, generator: torch.Generator
) -> None:
    fan_in = weight[0].numel()
    normal_(weight, 0.0, math.sqrt(gain / fan_in), generator)
    if bias is not None:
        bound = 1.0 / math.sqrt(fan_in)
        bias.uniform_(-bound, bound, generator=generator)


def _calibrate_batch_norm(
    model: nn.Module, input_shape: Sequence[int], generator: torch.Generator
) -> None:
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    if not norms:
        return
    low, high = CALIBRATION_BATCH
    batch = min(high, max(low, CALIBRATION_VALUES // math.prod(input_shape)))
    model.eval()
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: the statistics of exactly this batch
        norm.train()
    model(torch.randn(batch, *input_shape, generator=generator))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
        norm.eval()
