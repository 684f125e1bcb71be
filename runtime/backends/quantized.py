"""The ``quantized`` backend: the chip's integer arithmetic and nothing else.

Per run (row chunk ``r`` of the layer): ``round(gain_per_send * num_sends * sum_i x_i * w_i)``
over the chunk's rows, clamped to ``adc_min..adc_max``. No noise, no mismatch, no saturation
beyond the ADC clamp: it isolates the quantization error. Deterministic.

Rounding is round-half-to-even (``torch.round``), computed in float64 from the exact integer
sum, so the result is the correctly rounded real product: unbiased, unlike a floor.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from anacc.compiler.chip import ChipSpec, Profile
from anacc.compiler.mapping import AnalogLayer
from anacc.runtime.backends.base import AnalogBackend, ChunkLayout, LayerCache


class QuantizedBackend(AnalogBackend):
    """Integer multiply-accumulate, nominal gain, per-run int8 clamp; see the module docstring."""

    name: ClassVar[str] = "quantized"
    physical: ClassVar[bool] = False

    def __init__(self, chip: ChipSpec, profile: Profile) -> None:
        super().__init__(chip, profile)
        self._weights = LayerCache()
        # float32 holds every partial sum exactly below 2**24.
        largest_sum = chip.signed_inputs_per_run * chip.input_max * chip.weight_max
        assert largest_sum < 2**24, "integer sums of this chip do not fit float32 exactly"

    def _run(self, layer: AnalogLayer, layout: ChunkLayout, xc: torch.Tensor) -> torch.Tensor:
        weights = self._weights.get(
            layer, layer.version, lambda: layout.chunk_weights(layer.weight_q)
        )
        acc = torch.bmm(xc, weights)  # (R, B, C), run-major like the chip's runs
        scaled = acc.to(torch.float64).mul_(self.profile.gain_per_send * layer.num_sends)
        scaled.round_().clamp_(self.chip.adc_min, self.chip.adc_max)
        return acc.copy_(scaled)
