"""Tile: cut every layer's weight matrix into chunks of chip size.

Contract: each layer's ``(in_features, out_features)`` weight is cut into
``ceil(in / chip.signed_inputs_per_run)`` row chunks and ``ceil(out / chip.outputs_per_run)``
column chunks of near-equal size (sizes differ by at most one), so every weight lies in
exactly one (row chunk, column chunk) tile. Where the tiles go is the place pass's job.
"""

from __future__ import annotations

from anacc.compiler.ir import Graph
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


class TileLayers(Pass):
    name = "tile"
    requires = frozenset({"layers"})
    provides = frozenset({"chunks"})

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        notes: list[str] = []
        chip = ctx.chip
        for name, plan in ctx.layers.items():
            plan.row_chunks = tuple(near_equal_splits(plan.in_features, chip.signed_inputs_per_run))
            plan.col_chunks = tuple(near_equal_splits(plan.out_features, chip.outputs_per_run))
            notes.append(
                f"{name}: {plan.in_features}x{plan.out_features} -> "
                f"{len(plan.row_chunks)}x{len(plan.col_chunks)} tiles"
            )
        return PassResult(graph, bool(notes), notes)
