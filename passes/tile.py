"""Tile: cut every Linear into chip-sized tiles and place them on halves and chip loads.

Contract: each layer's ``(in_features, out_features)`` weight is cut into
``ceil(in / chip.signed_inputs_per_run)`` row chunks and ``ceil(out / chip.outputs_per_run)``
column chunks of near-equal size (sizes differ by at most one), so every weight lies in
exactly one tile. Tiles are placed in model order, one per half: tile ``k`` of the model goes
to half ``k mod chip.halves`` of chip load ``k // chip.halves``; all halves of the chip are in
use before the weights need rewriting.
"""

from __future__ import annotations

from anacc.compiler.ir import Graph
from anacc.compiler.mapping import Tile
from anacc.passes.base import CompileContext, Pass, PassResult


def near_equal_splits(n: int, max_size: int) -> list[tuple[int, int]]:
    """``[0, n)`` cut into the fewest ranges of at most ``max_size``, sizes differing by <= 1."""
    assert n > 0 and max_size > 0
    parts = -(-n // max_size)
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append((start, start + size))
        start += size
    return out


def tile_layer(
    in_features: int,
    out_features: int,
    rows_per_tile: int,
    cols_per_tile: int,
    halves: int,
    first_index: int = 0,
) -> tuple[Tile, ...]:
    tiles = []
    k = first_index
    for rows in near_equal_splits(in_features, rows_per_tile):
        for cols in near_equal_splits(out_features, cols_per_tile):
            tiles.append(Tile(k - first_index, rows, cols, k % halves, 0, k // halves))
            k += 1
    return tuple(tiles)


class TileLayers(Pass):
    name = "tile"
    requires = frozenset({"layers"})
    provides = frozenset({"tiles"})

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        notes: list[str] = []
        chip = ctx.chip
        placed = 0
        for name, plan in ctx.layers.items():
            w = plan.weight
            tiles = tile_layer(
                w.shape[0],
                w.shape[1],
                chip.signed_inputs_per_run,
                chip.outputs_per_run,
                chip.halves,
                placed,
            )
            placed += len(tiles)
            plan.tiles = tiles
            n_r = len({t.rows for t in tiles})
            n_c = len({t.cols for t in tiles})
            used = w.shape[0] * w.shape[1]
            cap = len(tiles) * chip.signed_inputs_per_run * chip.outputs_per_run
            notes.append(
                f"{name}: {w.shape[0]}x{w.shape[1]} -> {n_r}x{n_c} tiles, "
                f"utilization {100 * used / cap:.1f} %, loads {tiles[0].load}..{tiles[-1].load}"
            )
        loads = -(-placed // chip.halves) if placed else 0
        notes.append(f"{placed} tiles on {loads} chip load(s)")
        return PassResult(graph, placed > 0, notes)
