"""The ``emulator`` backend: one emulated chip instance with the analog model of the profile.

Per run (row chunk ``r``), batch sample ``b`` and output column ``c`` (docs/chip-model.md has
the full model, its equations and the source of every coefficient):

1. Charge: ``E`` and ``I``, the excitatory and inhibitory sums of ``x * |w| * s`` over the
   chunk's rows, with ``s`` the fixed mismatch of the physical synapse (negative part on the
   first row of a row pair, positive part on the second).
2. Dynamic saturation: each of ``E`` and ``I`` is compressed when its peak load on the
   synaptic input, ``rho * E`` with ``rho`` the share of the column's weight inside the
   heaviest window of one synaptic time constant (in event slots, in row-slot order), exceeds
   ``synin_linear_load``.
3. Membrane: ``v = g_c * gain_per_send * num_sends * (E - I) + offset_c + noise`` with a fixed
   per-neuron gain ``g_c`` (mismatch and spatial gradient) and offset, and Gaussian noise of
   variance ``readout + num_sends * active_inputs * (per_event + per_event_weight2 * m**2)``.
4. Soft saturation beyond per-neuron linear limits, then the ADC: round, clamp to int8.

Fixed-pattern effects are drawn once from ``seed`` (the chip instance id). Trial-to-trial
noise comes from a generator seeded from ``(seed, run counter)``: the same seed and the same
sequence of calls give identical outputs. Standard normals are read from a per-instance bank
of pre-drawn values at a random offset and stride instead of being drawn afresh per call
(``noise_bank=False`` draws them afresh; the trade-off is in docs/chip-model.md).

Everything runs as one batched computation over all row chunks and the whole batch; per-layer
derived tensors are cached by layer object and version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from anacc.compiler.chip import ChipSpec, Profile
from anacc.compiler.mapping import AnalogLayer
from anacc.runtime.backends.base import AnalogBackend, ChunkLayout, LayerCache

_FIXED_PATTERN_STREAM = 0
_TRIAL_STREAM = 1
_BANK_STREAM = 2
_BANK_MIN = 2**20
_BANK_MAX = 2**24


_MASK64 = 2**64 - 1


def _derived_seed(*words: int) -> int:
    """A 64-bit seed mixed from ``words`` with splitmix64 steps (cheap: one per call)."""
    state = 0
    for word in words:
        state = ((state ^ (word & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & _MASK64
        state ^= state >> 31
    return state


@dataclass(frozen=True)
class ChipInstance:
    """Fixed-pattern deviations of one emulated chip, indexed ``[half, row, neuron]``."""

    neuron_gain: torch.Tensor
    neuron_offset: torch.Tensor
    saturation_high: torch.Tensor
    saturation_low: torch.Tensor
    synapse_gain: torch.Tensor

    @classmethod
    def draw(cls, chip: ChipSpec, seed: int) -> ChipInstance:
        a = chip.analog
        rng = np.random.default_rng([seed, _FIXED_PATTERN_STREAM])
        shape = (chip.halves, chip.columns_per_half)
        # Synapse drivers sit at column 0: gain falls linearly with distance, centred on 1 so
        # that calibration keeps the mean gain.
        position = (np.arange(chip.columns_per_half) + 0.5) / chip.columns_per_half
        gradient = 1.0 + a.spatial_gain_gradient * (0.5 - position)
        neuron_gain = (1.0 + a.neuron_gain_sigma * rng.standard_normal(shape)) * gradient
        offset = a.neuron_offset_sigma_lsb * rng.standard_normal(shape)
        high = chip.linear_max * (1.0 + a.saturation_point_sigma * rng.standard_normal(shape))
        low = chip.linear_min * (1.0 + a.saturation_point_sigma * rng.standard_normal(shape))
        synapse = 1.0 + a.synapse_gain_sigma * rng.standard_normal(
            (chip.halves, chip.rows_per_half, chip.columns_per_half)
        )
        return cls(
            neuron_gain=_float_tensor(np.maximum(neuron_gain, 0.0)),
            neuron_offset=_float_tensor(offset),
            saturation_high=_float_tensor(np.maximum(high, 1.0)),
            saturation_low=_float_tensor(np.minimum(low, -1.0)),
            synapse_gain=_float_tensor(np.maximum(synapse, 0.0)),
        )


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """A uniform integer in ``low..high`` (inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _float_tensor(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(values.astype(np.float32))


@dataclass(frozen=True)
class _EmulatedLayer:
    """Per-layer tensors of the model; ``(R, 1, C)`` ones broadcast over ``(R, B, C)``."""

    weight: torch.Tensor  # (R, n_max, C): effective weight, output LSB per input unit
    offset: torch.Tensor  # (R, 1, C)
    noise_sigma: torch.Tensor  # ((n_max + 1) * R, C): sigma at k active inputs, row k * R + r
    saturation_high: torch.Tensor  # (R, 1, C)
    saturation_low: torch.Tensor  # (R, 1, C)
    saturation_high_min: float
    saturation_low_max: float
    may_saturate_input: bool  # whether some input can pass the synaptic linear load
    peak_load: torch.Tensor  # (2, R, C): peak window load per unit input, +/- parts
    spread_load: torch.Tensor  # (2, R, C): rho * largest synapse charge, +/- parts
    kappa: torch.Tensor  # (2, R, C): load in units of the linear load per output LSB
    inv_kappa: torch.Tensor  # (2, R, C): 1 / kappa, 0 where kappa is 0


class _NoiseBank:
    """Standard normals drawn once per bank size, read through random strided windows.

    A window is ``bank[offset + b * stride + j]`` for sample ``b`` and position ``j`` among the
    sample's ``R * C`` outputs; each call draws a new stride and offset. Every value is an
    exact standard normal and one output's values across calls come from different bank
    positions. What is lost against fresh draws: windows of different calls (and, when the
    bank is too small for ``stride >= R * C``, of different samples) reuse values at shifted
    positions.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.bank = torch.empty(0)

    def window(self, shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
        """A ``(R, B, C)`` view of standard normals; see the class docstring."""
        chunks, batch, cols = shape
        span = chunks * cols
        self._reserve(batch, span)
        size = self.bank.numel()
        stride_max = (size - span) // max(batch - 1, 1)
        stride = _randint(min(span, stride_max), stride_max, generator)
        offset = _randint(0, size - span - (batch - 1) * stride, generator)
        return self.bank.as_strided(shape, (cols, stride, 1), offset)

    def _reserve(self, batch: int, span: int) -> None:
        required = 2 * (span + batch)  # stride >= 1 and room for offsets
        wanted = max(required, min(2 * batch * span, _BANK_MAX))  # stride >= span if it fits
        if self.bank.numel() >= wanted:
            return
        size = _BANK_MIN
        while size < wanted:
            size *= 2
        generator = torch.Generator().manual_seed(_derived_seed(self.seed, _BANK_STREAM, size))
        self.bank = torch.randn(size, generator=generator)


class EmulatorBackend(AnalogBackend):
    """The chip's analog model; ``seed`` is the emulated chip instance id."""

    name: ClassVar[str] = "emulator"

    def __init__(
        self, chip: ChipSpec, profile: Profile, seed: int = 0, noise_bank: bool = True
    ) -> None:
        super().__init__(chip, profile)
        self.seed = seed
        self.instance = ChipInstance.draw(chip, seed)
        self.noise_bank = noise_bank
        self._bank = _NoiseBank(seed)
        self._runs = 0
        self._derived = LayerCache()

    def _run(self, layer: AnalogLayer, layout: ChunkLayout, xc: torch.Tensor) -> torch.Tensor:
        d = self._derived.get(
            layer, (layer.version, layer.num_sends), lambda: self._derive(layer, layout)
        )
        n_chunks, batch, _ = xc.shape
        shape = (n_chunks, batch, layer.out_features)
        generator = torch.Generator().manual_seed(
            _derived_seed(self.seed, _TRIAL_STREAM, self._runs)
        )
        self._runs += 1
        if self.noise_bank:
            z = self._bank.window(shape, generator)
        else:
            z = torch.randn(shape, generator=generator)

        # Offset and noise first, then the matmul accumulates into the same buffer: one
        # allocation, no temporary of the output's size, two passes for the noise. The sigma
        # of each (run, sample, column) is a row of the per-layer table, picked by the
        # number of active inputs of that sample in that run. The buffer is run-major, so
        # the batched matmul writes contiguous blocks; the caller gets a (B, R, C) view.
        # inputs are integers >= 0: clamped at 1 they sum to the count of active ones, which
        # is faster than count_nonzero on the strided chunk view
        active = xc.clamp(max=1.0).sum(2).to(torch.int64)  # (R, B)
        rows = active * n_chunks + torch.arange(n_chunks).unsqueeze(1)
        out = d.noise_sigma.index_select(0, rows.reshape(-1)).view(shape)
        torch.addcmul(d.offset, z, out, out=out)
        out.baddbmm_(xc, d.weight)
        if d.may_saturate_input:
            self._dynamic_saturation(out, xc, d)
        lowest, highest = (float(v) for v in torch.aminmax(out))
        if highest > d.saturation_high_min or lowest < d.saturation_low_max:
            self._soft_saturation(out, d)
        if highest > self.chip.adc_max or lowest < self.chip.adc_min:
            out.clamp_(self.chip.adc_min, self.chip.adc_max)
        return out.round_().permute(1, 0, 2)

    def _dynamic_saturation(self, out: torch.Tensor, xc: torch.Tensor, d: _EmulatedLayer) -> None:
        """Compress the charge of columns whose synaptic input load may pass its linear range.

        The load of a column in a run is at most ``input_max * peak_load`` and at most
        ``sum(x) * spread_load``; only columns where that bound passes the linear load get
        the exact per-sample computation (one extra matmul over those columns).
        """
        largest_sum = xc.sum(2).amax(1).view(1, -1, 1)  # (1, R, 1) against (2, R, C)
        bound = torch.minimum(self.chip.input_max * d.peak_load, largest_sum * d.spread_load)
        cols = (bound > self.chip.analog.synin_linear_load).any(1).any(0).nonzero().squeeze(1)
        if cols.numel() == 0:
            return
        weight = d.weight.index_select(2, cols)
        charge = torch.bmm(xc, torch.cat([weight, weight.abs()], dim=2))
        signed, total = charge.split(cols.numel(), dim=2)
        excitatory = (total + signed) * 0.5
        inhibitory = (total - signed) * 0.5
        kappa = d.kappa.index_select(2, cols).unsqueeze(2)
        inv_kappa = d.inv_kappa.index_select(2, cols).unsqueeze(2)
        headroom = self.chip.analog.synin_headroom
        lost = []
        for part, charge_part in enumerate((excitatory, inhibitory)):
            excess = (charge_part * kappa[part] - 1.0).clamp_min_(0.0)
            lost.append(_knee_loss(excess, headroom) * inv_kappa[part])
        out.index_add_(2, cols, lost[1] - lost[0])

    def _soft_saturation(self, out: torch.Tensor, d: _EmulatedLayer) -> None:
        """Beyond a neuron's linear limit, approach limit + headroom smoothly (rational knee).

        With ``e = out - clamp(out, low, high)`` (the signed excess, 0 inside the limits) the
        knee removes ``e * |e| / (|e| + headroom)``: ``_knee_loss`` of the excess, with its
        sign. Dense and in place: no index lists, two temporaries.
        """
        headroom = self.chip.analog.saturation_headroom_lsb
        excess = torch.clamp(out, d.saturation_low, d.saturation_high).neg_().add_(out)
        size = excess.abs()
        out.sub_(excess.mul_(size).div_(size.add_(headroom)))

    def _derive(self, layer: AnalogLayer, layout: ChunkLayout) -> _EmulatedLayer:
        chip, profile, inst = self.chip, self.profile, self.instance
        half, neuron = layout.half, layout.neuron  # (R, C)
        weight_q = layout.chunk_weights(layer.weight_q)  # (R, n_max, C)

        # negative part on the first row of the slot's pair, positive part on the last
        row = chip.rows_per_signed_weight * layout.slot.unsqueeze(2)  # (R, n_max, 1)
        row = row + (weight_q > 0) * (chip.rows_per_signed_weight - 1)
        physical = (half.unsqueeze(1) * chip.rows_per_half + row) * chip.columns_per_half
        synapse = inst.synapse_gain.reshape(-1).take(physical + neuron.unsqueeze(1))
        charge = weight_q * synapse  # signed, in units of input x weight
        gain = profile.gain_per_send * layer.num_sends * inst.neuron_gain[half, neuron]
        weight = charge * gain.unsqueeze(1)

        rows = layout.chunk_rows.to(torch.float32).unsqueeze(1)  # (R, 1)
        weight_ms = weight_q.square().sum(1) / rows
        terms = profile.noise_terms
        per_active = layer.num_sends * (terms.per_event + terms.per_event_weight2 * weight_ms)
        counts = torch.arange(layout.n_max + 1, dtype=torch.float32).view(-1, 1, 1)
        noise_sigma = (terms.readout + counts * per_active).sqrt()  # (n_max + 1, R, C)

        charges = torch.stack([charge.clamp(min=0), (-charge).clamp(min=0)])  # (2, R, n_max, C)
        window = profile.window_slots(chip.clock_mhz)
        peak = _peak_window_load(charges, layout, window, layer.num_sends)
        total = charges.sum(2)
        rho = torch.where(total > 0, peak / total.clamp_min(1e-30), torch.zeros_like(total))
        kappa = rho / (chip.analog.synin_linear_load * gain)
        inv_kappa = torch.where(kappa > 0, 1.0 / kappa.clamp_min(1e-30), torch.zeros_like(kappa))

        high = inst.saturation_high[half, neuron]
        low = inst.saturation_low[half, neuron]
        largest_load = chip.input_max * peak.max() if peak.numel() else 0.0
        return _EmulatedLayer(
            weight=weight.contiguous(),
            offset=inst.neuron_offset[half, neuron].unsqueeze(1),
            noise_sigma=noise_sigma.reshape(-1, layer.out_features),
            saturation_high=high.unsqueeze(1),
            saturation_low=low.unsqueeze(1),
            saturation_high_min=float(high.min()),
            saturation_low_max=float(low.max()),
            may_saturate_input=bool(largest_load > chip.analog.synin_linear_load),
            peak_load=peak,
            spread_load=rho * charges.amax(2),
            kappa=kappa,
            inv_kappa=inv_kappa,
        )


def _knee_loss(excess: torch.Tensor, headroom: float) -> torch.Tensor:
    """What the rational knee removes from a value ``excess`` beyond its linear limit.

    The knee maps ``limit + e`` to ``limit + headroom * e / (headroom + e)``: slope 1 at the
    limit, approaching ``limit + headroom``; the difference is ``e**2 / (headroom + e)``.
    """
    return excess.square() / (excess + headroom)


def _peak_window_load(
    charges: torch.Tensor, layout: ChunkLayout, window: float, num_sends: int
) -> torch.Tensor:
    """Largest sum of event charges inside a window of ``window`` event slots, per column.

    ``charges`` is ``(P, R, n_max, C)`` in the layout's row order; events arrive in
    ``layout.time_order`` and the event train of a run is the chunk's rows repeated
    ``num_sends`` times, with silence before it. The busiest window ends in the last send: it
    holds ``periods`` whole repetitions and a partial window ending at one of its slots. A
    fractional window counts its oldest slot partly. Chunks of equal size go together.
    """
    parts, n_chunks, n_max, cols = charges.shape
    starts = (torch.arange(n_chunks) * n_max).unsqueeze(1)
    in_time = charges.reshape(parts, n_chunks * n_max, cols).index_select(
        1, (starts + layout.time_order).reshape(-1)
    )
    in_time = in_time.view(parts, n_chunks, n_max, cols)
    sizes = [stop - start for start, stop in layout.row_chunks]
    peak = charges.new_zeros(parts, n_chunks, cols)
    for rows in sorted(set(sizes)):
        group = torch.tensor([r for r, size in enumerate(sizes) if size == rows])
        seq = in_time.index_select(1, group)[:, :, :rows]  # (P, G, rows, C)
        length = min(window, float(num_sends * rows))
        periods = int(length // rows)
        partial = length - periods * rows
        whole = int(partial)
        # the partial window reaches into an earlier send only if one is left before the
        # whole periods; otherwise into the silence before the train
        previous = seq if periods + 1 < num_sends else torch.zeros_like(seq)
        train = torch.cat([previous, seq], dim=2)  # (P, G, 2 rows, C)
        cum = torch.nn.functional.pad(train.cumsum(2), (0, 0, 1, 0))
        # windows end at each slot of the current send: train positions rows .. 2 rows - 1
        sums = cum[:, :, rows + 1 :] - cum[:, :, rows + 1 - whole : 2 * rows + 1 - whole]
        sums += (partial - whole) * train[:, :, rows - whole : 2 * rows - whole]
        peak[:, group] = periods * seq.sum(2) + sums.amax(2)
    return peak
