"""Map signed rows: give every logical input row a row-pair slot in its tile.

Contract: for every ``Linear`` the pass sets ``LayerPlan.row_slot`` (int32, one entry per
input row): a bijection from the rows of each row chunk onto slots ``0 .. n-1`` of the tile.
Slot ``p`` uses physical rows ``rows_per_signed_weight * p + k`` (the inhibitory row first,
then the excitatory one, as in the vendor mapping), and events are sent in slot order.

- ``natural``: slot = position of the row in its chunk.
- ``interleaved``: rows sorted by strength (mean ``|w_q|``) are laid out along a van der
  Corput sequence of slots, so the strongest rows of any count are spread evenly over the
  integration window instead of arriving back to back. This lowers dynamic saturation of the
  synaptic input, which happens when strong events arrive within a synaptic time constant.
"""

from __future__ import annotations

import numpy as np
from anacc.compiler.ir import Graph
from anacc.passes.base import CompileContext, Pass, PassResult


def spread_order(n: int) -> np.ndarray:
    """Slots ``0..n-1`` in van der Corput (bit-reversed) order: every prefix is spread out."""
    bits = max(1, int(np.ceil(np.log2(max(n, 2)))))
    k = np.arange(1 << bits)
    rev = np.zeros_like(k)
    for b in range(bits):
        rev |= ((k >> b) & 1) << (bits - 1 - b)
    return rev[rev < n]


def row_slots(w_q: np.ndarray, row_chunks: list[tuple[int, int]], order: str) -> np.ndarray:
    slots = np.empty(w_q.shape[0], dtype=np.int32)
    for a, b in row_chunks:
        n = b - a
        if order == "natural":
            slots[a:b] = np.arange(n)
            continue
        strength = np.abs(w_q[a:b].astype(np.float64)).mean(axis=1)
        by_strength = np.argsort(-strength, kind="stable")
        slots[a + by_strength] = spread_order(n)
    return slots


class MapRows(Pass):
    name = "map-rows"
    requires = frozenset({"scales", "chunks"})
    provides = frozenset({"rows"})

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        notes: list[str] = []
        order = ctx.options.row_order
        for name, plan in ctx.layers.items():
            plan.row_order = order
            plan.row_slot = row_slots(plan.weight_q, plan.row_chunks, order)
            notes.append(f"{name}: {order} row order over {len(plan.row_slot)} row pairs")
        return PassResult(graph, bool(notes), notes)
