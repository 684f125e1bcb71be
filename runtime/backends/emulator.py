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
noise is drawn per call from a seed mixed from ``(seed, run counter)``: the same seed and the
same sequence of calls give identical outputs; :meth:`EmulatorBackend.reset_noise` starts the
sequence again. The standard normals come from :class:`~anacc.runtime.backends.noise.
NormalSource` (``fast_noise=False`` draws them with ``torch.randn`` instead).

Everything runs as one batched computation over all row chunks and the whole batch: one
matmul for the charges, then the readout (noise, offset, saturation, ADC) in one compiled pass
over the reads (:mod:`~anacc.runtime.backends.readout`). What a
layer's layout picks out of the chip instance is built once per layout; the tensors derived
from the weights (effective weights, the noise sigma per number of active inputs, peak window
loads) once per layer version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from anacc.compiler.chip import ChipSpec, Profile
from anacc.compiler.mapping import AnalogLayer
from anacc.runtime.backends import readout
from anacc.runtime.backends.base import AnalogBackend, ChunkLayout, LayerCache
from anacc.runtime.backends.noise import NormalSource, derived_seed

_FIXED_PATTERN_STREAM = 0
_TRIAL_STREAM = 1
# no dynamic saturation in a call: no columns (and a loss of shape (B, R, 0))
_NO_COLUMNS = torch.zeros(0, dtype=torch.int64)


# float32 rounding of a bound on the peak window loads (relative)
_BOUND_MARGIN = 1.0 + 1e-5
# float32 lanes of a 512-bit vector: the batched matmul is several times slower for fewer
# output columns, or a few short of a multiple, than for the padded width (measured with MKL)
_COLUMN_ALIGN = 16


