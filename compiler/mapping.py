"""How one linear layer sits on the chip: its tiles, row placement and integer weights.

This is the contract between the compiler (which builds it) and the backends (which execute
it). A backend receives an :class:`AnalogLayer` and unsigned integer inputs; it never sees the
ONNX graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Tile:
    """One chip-sized piece of one copy of a layer's weight matrix, placed on the chip.

    ``rows`` and ``cols`` are half-open ranges of logical input rows and output columns of
    the layer's weight matrix (a row chunk and a column chunk). The tile sits on ``half`` of
    chip load ``load``: its row pairs are the slots ``row_offset ..`` (logical row ``i`` of
    the chunk at slot ``row_offset + row_slot[i]``), its columns the neurons
    ``col_offset .. col_offset + n_cols - 1``. ``copy`` says which copy of the layer it
    belongs to (every copy holds the whole matrix once, on its own synapses); ``run`` which
    run of the layer's run pattern fires it: the tiles of one run fire together, each copy on
    its own input vector. Tiles of different loads never share a run.
    """

    index: int
    rows: tuple[int, int]
    cols: tuple[int, int]
    half: int
    col_offset: int
    load: int
    row_offset: int = 0
    copy: int = 0
    run: int = 0

    @property
    def n_rows(self) -> int:
        return self.rows[1] - self.rows[0]

    @property
    def n_cols(self) -> int:
        return self.cols[1] - self.cols[0]

    def to_dict(self) -> dict[str, object]:
        """The tile as the program file and the report's JSON write it."""
        return {
            "index": self.index,
            "rows": list(self.rows),
            "cols": list(self.cols),
            "half": self.half,
            "row_offset": self.row_offset,
            "col_offset": self.col_offset,
            "load": self.load,
            "copy": self.copy,
            "run": self.run,
        }


@dataclass
class AnalogLayer:
    """A linear operation ``y = x @ W`` mapped onto analog tiles.

    - ``weight``: float32 ``(in_features, out_features)``, the weights the ``ideal`` backend
      uses (already divided by nothing: the float model's weights after BN folding).
    - ``weight_q``: integer ``(in_features, out_features)`` with ``|w| <= chip.weight_max``.
    - ``num_sends``: how often each input vector is sent per run (gain grows linearly).
    - ``tiles``: every copy's tiles cover every (row, column) of the weight exactly once.
    - ``row_slot``: for each logical input row, its row-pair slot inside its tile (0-based).
      Events are sent in slot order, so the slot decides when a row's event arrives; the
      physical rows of slot ``p`` are ``rows_per_signed_weight * p + k``.
    - ``version``: bumped whenever ``weight_q`` changes, so backends may cache derived data.
    """

    name: str
    weight: np.ndarray
    weight_q: np.ndarray
    num_sends: int
    tiles: tuple[Tile, ...]
    row_slot: np.ndarray
    version: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def copies(self) -> int:
        """Copies of the matrix on the chip; input vector ``b`` runs on copy ``b % copies``."""
        return 1 + max((t.copy for t in self.tiles), default=0)

    @property
    def runs_per_cycle(self) -> int:
        """Runs of the run pattern: the runs that process ``copies`` input vectors."""
        return len({t.run for t in self.tiles})

    @property
    def row_chunks(self) -> list[tuple[int, int]]:
        """The distinct input-row ranges of the tiles, in order; each is clamped per run."""
        return sorted({t.rows for t in self.tiles})

    @property
    def col_chunks(self) -> list[tuple[int, int]]:
        return sorted({t.cols for t in self.tiles})
