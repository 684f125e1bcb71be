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

- a *run* is one event train of one input vector part through the rows of one row chunk in
  one chip load; the tiles of that row chunk placed in the same load (on different halves, or
  side by side on one half) receive the same events and integrate at the same time. A row
  chunk whose column tiles span several loads needs one run per load;
- ``runs_per_sample = vectors_per_sample * parts * runs_per_vector`` with ``parts`` 2 for the
  ``split`` signed-input strategy (positive and negative parts run separately), else 1, and
  ``runs_per_vector`` the number of distinct ``(row chunk, load)`` pairs among the tiles;
- the time of one run is :meth:`ChipSpec.time_us_per_run` at the profile's ``wait_cycles``;
  runs follow one another, so a layer's time per sample is the sum over its runs;
- energy is the chip power times time (:meth:`ChipSpec.energy_uj_per_run`);
- with more than one chip load, a batch of ``batch_size`` samples runs load by load, so every
  batch rewrites the weights ``loads`` times; that time and energy are amortized over the
  batch. With a single load the weights are written once, before the first sample: a one-time
  cost reported apart, not per sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from anacc.compiler.program import Program, ProgramLayer

DEFAULT_BATCH_SIZE = 256  # samples per batch, as in ``anacc run``; not a chip property
ACTIVE_ASSUMED = "assumed: all inputs of every run active"
ACTIVE_MEASURED = "measured: mean non-zero inputs per run on the data"


@dataclass(frozen=True)
class LayerCost:
    """How one analog layer maps onto the chip and what a sample costs there.

    ``rows_used`` counts signed input rows (row pairs on a chip with two rows per signed
    weight) summed over the layer's tiles, ``columns_used`` output columns summed over its
    tiles; the capacities are the same sums for full tiles. ``utilization`` is the fraction of
    the tiles' weight capacity holding a model weight (``weights``: ``in * out``, divided by
    the group count for a grouped convolution, whose other blocks hold structural zeros).
    ``active_inputs[part][chunk]`` is the mean
    number of non-zero inputs of a run of that input part and row chunk (chunks in
    ``AnalogLayer.row_chunks`` order).
    """

    name: str
    op: str
    kernel: tuple[int, ...] | None
    in_features: int
    out_features: int
    row_chunks: int
    col_chunks: int
    tiles: int
    loads: tuple[int, ...]
    rows_used: int
    row_capacity: int
    columns_used: int
    column_capacity: int
    weights: int
    utilization: float
    vectors_per_sample: int
    parts: int
    runs_per_vector: int
    runs_per_sample: int
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


@dataclass(frozen=True)
class ProgramCost:
    """Model totals; see the module docstring for how weight rewrites enter."""

    layers: tuple[LayerCost, ...]
    tiles: int
    loads: int
    weights: int
    tile_capacity: int
    utilization: float
    chip_utilization: float
    runs_per_sample: int
    batch_size: int
    wait_cycles: int
    analog_time_us_per_sample: float
    weight_write_us_per_sample: float
    time_us_per_sample: float
    analog_energy_uj_per_sample: float
    weight_write_energy_uj_per_sample: float
    energy_uj_per_sample: float
    weight_write_us_once: float
    weight_write_energy_uj_once: float

    @property
    def samples_per_second(self) -> float:
        return 1e6 / self.time_us_per_sample if self.time_us_per_sample > 0 else float("inf")


def parts_of(layer: ProgramLayer) -> int:
    """Input parts per vector: 2 for ``split`` (positive and negative runs), else 1."""
    return 2 if layer.signed == "split" else 1


def run_groups(layer: ProgramLayer) -> list[tuple[int, int]]:
    """``(row chunk index, load)`` of every run of one input vector part, in load order."""
    chunk_index = {rows: i for i, rows in enumerate(layer.analog.row_chunks)}
    groups = {(chunk_index[t.rows], t.load) for t in layer.analog.tiles}
    return sorted(groups, key=lambda g: (g[1], g[0]))


