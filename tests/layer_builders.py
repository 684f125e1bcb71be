"""Building :class:`AnalogLayer` objects for backend tests, independent of the tiling pass."""

from __future__ import annotations

import numpy as np
from anacc.compiler.chip import ChipSpec
from anacc.compiler.mapping import AnalogLayer, Tile


def near_equal(n: int, limit: int) -> list[tuple[int, int]]:
    """``[0, n)`` cut into the fewest ranges of at most ``limit``, near-equal in size."""
    count = -(-n // limit)
    edges = np.linspace(0, n, count + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def tiled_layer(
    chip: ChipSpec,
    weight_q: np.ndarray,
    num_sends: int = 1,
    *,
    row_bounds: list[tuple[int, int]] | None = None,
    col_bounds: list[tuple[int, int]] | None = None,
    row_slot: np.ndarray | None = None,
    halves: list[int] | None = None,
    col_offsets: list[int] | None = None,
    weight: np.ndarray | None = None,
) -> AnalogLayer:
    """A grid of tiles over ``weight_q``; tiles alternate halves unless ``halves`` is given.

    ``halves`` and ``col_offsets`` (one entry per tile, row-chunk major) place tiles on the
    chip; ``row_slot`` defaults to each chunk's rows in order.
    """
    weight_q = np.asarray(weight_q)
    n_in, n_out = weight_q.shape
    row_bounds = row_bounds or near_equal(n_in, chip.signed_inputs_per_run)
    col_bounds = col_bounds or near_equal(n_out, chip.outputs_per_run)
    tiles = []
    for rows in row_bounds:
        for cols in col_bounds:
            i = len(tiles)
            half = halves[i] if halves else i % chip.halves
            tiles.append(
                Tile(
                    index=i,
                    rows=rows,
                    cols=cols,
                    half=half,
                    col_offset=col_offsets[i] if col_offsets else 0,
                    load=i // chip.halves,
                    run=i // chip.halves,
                )
            )
    if row_slot is None:
        row_slot = np.concatenate([np.arange(b - a) for a, b in row_bounds])
    return AnalogLayer(
        name="test",
        weight=weight_q.astype(np.float32) if weight is None else weight,
        weight_q=weight_q.astype(np.int64),
        num_sends=num_sends,
        tiles=tuple(tiles),
        row_slot=np.asarray(row_slot),
    )
