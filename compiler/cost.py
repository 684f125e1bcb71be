"""Mapping and cost figures of a compiled program: tiles, runs, time and energy per sample.

Everything here follows from the program (its analog layers and tile tables) and the chip
description embedded in it; nothing is measured. Two inputs come from outside because they
depend on the data flowing through the model, not on the mapping:

- ``vectors_per_sample``: how many input vectors one sample sends to each analog layer (1 for a
  dense layer on a flat input, the number of output positions for a convolution);
- ``active_inputs`` (optional): per layer, per input part and per row chunk, the mean number
  of non-zero chip inputs of one run. Without it every input of a run is assumed active,
  which gives the longest event trains and so an upper bound on time and energy.

Definitions (docs/report.md explains them with worked examples):

- a *run* is one event train through the tiles the placement fires together (one run of the
  layer's run pattern, :mod:`anacc.compiler.placement`); one cycle of the pattern processes
  ``copies`` input vector parts, so ``runs_per_sample = ceil(vectors * parts / copies) *
  runs_per_cycle`` with ``parts`` 2 for the ``split`` strategy, else 1;
- the time of a run is :meth:`ChipSpec.time_us_per_run` for the events of all its tiles
  (the active inputs of each distinct (copy, row chunk) it holds, sent one after another);
- chips: the loads are spread over the program's chips (consecutive loads per chip). A chip
  with one load keeps its weights (written once, before the first sample: a one-time cost
  reported apart); a chip with several loads rewrites them every batch of ``batch_size``
  samples, amortized per sample. Chips are pipeline stages: the latency of a sample is the sum
  of all runs, the throughput one sample per *period*, the busiest chip's time per sample;
- chip-only energy: every chip in use draws ``chip_power_w`` while it runs and
  ``idle_power_w`` for the rest of the period;
- system: each run also moves its inputs and reads between host and chip
  (``link_us_per_run``), and the system (FPGA board, host share) draws ``system_power_w``
  over the system time. All of these constants are documented estimates in the chip file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from anacc.compiler.placement import Geometry, LayerDemand, lower_bound_runs
from anacc.compiler.program import Program, ProgramLayer

DEFAULT_BATCH_SIZE = 256  # samples per batch, as in ``anacc run``; not a chip property
ACTIVE_ASSUMED = "assumed: all inputs of every run active"
ACTIVE_MEASURED = "measured: mean non-zero inputs per run on the data"


@dataclass(frozen=True)
class LayerCost:
    """How one analog layer maps onto the chip and what a sample costs there.

    ``rows_used`` counts signed input rows (row pairs) summed over the layer's tiles,
    ``columns_used`` the neurons its tiles own; the capacities are a full half's rows per
    tile and its neurons. ``utilization`` is the share of the synapses in the layer's neurons'
    columns that hold a model weight (``weights``: ``in * out``, divided by the group count for
    a grouped convolution, times the copies). ``active_inputs[part][chunk]`` is the mean
    number of non-zero inputs of a run of that input part and row chunk.
    """

    name: str
    op: str
    kernel: tuple[int, ...] | None
    in_features: int
    out_features: int
    row_chunks: int
    col_chunks: int
    copies: int
    tiles: int
    loads: tuple[int, ...]
    chips: tuple[int, ...]
    rows_used: int
    row_capacity: int
    columns_used: int
    column_capacity: int
    weights: int
    utilization: float
    vectors_per_sample: int
    parts: int
    runs_per_cycle: int
    runs_per_sample: int
    lower_bound_runs: int
    num_sends: int
    signed: str
    signed_reason: str
    input_scale: float | None
    input_offset: float
    weight_scale_min: float
    weight_scale_max: float
    row_order: str
    gain_reason: str
    active_inputs: tuple[tuple[float, ...], ...]
    active_inputs_source: str
    time_us_per_sample: float
    energy_uj_per_sample: float
    time_us_per_chip: tuple[float, ...]  # this layer's time per sample on each chip


@dataclass(frozen=True)
class ProgramCost:
    """Model totals; see the module docstring for chips, rewrites and the system."""

    layers: tuple[LayerCost, ...]
    tiles: int
    loads: int
    chips: int
    load_chip: tuple[int, ...]
    placement: str
    weights: int
    utilization: float
    runs_per_sample: int
    lower_bound_runs: int
    batch_size: int
    wait_cycles: int
    analog_time_us_per_sample: float
    weight_write_us_per_sample: float
    time_us_per_sample: float
    period_us: float
    chip_busy_us: tuple[float, ...]
    energy_uj_per_sample: float
    weight_write_energy_uj_per_sample: float
    weight_write_us_once: float
    weight_write_energy_uj_once: float
    link_us_per_sample: float
    system_time_us_per_sample: float
    system_energy_uj_per_sample: float

    @property
    def samples_per_second(self) -> float:
        """Pipelined throughput: one sample per period of the busiest chip."""
        return 1e6 / self.period_us if self.period_us > 0 else float("inf")

    @property
    def chip_utilization(self) -> float:
        return self.utilization


def parts_of(layer: ProgramLayer) -> int:
    """Input parts per vector: 2 for ``split`` (positive and negative runs), else 1."""
    return 2 if layer.signed == "split" else 1


def load_chips(loads: int, chips: int) -> tuple[int, ...]:
    """The chip of each load: consecutive loads per chip."""
    per_chip = math.ceil(loads / chips) if loads else 1
    return tuple(min(i // per_chip, chips - 1) for i in range(loads))


def _run_events(layer: ProgramLayer, active: Sequence[Sequence[float]]) -> dict[int, float]:
    """Per run of the pattern: the events of one cycle (mean over the input parts)."""
    chunk_index = {rows: i for i, rows in enumerate(layer.analog.row_chunks)}
    units: dict[int, set[tuple[int, int]]] = {}
    for t in layer.analog.tiles:
        units.setdefault(t.run, set()).add((t.copy, chunk_index[t.rows]))
    parts = len(active)
    return {
        run: sum(sum(active[p][r] for p in range(parts)) / parts for _, r in held)
        for run, held in units.items()
    }


def layer_cost(
    program: Program,
    layer: ProgramLayer,
    vectors_per_sample: int,
    active_inputs: Sequence[Sequence[float]] | None = None,
    load_chip: Sequence[int] = (0,),
) -> LayerCost:
    """The :class:`LayerCost` of ``layer``; ``active_inputs[part][chunk]`` as in the class."""
    chip = program.chip
    wait_cycles = chip.profile(program.profile).wait_cycles
    a = layer.analog
    chunks = a.row_chunks
    parts = parts_of(layer)
    if active_inputs is None:
        active = tuple(tuple(float(b - s) for s, b in chunks) for _ in range(parts))
        source = ACTIVE_ASSUMED
    else:
        active = tuple(tuple(float(v) for v in part) for part in active_inputs)
        assert len(active) == parts and all(len(p) == len(chunks) for p in active), (
            f"{layer.name}: active inputs need {parts} part(s) x {len(chunks)} chunk(s)"
        )
        source = ACTIVE_MEASURED
    copies = a.copies
    cycles = math.ceil(vectors_per_sample * parts / copies)
    run_load = {t.run: t.load for t in a.tiles}
    per_chip = [0.0] * (1 + max(load_chip, default=0))
    for run, events in _run_events(layer, active).items():
        per_chip[load_chip[run_load[run]]] += cycles * chip.time_us_per_run(
            events, a.num_sends, wait_cycles
        )
    time_us = sum(per_chip)
    n_tiles = len(a.tiles)
    conv = layer.conv
    weights = conv.weights if conv is not None else a.in_features * a.out_features
    columns = sum(t.n_cols for t in a.tiles)
    geo = Geometry(chip.halves, chip.signed_inputs_per_run, chip.outputs_per_run)
    demand = LayerDemand(layer.name, tuple(chunks), tuple(a.col_chunks), vectors_per_sample * parts)
    return LayerCost(
        name=layer.name,
        op="conv" if conv is not None else "dense",
        kernel=conv.kernel_shape if conv is not None else None,
        in_features=a.in_features,
        out_features=a.out_features,
        row_chunks=len(chunks),
        col_chunks=len(a.col_chunks),
        copies=copies,
        tiles=n_tiles,
        loads=tuple(sorted({t.load for t in a.tiles})),
        chips=tuple(sorted({load_chip[t.load] for t in a.tiles})),
        rows_used=sum(t.n_rows for t in a.tiles),
        row_capacity=n_tiles * chip.signed_inputs_per_run,
        columns_used=columns,
        column_capacity=n_tiles * chip.outputs_per_run,
        weights=weights * copies,
        utilization=weights * copies / (columns * chip.signed_inputs_per_run),
        vectors_per_sample=vectors_per_sample,
        parts=parts,
        runs_per_cycle=a.runs_per_cycle,
        runs_per_sample=cycles * a.runs_per_cycle,
        lower_bound_runs=lower_bound_runs(demand, geo),
        num_sends=int(a.num_sends),
        signed=layer.signed,
        signed_reason=layer.signed_reason,
        input_scale=layer.input_scale,
        input_offset=float(layer.input_offset),
        weight_scale_min=float(min(layer.weight_scale)),
        weight_scale_max=float(max(layer.weight_scale)),
        row_order=layer.row_order,
        gain_reason=layer.gain_reason,
        active_inputs=active,
        active_inputs_source=source,
        time_us_per_sample=time_us,
        energy_uj_per_sample=chip.chip_power_w * time_us,
        time_us_per_chip=tuple(per_chip),
    )


def program_cost(
    program: Program,
    vectors_per_sample: Mapping[str, int],
    *,
    active_inputs: Mapping[str, Sequence[Sequence[float]]] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ProgramCost:
    """Per-layer costs and model totals for batches of ``batch_size`` samples."""
    assert batch_size >= 1, "batch_size must be at least 1"
    chip = program.chip
    chips = int(program.options.get("chips", 1))
    loads = program.loads
    load_chip = load_chips(loads, chips)
    layers = tuple(
        layer_cost(
            program,
            layer,
            vectors_per_sample[name],
            None if active_inputs is None else active_inputs[name],
            load_chip,
        )
        for name, layer in program.layers.items()
    )
    loads_on = [load_chip.count(c) for c in range(chips)]
    busy = [0.0] * chips
    write_us = [0.0] * chips
    for c in range(chips):
        busy[c] = sum(lc.time_us_per_chip[c] for lc in layers if c < len(lc.time_us_per_chip))
        if loads_on[c] > 1:  # rewritten every batch
            write_us[c] = loads_on[c] * chip.weight_write_us_per_load / batch_size
    used = [c for c in range(chips) if loads_on[c]]
    stage = [busy[c] + write_us[c] for c in range(chips)]
    period = max((stage[c] for c in used), default=0.0)
    analog_us = sum(busy)
    writes = sum(write_us)
    run_energy = sum(
        chip.chip_power_w * stage[c] + chip.idle_power_w * (period - stage[c]) for c in used
    )
    write_uj = chip.chip_power_w * writes
    once = [c for c in used if loads_on[c] == 1]
    runs = sum(lc.runs_per_sample for lc in layers)
    latency = analog_us + writes
    link = runs * chip.link_us_per_run
    system_time = latency + link
    weights = sum(lc.weights for lc in layers)
    capacity = loads * chip.halves * chip.signed_inputs_per_run * chip.outputs_per_run
    return ProgramCost(
        layers=layers,
        tiles=sum(lc.tiles for lc in layers),
        loads=loads,
        chips=chips,
        load_chip=load_chip,
        placement=str(program.options.get("placement", "time")),
        weights=weights,
        utilization=weights / capacity if capacity else 0.0,
        runs_per_sample=runs,
        lower_bound_runs=sum(lc.lower_bound_runs for lc in layers),
        batch_size=batch_size,
        wait_cycles=chip.profile(program.profile).wait_cycles,
        analog_time_us_per_sample=analog_us,
        weight_write_us_per_sample=writes,
        time_us_per_sample=latency,
        period_us=period,
        chip_busy_us=tuple(stage),
        energy_uj_per_sample=run_energy,
        weight_write_energy_uj_per_sample=write_uj,
        weight_write_us_once=len(once) * chip.weight_write_us_per_load,
        weight_write_energy_uj_once=len(once) * chip.energy_uj_per_load(),
        link_us_per_sample=link,
        system_time_us_per_sample=system_time,
        system_energy_uj_per_sample=run_energy + chip.system_power_w * system_time,
    )