def layer_cost(
    program: Program,
    layer: ProgramLayer,
    vectors_per_sample: int,
    active_inputs: Sequence[Sequence[float]] | None = None,
) -> LayerCost:
    """The :class:`LayerCost` of ``layer``; ``active_inputs[part][chunk]`` as in the class."""
    chip = program.chip
    wait_cycles = program.chip.profile(program.profile).wait_cycles
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
    groups = run_groups(layer)
    time_per_vector = sum(
        chip.time_us_per_run(active[p][chunk], a.num_sends, wait_cycles)
        for p in range(parts)
        for chunk, _load in groups
    )
    time_us = vectors_per_sample * time_per_vector
    n_tiles = len(a.tiles)
    rows_used = sum(t.n_rows for t in a.tiles)
    columns_used = sum(t.n_cols for t in a.tiles)
    capacity = n_tiles * chip.signed_inputs_per_run * chip.outputs_per_run
    conv = layer.conv
    weights = conv.weights if conv is not None else a.in_features * a.out_features
    return LayerCost(
        name=layer.name,
        op="conv" if conv is not None else "dense",
        kernel=conv.kernel_shape if conv is not None else None,
        in_features=a.in_features,
        out_features=a.out_features,
        row_chunks=len(chunks),
        col_chunks=len(a.col_chunks),
        tiles=n_tiles,
        loads=tuple(sorted({t.load for t in a.tiles})),
        rows_used=rows_used,
        row_capacity=n_tiles * chip.signed_inputs_per_run,
        columns_used=columns_used,
        column_capacity=n_tiles * chip.outputs_per_run,
        weights=weights,
        utilization=weights / capacity,
        vectors_per_sample=vectors_per_sample,
        parts=parts,
        runs_per_vector=len(groups),
        runs_per_sample=vectors_per_sample * parts * len(groups),
        num_sends=int(a.num_sends),
        signed=layer.signed,
        signed_reason=layer.signed_reason,
        input_scale=layer.input_scale,
        input_offset=float(layer.input_offset),
        weight_scale_min=float(np.min(layer.weight_scale)),
        weight_scale_max=float(np.max(layer.weight_scale)),
        row_order=layer.row_order,
        gain_reason=layer.gain_reason,
        active_inputs=active,
        active_inputs_source=source,
        time_us_per_sample=time_us,
        energy_uj_per_sample=chip.chip_power_w * time_us,
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
    layers = tuple(
        layer_cost(
            program,
            layer,
            vectors_per_sample[name],
            None if active_inputs is None else active_inputs[name],
        )
        for name, layer in program.layers.items()
    )
    loads = 1 + max(
        (t.load for lay in program.layers.values() for t in lay.analog.tiles), default=-1
    )
    tiles = sum(c.tiles for c in layers)
    weights = sum(c.weights for c in layers)
    per_tile = chip.signed_inputs_per_run * chip.outputs_per_run
    analog_us = sum(c.time_us_per_sample for c in layers)
    rewrites_per_batch = loads if loads > 1 else 0
    write_us = rewrites_per_batch * chip.weight_write_us_per_load / batch_size
    write_uj = rewrites_per_batch * chip.energy_uj_per_load() / batch_size
    analog_uj = sum(c.energy_uj_per_sample for c in layers)
    once = loads == 1
    return ProgramCost(
        layers=layers,
        tiles=tiles,
        loads=loads,
        weights=weights,
        tile_capacity=tiles * per_tile,
        utilization=weights / (tiles * per_tile) if tiles else 0.0,
        chip_utilization=weights / (loads * chip.halves * per_tile) if loads else 0.0,
        runs_per_sample=sum(c.runs_per_sample for c in layers),
        batch_size=batch_size,
        wait_cycles=chip.profile(program.profile).wait_cycles,
        analog_time_us_per_sample=analog_us,
        weight_write_us_per_sample=write_us,
        time_us_per_sample=analog_us + write_us,
        analog_energy_uj_per_sample=analog_uj,
        weight_write_energy_uj_per_sample=write_uj,
        energy_uj_per_sample=analog_uj + write_uj,
        weight_write_us_once=chip.weight_write_us_per_load if once else 0.0,
        weight_write_energy_uj_once=chip.energy_uj_per_load() if once else 0.0,
    )
