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
matmul for the charges (for a block-diagonal layer, whose runs hold mostly zero weights, one
per nonzero block when that costs less: the same charges), then the readout (noise, offset,
saturation, ADC) in one compiled pass over the reads
(:mod:`~anacc.runtime.backends.readout`). What a layer's layout picks out of the chip
instance is built once per layout; the tensors derived from the weights (effective weights,
the noise variance per active input, peak window loads, the nonzero blocks) once per layer
version. The readout turns a run's variance into the sigma for its number of
active inputs the first time a call meets that number (a table the size of the weights, kept
per layer, would cost as much memory as the effective weights).
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
_NO_COLUMNS = np.zeros(0, dtype=np.int64)
# no earlier charges to compare a new version's with
_NO_CHARGE = np.zeros((0, 0, 0), np.float32)


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

    peak_load: np.ndarray  # (2, R, C): peak window load per unit input
    spread_load: np.ndarray  # (2, R, C): rho * largest synapse charge
    kappa: np.ndarray  # (2, R, C): load in units of the linear load per output LSB
    inv_kappa: np.ndarray  # (2, R, C): 1 / kappa, 0 where kappa is 0


@dataclass(frozen=True)
class _FixedPattern:
    """What a layer's layout picks out of the chip instance; built once per layout."""

    gains: np.ndarray  # (R, C): the gain of each column's neuron
    weight2_per_row: np.ndarray  # (R,): noise per_event_weight2 / rows of the run
    gather: np.ndarray  # (R, n_max) int64: the weight row of each position (in_features: none)
    # what the readout reads: the neurons' offset, saturation_high and saturation_low (R, Cp),
    # padded to the run buffers' width (padded_columns): offset 0, limits that a padded read
    # (always 0) stays inside
    tables: tuple[np.ndarray, ...]
    # by num_sends: window_plan and its longest window (in event slots)
    window_plans: dict[int, tuple[np.ndarray, float]]
    # _synapse_gains, kept once the layer's weights change (it is as large as two weight
    # matrices; a layer that never changes does not keep it)
    synapse: list[np.ndarray]


@dataclass(frozen=True)
class _PeakBase:
    """The signed charges ``(R, n_max, C)`` of a version and its largest peak load."""

    charge: np.ndarray
    peak_max: float


@dataclass(frozen=True)
class _Blocks:
    """The nonzero blocks of a layer's effective weights ``(R, n, Cp)``: per block its run,
    columns ``c0:c1`` and the positions ``k0:k1`` outside which its weights are zero.

    A grouped convolution maps block-diagonally, so most of its runs' columns hold only zero
    weights (a run of about 128 rows of a 24-group 3x3 convolution, 144 rows a group, feeds
    one or two of its 24 column groups). Their charges are exactly zero; the matmul of the
    nonzero blocks alone gives the same charges, without the products of the zeros. The
    reads, with their noise, stay those of every column of every run, as the chip reads
    them (the digital sum leaves out those of runs without weights for a column).
    """

    spans: tuple[tuple[int, int, int, int, int], ...]  # (run, c0, c1, k0, k1)
    area: int  # positions x columns inside the blocks
    full: int  # positions x columns of the runs (R * n * Cp)

    # a block's matmul costs about as much in calls as this many multiply-adds of the
    # batched one (one thread, measured on the emulator's shapes)
    CALL_MACS: ClassVar[int] = 150_000

    @classmethod
    def find(cls, weight: np.ndarray) -> _Blocks | None:
        """The blocks of ``weight``, or None when they cover more than half of it."""
        runs, n, width = weight.shape
        first = np.empty((runs, width), np.int64)
        last = np.empty((runs, width), np.int64)
        readout.nonzero_rows(weight, first, last)
        if 2 * int(np.maximum(last - first + 1, 0).sum()) > runs * n * width:
            return None
        spans = []
        for r in range(runs):
            span = None  # [c0, c1, k0, k1]
            for c in np.flatnonzero(first[r] < n).tolist():
                f, stop = int(first[r, c]), int(last[r, c]) + 1
                # a column joins the block before it if it is adjacent and their positions
                # overlap (the same group), else it starts a block
                if span is not None and span[1] == c and f < span[3] and stop > span[2]:
                    span[1], span[2], span[3] = c + 1, min(span[2], f), max(span[3], stop)
                    continue
                if span is not None:
                    spans.append((r, *span))
                span = [c, c + 1, f, stop]
            if span is not None:
                spans.append((r, *span))
        area = sum((c1 - c0) * (k1 - k0) for _, c0, c1, k0, k1 in spans)
        if 2 * area > runs * n * width:
            return None
        return cls(tuple(spans), area, runs * n * width)

    def pays(self, batch: int) -> bool:
        """Whether the blocks' matmuls cost less than the whole one for ``batch`` vectors."""
        return batch * (self.full - self.area) > self.CALL_MACS * len(self.spans)

    def matmul(self, out: torch.Tensor, xc: torch.Tensor, weight: torch.Tensor) -> None:
        """``out`` ``(R, B, Cp)`` = ``xc`` ``(R, B, n)`` @ ``weight``: zero, then each block."""
        out.zero_()
        for r, c0, c1, k0, k1 in self.spans:
            out[r, :, c0:c1].addmm_(xc[r, :, k0:k1], weight[r, k0:k1, c0:c1], beta=0.0)


