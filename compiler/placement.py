"""Placement: where every tile of every layer sits on the chip, and which tiles fire together.

The tile pass cuts a layer's ``(in, out)`` matrix into row chunks (at most one half's signed
inputs) and column chunks (at most one half's neurons). Placement then decides, per layer,

- ``copies``: how many copies of the matrix sit on the chip; one run computes up to that many
  input vectors (output positions of a convolution, samples of a dense layer), each copy on
  its own synapses and neurons (its own fixed pattern);
- the runs: groups of tiles that fire together. A run drives both halves; per half, the tiles
  of a run take disjoint row-pair ranges (each holds its own input), so small chunks of
  several copies, or several chunks of one vector on the two halves, share one run;
- where each tile sits: half, first row pair, first neuron, chip load. Within a load every
  tile owns its neurons (no two tiles share a column of a half, whatever their rows): weights
  of several layers stay resident side by side and no neuron ever integrates another tile's
  events. Rows are shared between tiles of different runs.

A layer's runs per sample are ``ceil(vectors / copies) * runs_per_cycle``. The objective
(``time`` or ``energy``) spends the columns a load leaves free on copies of the layers whose
runs they shorten most; ``naive`` is the one-tile-per-half mapping without copies or packing
(the baseline of the mapping benchmark). With several chips, ``time`` gives each chip its own
stage of consecutive layers (pipelined: the slowest chip sets the throughput) and ``energy``
uses as few chips as the model needs. :func:`lower_bound_runs` is the chip's bound for a
layer: its input vectors times row chunks over the chunks one run can hold.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from anacc.compiler.mapping import Tile

OBJECTIVES = ("time", "energy", "naive")


@dataclass(frozen=True)
class Geometry:
    """What placement needs of the chip: halves, row pairs and neurons per half."""

    halves: int
    rows: int
    cols: int


@dataclass(frozen=True)
class LayerDemand:
    """One layer to place: its chunks and how many input vectors a sample sends it (input
    parts of a split layer counted)."""

    name: str
    row_chunks: tuple[tuple[int, int], ...]
    col_chunks: tuple[tuple[int, int], ...]
    vectors: int

    @property
    def out_features(self) -> int:
        return self.col_chunks[-1][1]


@dataclass(frozen=True)
class _Bundle:
    """Column tiles of one (copy, row chunk) that fit one half: they fire on the same rows."""

    copy: int
    chunk: int
    cols: tuple[int, ...]  # column chunk indices
    rows: int
    width: int


@dataclass
class _Load:
    """Column usage per half of one chip load."""

    used: list[int]


@dataclass(frozen=True)
class LayerPlacement:
    name: str
    copies: int
    tiles: tuple[Tile, ...]

    @property
    def runs_per_cycle(self) -> int:
        return len({t.run for t in self.tiles})


@dataclass(frozen=True)
class Placement:
    """Every layer's placement, the number of loads, and which chip runs each load."""

    layers: dict[str, LayerPlacement]
    loads: int
    load_chip: tuple[int, ...]
    chips: int
    objective: str
    notes: tuple[str, ...] = field(default=())


def runs_per_sample(vectors: int, copies: int, runs_per_cycle: int) -> int:
    return math.ceil(vectors / copies) * runs_per_cycle