def padded_columns(columns: int) -> int:
    """The width of the emulator's run buffers for ``columns`` outputs: padded to a multiple
    of :data:`_COLUMN_ALIGN` when that costs at most 1/16 more, or when there are fewer."""
    padded = -(-columns // _COLUMN_ALIGN) * _COLUMN_ALIGN
    return padded if columns < _COLUMN_ALIGN or padded - columns <= columns // 16 else columns


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


def _float_tensor(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(values.astype(np.float32))


@dataclass(frozen=True)
class _Saturation:
    """What the dynamic-saturation model needs, per part (+ / -), run and column."""

    peak_load: torch.Tensor  # (2, R, C): peak window load per unit input
    spread_load: torch.Tensor  # (2, R, C): rho * largest synapse charge
    kappa: torch.Tensor  # (2, R, C): load in units of the linear load per output LSB
    inv_kappa: torch.Tensor  # (2, R, C): 1 / kappa, 0 where kappa is 0


@dataclass(frozen=True)
class _FixedPattern:
    """What a layer's layout picks out of the chip instance; built once per layout."""

    neuron_gain: torch.Tensor  # (R, 1, C)
    # (R, 1, Cp), padded to the run buffers' width (padded_columns): offset 0, limits that
    # a padded read (always 0) stays inside
    offset: torch.Tensor
    saturation_high: torch.Tensor
    saturation_low: torch.Tensor
    weight2_per_row: torch.Tensor  # (R, 1, 1): noise per_event_weight2 / rows of the run
    # by num_sends: window_operator and its longest window (in event slots)
    window_operators: dict[int, tuple[torch.Tensor, float]]
    # _synapse_gains, kept once the layer's weights change (it is as large as two weight
    # matrices; a layer that never changes does not keep it)
    synapse: list[torch.Tensor]


@dataclass(frozen=True)
class _PeakBase:
    """The signed charges ``(R, n_max, C)`` of a version and its largest peak load."""

    charge: torch.Tensor
    peak_max: float


@dataclass(frozen=True)
class _EmulatedLayer:
    """Per-layer tensors of the model; ``(R, 1, C)`` ones broadcast over ``(R, B, C)``."""

    # (R, n_max, Cp): effective weight, output LSB per input unit (0 on padded columns)
    weight: torch.Tensor
    # (R * (n_max + 1), Cp): row r * (n_max + 1) + n is the noise sigma of run r's columns
    # when n of its inputs are active; sigma_row (R, 1) holds r * (n_max + 1)
    sigma: torch.Tensor
    sigma_row: torch.Tensor
    fixed: _FixedPattern
    num_sends: int
    # None unless some input can pass the synaptic linear load
    saturation: _Saturation | None
    base: _PeakBase | None  # bounds the peak loads of the next version


class EmulatorBackend(AnalogBackend):
    """The chip's analog model; ``seed`` is the emulated chip instance id."""

    name: ClassVar[str] = "emulator"

    def __init__(
        self, chip: ChipSpec, profile: Profile, seed: int = 0, fast_noise: bool = True
    ) -> None:
        super().__init__(chip, profile)
        self.seed = seed
        self.instance = ChipInstance.draw(chip, seed)
        self.fast_noise = fast_noise
        self._normals = NormalSource()
        a = chip.analog
        self._limits = np.array([a.saturation_headroom_lsb, chip.adc_min, chip.adc_max], np.float32)
        self._runs = 0
        self._derived = LayerCache()
        self._noise_terms = profile.noise_terms
        self._window = profile.window_slots(chip.clock_mhz)

    def reset_noise(self) -> None:
        """Start the trial-to-trial noise sequence again: the calls that follow give the
        outputs that the same calls on a new instance with this seed give."""
        self._runs = 0

    def _run(self, layer: AnalogLayer, layout: ChunkLayout, xc: torch.Tensor) -> torch.Tensor:
        profiler = self.profiler
        if profiler is not None:
            profiler.mark()
        d = self._derived.get(
            layer,
            (layer.version, layer.num_sends),
            lambda: self._derive(layer, layout, self._derived.peek(layer)),
        )
        n_chunks, batch, _ = xc.shape
        width = d.weight.shape[2]
        trial = derived_seed(self.seed, _TRIAL_STREAM, self._runs)
        self._runs += 1
        # The buffer is sample-major (B, R, C), so the caller's (B, R, C) view of it is
        # contiguous, also for several copies of the layer; the matmul writes each run's
        # (B, C) block with a row stride of R * C. The readout then turns every charge into
        # its read in one pass (noise, offset, saturation, ADC: readout.py).
        buffer = torch.empty(batch, n_chunks, width)
        out = buffer.transpose(0, 1)  # (R, B, C)
        out.baddbmm_(xc, d.weight, beta=0.0)
        cols, lost = _NO_COLUMNS, buffer.new_empty(batch, n_chunks, 0)
        if d.saturation is not None:
            cols, lost = self._dynamic_saturation(xc, d.weight, d.saturation)
        if profiler is not None:
            profiler.lap("analog kernel")
        fixed = d.fixed
        common = (
            cols.numpy(),
            lost.numpy(),
            d.sigma.numpy(),
            d.sigma_row.view(-1).numpy(),
            fixed.offset.view(n_chunks, width).numpy(),
            fixed.saturation_high.view(n_chunks, width).numpy(),
            fixed.saturation_low.view(n_chunks, width).numpy(),
            self._limits,
        )
        if self.fast_noise:
            bits, where, values = self._normals.parts(buffer.numel(), trial)
            if profiler is not None:
                profiler.lap("noise")
            table = self._normals.table.numpy()
            readout.readout_table(buffer.numpy(), xc.numpy(), bits, table, where, values, *common)
        else:  # run-major at the unpadded width: the stream of earlier versions
            normals = torch.zeros(batch, n_chunks, width)
            normals.transpose(0, 1)[..., : layer.out_features] = torch.randn(
                (n_chunks, batch, layer.out_features),
                generator=torch.Generator().manual_seed(trial),
            )
            if profiler is not None:
                profiler.lap("noise")
            readout.readout_normals(buffer.numpy(), xc.numpy(), normals.numpy(), *common)
        if profiler is not None:
            profiler.lap("analog kernel")
        return out if width == layer.out_features else out[..., : layer.out_features]

    def _dynamic_saturation(
        self, xc: torch.Tensor, weight: torch.Tensor, d: _Saturation
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the compression of the charge takes away, for the columns whose synaptic input
        load may pass its linear range: ``(cols, lost)``, ``lost`` ``(B, R, len(cols))``
        (the readout subtracts it after adding the noise: the float order of the torch form
        it replaced).

        The load of a column in a run is at most ``input_max * peak_load`` and at most
        ``sum(x) * spread_load``; only columns where that bound passes the linear load get
        the exact per-sample computation (one extra matmul over those columns).
        """
        largest_sum = xc.sum(2).amax(1).view(1, -1, 1)  # (1, R, 1) against (2, R, C)
        bound = torch.minimum(self.chip.input_max * d.peak_load, largest_sum * d.spread_load)
        cols = (bound > self.chip.analog.synin_linear_load).any(1).any(0).nonzero().squeeze(1)
        if cols.numel() == 0:
            return _NO_COLUMNS, xc.new_empty(xc.shape[1], xc.shape[0], 0)
        weight = weight.index_select(2, cols)
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
        return cols, (lost[0] - lost[1]).transpose(0, 1).contiguous()

    def _synapse_gains(self, layout: ChunkLayout) -> torch.Tensor:
        """``(2, R, n_max, C)``: the synapse gain of the (+, -) row of each position."""
        chip = self.chip
        # positive part on the last row of the slot's pair, negative part on the first
        slot = layout.slot.unsqueeze(2) + layout.row_base.unsqueeze(1)  # (U, n_max, C)
        row = chip.rows_per_signed_weight * slot
        row = torch.stack([row + chip.rows_per_signed_weight - 1, row])
        physical = (layout.half.unsqueeze(1) * chip.rows_per_half + row) * chip.columns_per_half
        return self.instance.synapse_gain.reshape(-1).take(physical + layout.neuron.unsqueeze(1))

    def _fixed_pattern(self, layout: ChunkLayout) -> _FixedPattern:
        inst = self.instance
        half, neuron = layout.half, layout.neuron  # (R, C)
        high = inst.saturation_high[half, neuron]
        low = inst.saturation_low[half, neuron]
        extra = padded_columns(layout.out_features) - layout.out_features

        def padded(t: torch.Tensor, value: float) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, extra), value=value).unsqueeze(1)

        return _FixedPattern(
            neuron_gain=inst.neuron_gain[half, neuron].unsqueeze(1),
            offset=padded(inst.neuron_offset[half, neuron], 0.0),
            saturation_high=padded(high, float(high.max())),
            saturation_low=padded(low, float(low.min())),
            weight2_per_row=self._noise_terms.per_event_weight2
            / layout.chunk_rows.to(torch.float32).view(-1, 1, 1),
            window_operators={},
            synapse=[],
        )

    def _derive(
        self, layer: AnalogLayer, layout: ChunkLayout, previous: _EmulatedLayer | None
    ) -> _EmulatedLayer:
        """The layer's tensors for its current weights; ``previous``: those of the version
        before, whose peak window loads bound the new ones (see :meth:`_peak_loads`)."""
        fixed = layout.memo.get(self)
        if fixed is None:
            fixed = layout.memo[self] = self._fixed_pattern(layout)
        weight_q = layout.chunk_weights(layer.weight_q)  # (R, n_max, C)
        if fixed.synapse:
            synapse = fixed.synapse[0]
        else:
            synapse = self._synapse_gains(layout)
            if previous is not None:
                fixed.synapse.append(synapse)
        n_units, n_max, columns = weight_q.shape
        extra = padded_columns(layer.out_features) - layer.out_features
        # the + and - parts of the charge, each >= 0, in units of input x weight, times the
        # synapse gains; the signed charge; the effective weight (output LSB per input unit,
        # 0 on padded columns); the noise variance per active input: num_sends * (per_event
        # + per_event_weight2 * mean square weight of the run); one compiled pass
        charges = weight_q.new_empty((2, *weight_q.shape))
        charge = weight_q.new_empty(weight_q.shape)
        weight = weight_q.new_empty((n_units, n_max, columns + extra))
        variance = weight_q.new_empty((n_units, 1, columns))
        factors = np.array(
            [self.gain_per_send * layer.num_sends, self._noise_terms.per_event, layer.num_sends],
            dtype=np.float32,
        )
        readout.derive_charges(
            weight_q.numpy(),
            synapse.numpy(),
            fixed.neuron_gain.view(n_units, columns).numpy(),
            factors,
            fixed.weight2_per_row.reshape(-1).numpy(),
            charges.numpy(),
            charge.numpy(),
            weight.numpy(),
            variance.view(n_units, columns).numpy(),
        )
        # sigma for every possible number of active inputs of a run: a row lookup per
        # (run, sample) instead of a square root per read
        active = torch.arange(n_max + 1, dtype=torch.float32).view(1, -1, 1)
        sigma = torch.addcmul(torch.tensor(self._noise_terms.readout), active, variance).sqrt_()

        peak, base = self._peak_loads(layer, layout, fixed, charges, charge, previous)
        saturation = None
        chip = self.chip
        if peak is not None:
            gain = fixed.neuron_gain * (self.gain_per_send * layer.num_sends)  # (R, 1, C)
            total = charges.sum(2)
            rho = torch.where(total > 0, peak / total.clamp_min(1e-30), torch.zeros_like(total))
            kappa = rho / (chip.analog.synin_linear_load * gain.squeeze(1))
            inv_kappa = torch.where(
                kappa > 0, 1.0 / kappa.clamp_min(1e-30), torch.zeros_like(kappa)
            )
            saturation = _Saturation(
                peak_load=peak,
                spread_load=rho * charges.amax(2),
                kappa=kappa,
                inv_kappa=inv_kappa,
            )
        return _EmulatedLayer(
            weight=weight,
            sigma=torch.nn.functional.pad(sigma.view(-1, weight_q.shape[2]), (0, extra)),
            sigma_row=torch.arange(n_units).mul_(n_max + 1).view(-1, 1),
            fixed=fixed,
            num_sends=layer.num_sends,
            saturation=saturation,
            base=base,
        )

    def _peak_loads(
        self,
        layer: AnalogLayer,
        layout: ChunkLayout,
        fixed: _FixedPattern,
        charges: torch.Tensor,
        charge: torch.Tensor,
        previous: _EmulatedLayer | None,
    ) -> tuple[torch.Tensor | None, _PeakBase | None]:
        """The peak window loads ``(2, R, C)`` if some input can pass the synaptic linear
        load (else None), and what bounds the loads of the next version.

        A window's load changes by at most its length (in event slots) times the largest
        change of one charge. When the weights of a layer change (fine-tuning), the peak
        loads of an earlier version plus that bound often prove that no input can pass the
        linear load, which spares the exact computation: the outcome is the same. The first
        version stores nothing (a layer that never changes costs no extra memory).
        """
        chip = self.chip
        operator, length = fixed.window_operators.get(layer.num_sends, (None, 0.0))
        if operator is None:
            operator = window_operator(layout, self._window, layer.num_sends)
            length = float(operator.sum(2).max()) if operator.numel() else 0.0
            fixed.window_operators[layer.num_sends] = (operator, length)
        limit = chip.analog.synin_linear_load / chip.input_max  # per unit input
        base = previous.base if previous is not None else None
        if base is not None and previous.fixed is fixed and previous.num_sends == layer.num_sends:
            drift = float((charge - base.charge).abs_().max())
            if (base.peak_max + length * drift) * _BOUND_MARGIN <= limit:
                return None, base
        peak = _peak_window_load(charges, layout, operator=operator)
        peak_max = float(peak.max()) if peak.numel() else 0.0
        if peak_max > limit:
            return peak, None
        return None, (_PeakBase(charge, peak_max) if previous is not None else None)


def _knee_loss(excess: torch.Tensor, headroom: float) -> torch.Tensor:
    """What the rational knee removes from a value ``excess`` beyond its linear limit.

    The knee maps ``limit + e`` to ``limit + headroom * e / (headroom + e)``: slope 1 at the
    limit, approaching ``limit + headroom``; the difference is ``e**2 / (headroom + e)``.
    """
    return excess.square() / (excess + headroom)


def window_operator(layout: ChunkLayout, window: float, num_sends: int) -> torch.Tensor:
    """The windows of ``window`` event slots as weights on a chunk's positions, per run.

    ``(R, n_max, n_max)``: entry ``[r, j, i]`` is how much of position ``i``'s charge falls
    into the window that ends with the ``j``-th event of run ``r``'s last send. Events arrive
    in ``layout.time_order`` and the event train of a run is the chunk's rows repeated
    ``num_sends`` times, with silence before it. The busiest window ends in the last send: it
    holds ``periods`` whole repetitions and a partial window ending at one of its slots,
    which reaches into the send before if there is one left before the whole periods (else
    into the silence). A fractional window counts its oldest slot partly.
    """
    n_chunks, n_max = layout.n_chunks, layout.n_max
    operator = np.zeros((n_chunks, n_max, n_max))
    time_order = layout.time_order.numpy()
    for r, (start, stop) in enumerate(layout.row_chunks):
        rows = stop - start
        length = min(window, float(num_sends * rows))
        periods = int(length // rows)
        partial = length - periods * rows
        whole = int(partial)
        wraps = periods + 1 < num_sends
        coef = np.full((rows, rows), float(periods))  # [end slot, slot], both in time order
        ends = np.arange(rows)
        # the partial window: ``whole`` slots ending at ``end``, then a fraction of one more
        for back in range(whole + 1):
            share = 1.0 if back < whole else partial - whole
            slots = ends - back
            keep = (slots >= 0) | wraps
            coef[ends[keep], slots[keep] % rows] += share
        operator[r, :rows][:, time_order[r, :rows]] = coef  # columns: positions, not slots
    return torch.from_numpy(operator.astype(np.float32))


def _peak_window_load(
    charges: torch.Tensor,
    layout: ChunkLayout,
    window: float | None = None,
    num_sends: int | None = None,
    operator: torch.Tensor | None = None,
) -> torch.Tensor:
    """Largest sum of event charges inside a window of ``window`` event slots, per column.

    ``charges`` is ``(P, R, n_max, C)`` in the layout's row order (non-negative); the result
    is ``(P, R, C)``. Give ``operator`` (:func:`window_operator`) or ``window`` and
    ``num_sends``.
    """
    if operator is None:
        assert window is not None and num_sends is not None
        operator = window_operator(layout, window, num_sends)
    return torch.matmul(operator, charges).amax(2)