@dataclass(frozen=True)
class _EmulatedLayer:
    """Per-layer tensors of the model; ``(R, 1, C)`` ones broadcast over ``(R, B, C)``."""

    # (R, n_max, Cp): effective weight, output LSB per input unit (0 on padded columns)
    weight: torch.Tensor
    fixed: _FixedPattern
    num_sends: int
    # None unless some input can pass the synaptic linear load
    saturation: _Saturation | None
    base: _PeakBase | None  # bounds the peak loads of the next version
    # what the readout reads: the noise variance per active input (R, C) (the readout
    # takes the sigma for a run's number of active inputs from it), then the fixed
    # pattern's tables
    tables: tuple[np.ndarray, ...]
    # where the charges can be nonzero, when that is a small part of the runs (a grouped
    # convolution's diagonal blocks): see _Blocks
    blocks: _Blocks | None = None


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
        self._limits = np.array(
            [a.saturation_headroom_lsb, chip.adc_min, chip.adc_max, profile.noise_terms.readout],
            np.float32,
        )
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
        if d.blocks is not None and d.blocks.pays(batch):
            d.blocks.matmul(out, xc, d.weight)
        else:
            out.baddbmm_(xc, d.weight, beta=0.0)
        # the inputs sample-major (B, R, n), like the reads: contiguous for the compiled
        # loops (chunk_inputs' view is a transpose of contiguous memory)
        xs_np = np.ascontiguousarray(xc.transpose(0, 1).numpy())
        if d.saturation is not None:
            cols, lost = self._dynamic_saturation(xc, xs_np, d.weight, d.saturation)
        else:
            cols, lost = _NO_COLUMNS, np.empty((batch, n_chunks, 0), np.float32)
        if profiler is not None:
            profiler.lap("analog kernel")
        common = (cols, lost, *d.tables, self._limits)
        reads = buffer.numpy()
        if self.fast_noise:
            bits, where, values = self._normals.parts(buffer.numel(), trial)
            if profiler is not None:
                profiler.lap("noise")
            table = self._normals.table_values
            readout.readout_table(reads, xs_np, bits, table, where, values, *common)
        else:  # run-major at the unpadded width: the stream of earlier versions
            normals = torch.zeros(batch, n_chunks, width)
            normals.transpose(0, 1)[..., : layer.out_features] = torch.randn(
                (n_chunks, batch, layer.out_features),
                generator=torch.Generator().manual_seed(trial),
            )
            if profiler is not None:
                profiler.lap("noise")
            readout.readout_normals(reads, xs_np, normals.numpy(), *common)
        if profiler is not None:
            profiler.lap("analog kernel")
        return out if width == layer.out_features else out[..., : layer.out_features]

    def _dynamic_saturation(
        self, xc: torch.Tensor, xs_np: np.ndarray, weight: torch.Tensor, d: _Saturation
    ) -> tuple[np.ndarray, np.ndarray]:
        """What the compression of the charge takes away, for the columns whose synaptic input
        load may pass its linear range: ``(cols, lost)``, ``lost`` ``(B, R, len(cols))``
        (the readout subtracts it after adding the noise: the float order of the torch form
        it replaced).

        The load of a column in a run is at most ``input_max * peak_load`` and at most
        ``sum(x) * spread_load``; only columns where that bound passes the linear load get
        the exact per-sample computation (one extra matmul over those columns).
        """
        chip = self.chip
        factors = np.array([chip.input_max, chip.analog.synin_linear_load], np.float32)
        found = readout.saturating_columns(xs_np, d.peak_load, d.spread_load, factors)
        lost = np.empty((xc.shape[1], xc.shape[0], found.size), np.float32)
        if found.size == 0:
            return found, lost
        # the signed charges of the columns, then their totals, in one matmul padded to the
        # width the BLAS kernel runs fast at (for fewer than 16 columns MKL's kernel took
        # several times as long as for 16)
        k = found.size
        w = weight.numpy()
        both = np.zeros((w.shape[0], w.shape[1], padded_columns(2 * k)), np.float32)
        both[..., :k] = w[..., found]
        np.abs(both[..., :k], out=both[..., k : 2 * k])
        charge = torch.bmm(xc, torch.from_numpy(both))
        headroom = chip.analog.synin_headroom
        readout.saturation_loss(found, charge.numpy(), d.kappa, d.inv_kappa, headroom, lost)
        return found, lost

    def _synapse_gains(self, layout: ChunkLayout) -> np.ndarray:
        """``(2, R, n_max, C)``: the synapse gain of the (+, -) row of each position."""
        chip = self.chip
        table = self.instance.synapse_gain  # (halves, rows_per_half, columns_per_half)
        row_size = chip.columns_per_half
        pair = chip.rows_per_signed_weight
        # the flat index of the synapse on the tile column's first row (row pair row_base)
        column_base = (
            layout.half * chip.rows_per_half + pair * layout.row_base
        ) * row_size + layout.neuron
        out = np.empty((2, layout.n_chunks, layout.n_max, layout.out_features), np.float32)
        readout.synapse_gains(
            table.numpy().reshape(-1),
            np.ascontiguousarray(column_base.numpy(), dtype=np.int64),
            np.ascontiguousarray(layout.slot.numpy(), dtype=np.int64),
            np.array([pair, row_size], dtype=np.int64),
            out,
        )
        return out

    def _fixed_pattern(self, layout: ChunkLayout) -> _FixedPattern:
        inst = self.instance
        half, neuron = layout.half, layout.neuron  # (R, C)
        high = inst.saturation_high[half, neuron]
        low = inst.saturation_low[half, neuron]
        extra = padded_columns(layout.out_features) - layout.out_features

        def padded(t: torch.Tensor, value: float) -> np.ndarray:
            return torch.nn.functional.pad(t, (0, extra), value=value).numpy()

        weight2 = self._noise_terms.per_event_weight2 / layout.chunk_rows.to(torch.float32)
        return _FixedPattern(
            gains=inst.neuron_gain[half, neuron].numpy(),
            weight2_per_row=weight2.numpy(),
            gather=np.ascontiguousarray(layout.gather.numpy(), dtype=np.int64),
            tables=(
                padded(inst.neuron_offset[half, neuron], 0.0),
                padded(high, float(high.max())),
                padded(low, float(low.min())),
            ),
            window_plans={},
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
        if fixed.synapse:
            synapse = fixed.synapse[0]
        else:
            synapse = self._synapse_gains(layout)
            if previous is not None:
                fixed.synapse.append(synapse)
        n_units, n_max, columns = synapse.shape[1:]
        width = padded_columns(columns)
        # the + and - parts of the charge, each >= 0, in units of input x weight, times the
        # synapse gains; the signed charge; the effective weight (output LSB per input unit,
        # 0 on padded columns); the noise variance per active input of each run's columns;
        # one compiled pass over the layer's integer weights
        charges = np.empty((2, n_units, n_max, columns), np.float32)
        charge = np.empty((n_units, n_max, columns), np.float32)
        weight = np.empty((n_units, n_max, width), np.float32)
        variance = np.empty((n_units, columns), np.float32)
        factors = np.array(
            [self.gain_per_send * layer.num_sends, self._noise_terms.per_event, layer.num_sends],
            dtype=np.float32,
        )
        base = None
        if (
            previous is not None
            and previous.fixed is fixed
            and previous.num_sends == layer.num_sends
        ):
            base = previous.base
        drift = readout.derive_charges(
            np.ascontiguousarray(layer.weight_q),
            fixed.gather,
            synapse,
            fixed.gains,
            factors,
            fixed.weight2_per_row,
            charges,
            charge,
            weight,
            variance,
            _NO_CHARGE if base is None else base.charge,
        )
        peak, base = self._peak_loads(layer, layout, fixed, charges, charge, previous, base, drift)
        saturation = None
        if peak is not None:
            total = torch.from_numpy(charges).sum(2).numpy()  # torch's summation order
            kappa, inv_kappa, spread = (np.empty_like(peak) for _ in range(3))
            factors = np.array(
                [self.gain_per_send * layer.num_sends, self.chip.analog.synin_linear_load],
                dtype=np.float32,
            )
            readout.saturation_terms(
                peak, total, charges, fixed.gains, factors, kappa, inv_kappa, spread
            )
            saturation = _Saturation(
                peak_load=peak, spread_load=spread, kappa=kappa, inv_kappa=inv_kappa
            )
        return _EmulatedLayer(
            weight=torch.from_numpy(weight),
            fixed=fixed,
            num_sends=layer.num_sends,
            saturation=saturation,
            base=base,
            tables=(variance, *fixed.tables),
            blocks=_Blocks.find(weight),
        )

    def _peak_loads(
        self,
        layer: AnalogLayer,
        layout: ChunkLayout,
        fixed: _FixedPattern,
        charges: np.ndarray,
        charge: np.ndarray,
        previous: _EmulatedLayer | None,
        base: _PeakBase | None,
        drift: float,
    ) -> tuple[np.ndarray | None, _PeakBase | None]:
        """The peak window loads ``(2, R, C)`` if some input can pass the synaptic linear
        load (else None), and what bounds the loads of the next version; ``base``: the
        bound of an earlier version of the same layout and ``num_sends`` (or None), ``drift``
        the largest change of one charge since.

        A window's load changes by at most its length (in event slots) times the largest
        change of one charge. When the weights of a layer change (fine-tuning), the peak
        loads of an earlier version plus that bound often prove that no input can pass the
        linear load, which spares the exact computation: the outcome is the same. The first
        version stores nothing (a layer that never changes costs no extra memory).
        """
        chip = self.chip
        plan_length = fixed.window_plans.get(layer.num_sends)
        if plan_length is None:
            plan_length = window_plan(layout, self._window, layer.num_sends)
            fixed.window_plans[layer.num_sends] = plan_length
        plan, length = plan_length
        limit = chip.analog.synin_linear_load / chip.input_max  # per unit input
        if base is not None and (base.peak_max + length * drift) * _BOUND_MARGIN <= limit:
            return None, base
        peak = _peak_window_load(charges, layout, plan)
        peak_max = float(peak.max()) if peak.size else 0.0
        if peak_max > limit:
            return peak, None
        return None, (_PeakBase(charge, peak_max) if previous is not None else None)


def window_plan(layout: ChunkLayout, window: float, num_sends: int) -> tuple[np.ndarray, float]:
    """Where the busiest windows of ``window`` event slots fall in each run, for
    :func:`~anacc.runtime.backends.readout.peak_windows`; and the longest window (in slots).

    ``(R, 5)`` float64 per run: ``(rows, periods, whole, frac, wraps)``. The event train of a
    run is the chunk's rows (in ``layout.time_order``) repeated ``num_sends`` times, with
    silence before it. The busiest window ends in the last send: it holds ``periods`` whole
    repetitions and a partial window of ``whole`` slots ending at one of its slots plus
    ``frac`` of the slot before them, which reaches into the send before if there is one left
    before the whole periods (``wraps``), else into the silence.
    """
    plan = np.zeros((layout.n_chunks, 5))
    longest = 0.0
    for r, (start, stop) in enumerate(layout.row_chunks):
        rows = stop - start
        length = min(window, float(num_sends * rows))
        periods = int(length // rows)
        partial = length - periods * rows
        whole = int(partial)
        plan[r] = (rows, periods, whole, partial - whole, periods + 1 < num_sends)
        longest = max(longest, length)
    return plan, longest


def _peak_window_load(charges: np.ndarray, layout: ChunkLayout, plan: np.ndarray) -> np.ndarray:
    """Largest sum of event charges inside a window, per column (see :func:`window_plan`).

    ``charges`` is ``(P, R, n_max, C)`` in the layout's row order (non-negative); the result
    is ``(P, R, C)``.
    """
    parts, runs, _, columns = charges.shape
    peak = np.empty((parts, runs, columns), np.float32)
    order = layout.time_order.numpy().astype(np.int64, copy=False)
    readout.peak_windows(np.ascontiguousarray(charges, np.float32), order, plan, peak)
    return peak