def lower_bound_runs(demand: LayerDemand, geo: Geometry) -> int:
    """The fewest runs per sample any placement on this chip needs for the layer: every
    vector needs each row chunk once, a run holds at most ``halves * (rows // chunk rows)``
    chunks (each needs its own row pairs on a half), and reads at most ``halves * cols``
    neurons (every chunk of every vector needs ``out_features`` of them)."""
    rows = max(b - a for a, b in demand.row_chunks)
    chunks = demand.vectors * len(demand.row_chunks)
    by_rows = math.ceil(chunks / (geo.halves * (geo.rows // rows)))
    by_neurons = math.ceil(chunks * demand.out_features / (geo.halves * geo.cols))
    return max(by_rows, by_neurons)


def _bundles(demand: LayerDemand, copies: int, geo: Geometry) -> list[_Bundle]:
    widths = [b - a for a, b in demand.col_chunks]
    out = []
    for k in range(copies):
        for r, (a, b) in enumerate(demand.row_chunks):
            group: list[int] = []
            width = 0
            for c, w in enumerate(widths):
                if group and width + w > geo.cols:
                    out.append(_Bundle(k, r, tuple(group), b - a, width))
                    group, width = [], 0
                group.append(c)
                width += w
            out.append(_Bundle(k, r, tuple(group), b - a, width))
    return out


def _place_layer(
    demand: LayerDemand, copies: int, geo: Geometry, loads: list[_Load], first_load: int
) -> tuple[list[Tile], int] | None:
    """Tiles of ``copies`` copies, packed into runs and into the loads from ``first_load`` on
    (new loads are added as needed); None if one copy cannot fit an empty load's columns.
    Returns the tiles and the load the layer ended in."""
    tiles: list[Tile] = []
    load = first_load
    run_base = 0
    runs: list[list[int]] = []  # per run of the current load: rows used per half
    placed: list[tuple[_Bundle, int, int, int, int]] = []  # bundle, run, half, row, column
    for bundle in _bundles(demand, copies, geo):
        if bundle.width > geo.cols:
            return None
        while True:
            if load == len(loads):
                loads.append(_Load([0] * geo.halves))
            used = loads[load].used
            halves = [h for h in range(geo.halves) if used[h] + bundle.width <= geo.cols]
            if halves:
                break
            if not any(used) and not placed:
                return None
            tiles.extend(_tiles(demand, placed, load, run_base, len(tiles)))
            run_base += len(runs)
            runs, placed = [], []
            load += 1
        slot = _run_slot(runs, halves, used, bundle.rows, geo)
        if slot is None:
            runs.append([0] * geo.halves)
            slot = _run_slot(runs, halves, used, bundle.rows, geo)
            assert slot is not None
        run, half = slot
        placed.append((bundle, run, half, runs[run][half], used[half]))
        runs[run][half] += bundle.rows
        used[half] += bundle.width
    tiles.extend(_tiles(demand, placed, load, run_base, len(tiles)))
    return tiles, load


def _run_slot(
    runs: list[list[int]], halves: list[int], used: list[int], rows: int, geo: Geometry
) -> tuple[int, int] | None:
    """The earliest run with row room on one of ``halves``; the half with the most free
    columns among those."""
    for run, fill in enumerate(runs):
        fits = [h for h in halves if fill[h] + rows <= geo.rows]
        if fits:
            return run, min(fits, key=lambda h: (used[h], h))
    return None


def _tiles(
    demand: LayerDemand,
    placed: list[tuple[_Bundle, int, int, int, int]],
    load: int,
    run_base: int,
    first_index: int,
) -> list[Tile]:
    """The tiles of the bundles placed in ``load``: a bundle's column tiles side by side from
    the bundle's first neuron."""
    out = []
    for bundle, run, half, row_offset, col_offset in placed:
        for c in bundle.cols:
            a, b = demand.col_chunks[c]
            out.append(
                Tile(
                    index=first_index + len(out),
                    rows=demand.row_chunks[bundle.chunk],
                    cols=(a, b),
                    half=half,
                    col_offset=col_offset,
                    load=load,
                    row_offset=row_offset,
                    copy=bundle.copy,
                    run=run_base + run,
                )
            )
            col_offset += b - a
    return out


def _naive(demands: list[LayerDemand], geo: Geometry) -> dict[str, LayerPlacement]:
    """One tile per half, halves filled in model order, loads one after another; tiles of one
    row chunk in one load fire together."""
    out = {}
    k = 0
    for d in demands:
        tiles = []
        runs: dict[tuple[int, int], int] = {}
        for r in d.row_chunks:
            for c in d.col_chunks:
                load = k // geo.halves
                run = runs.setdefault((r[0], load), len(runs))
                tiles.append(Tile(len(tiles), r, c, k % geo.halves, 0, load, 0, 0, run))
                k += 1
        out[d.name] = LayerPlacement(d.name, 1, tuple(tiles))
    return out


def _layer_runs(d: LayerDemand, copies: int, geo: Geometry) -> int:
    """Runs per sample of the layer alone on the chip with ``copies`` copies."""
    loads: list[_Load] = []
    placed = _place_layer(d, copies, geo, loads, 0)
    assert placed is not None
    return runs_per_sample(d.vectors, copies, len({t.run for t in placed[0]}))


def _pack(
    demands: list[LayerDemand], copies: dict[str, int], geo: Geometry, split: list[int]
) -> tuple[dict[str, LayerPlacement], int] | None:
    """Place the layers with the given copies, each into the first load it fits whole
    (first fit; a layer larger than a load gets loads of its own). ``split`` lists the
    layer indices that start a new stage: they and the layers after them only use loads
    opened from there on. None if some layer does not fit an empty load."""
    loads: list[_Load] = []
    stage_start = 0
    out = {}
    for i, d in enumerate(demands):
        if i in split:
            stage_start = len(loads)
        placed = None
        demand = copies[d.name] * len(d.row_chunks) * d.out_features
        for load in range(stage_start, len(loads)):
            if demand > geo.halves * geo.cols - sum(loads[load].used):
                continue  # cannot fit whole: a layer only shares a load it fits into
            trial = [_Load(list(x.used)) for x in loads]
            attempt = _place_layer(d, copies[d.name], geo, trial, load)
            if attempt is not None and len(trial) == len(loads):
                placed, loads = attempt, trial
                break
        if placed is None:
            placed = _place_layer(d, copies[d.name], geo, loads, len(loads))
        if placed is None:
            return None
        out[d.name] = LayerPlacement(d.name, copies[d.name], tuple(placed[0]))
    return out, len(loads)


def place(
    demands: list[LayerDemand],
    geo: Geometry,
    run_cost: dict[str, float],
    *,
    objective: str = "time",
    chips: int = 1,
) -> Placement:
    """Place every layer (see the module docstring). ``run_cost[name]`` is the time of one
    run of a layer apart from its events (which copies do not change), the quantity copies
    save."""
    assert objective in OBJECTIVES and chips >= 1
    if not demands:
        return Placement({}, 0, (), chips, objective)
    if objective == "naive":
        layers = _naive(demands, geo)
        loads = 1 + max((t.load for p in layers.values() for t in p.tiles), default=-1)
        return Placement(layers, loads, _chips_of(loads, chips), chips, objective)
    copies = {d.name: 1 for d in demands}
    split: list[int] = []
    packed = _pack(demands, copies, geo, split)
    assert packed is not None, "a single copy of every layer fits an empty load"
    layers, loads = packed
    if objective == "time" and loads < chips:
        # chips to spare: give each stage of consecutive layers its own chip (more columns
        # for copies, and the stages run as a pipeline)
        staged = _pack(demands, copies, geo, _stages(demands, geo, chips))
        if staged is not None and staged[1] <= chips:
            split = _stages(demands, geo, chips)
            layers, loads = staged
    notes = []
    # more copies may not add loads, except onto spare chips when time is the objective
    limit = max(loads, chips) if objective == "time" else loads

    @functools.cache  # lives as long as this call
    def runs_of(d: LayerDemand, k: int) -> int:
        return _layer_runs(d, k, geo)

    # spend free columns on copies, the biggest saving of run time per column first
    while True:
        best = None
        for d in demands:
            step = _next_step(d, copies[d.name], geo, runs_of)
            if step is None:
                continue
            more, saved = step
            extra = (more - copies[d.name]) * len(d.row_chunks) * d.out_features
            gain = saved * run_cost[d.name] / extra
            trial = dict(copies, **{d.name: more})
            result = _pack(demands, trial, geo, split)
            if result is None or result[1] > limit:
                continue
            if best is None or gain > best[0]:
                best = (gain, trial, result)
        if best is None:
            break
        _, copies, (layers, loads) = best
    for d in demands:
        if copies[d.name] > 1:
            notes.append(f"{d.name}: {copies[d.name]} copies")
    return Placement(layers, loads, _chips_of(loads, chips), chips, objective, tuple(notes))


def _next_step(
    d: LayerDemand, copies: int, geo: Geometry, runs_of: Callable[[LayerDemand, int], int]
) -> tuple[int, int] | None:
    """The fewest copies above ``copies`` that save runs, and the runs saved; None if more
    copies save nothing. Copies beyond what one run holds only add runs per cycle, so the
    search stops there."""
    rows = max(b - a for a, b in d.row_chunks)
    most = min(d.vectors, max(1, geo.halves * (geo.rows // rows) // len(d.row_chunks)))
    now = runs_of(d, copies)
    for cycles in range(math.ceil(d.vectors / copies) - 1, 0, -1):
        more = math.ceil(d.vectors / cycles)
        if more > most:
            break
        saved = now - runs_of(d, more)
        if saved > 0:
            return more, saved
    return None


def _stages(demands: list[LayerDemand], geo: Geometry, chips: int) -> list[int]:
    """Layer indices that start a new stage: consecutive layers cut into up to ``chips``
    stages of similar column demand (each stage on its own chip)."""
    demand = [len(d.row_chunks) * d.out_features for d in demands]
    stages = min(chips, len(demands))
    target = sum(demand) / stages
    starts: list[int] = []
    acc = 0
    for i, c in enumerate(demand):
        if i and len(starts) < stages - 1 and acc >= target * (len(starts) + 1):
            starts.append(i)
        acc += c
    return starts


def _chips_of(loads: int, chips: int) -> tuple[int, ...]:
    """Loads in order on the chips: each chip takes a run of consecutive loads."""
    per_chip = math.ceil(loads / chips) if loads else 1
    return tuple(min(i // per_chip, chips - 1) for i in range(loads))
