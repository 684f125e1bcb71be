"""The backend interface: how the runtime executes one :class:`AnalogLayer`.

Two entry points, one per kind of backend:

- ``linear(layer, x)`` (backends with ``quantizes = False``, i.e. ``ideal``): float inputs
  ``(B, in_features)`` to float outputs ``(B, out_features)``, an estimate of ``x @ weight``.
- ``mac(layer, x_q)`` (chip backends, ``quantizes = True``): float32 inputs (other float
  dtypes are converted) ``(B, in_features)`` holding integers ``0..chip.input_max`` to
  float32 ``(B, n_row_chunks, out_features)`` holding the integer ADC reads
  (``adc_min..adc_max``) of each run: one run per row chunk of ``layer.row_chunks`` (in that
  order), all column tiles of a row chunk side by side; it may be a non-contiguous view. The
  caller sums over the chunk axis digitally and rescales.

:class:`AnalogBackend` implements the shared part of ``mac``: it checks the inputs, lays the
row chunks out as one padded batch ``(R, B, n_max)`` (:class:`ChunkLayout`) so a backend runs
all chunks and the whole batch in one batched matmul, and caches per-layer derived data by the
layer object (:class:`LayerCache`): the layout by the layer's mapping (tiles and row slots),
what depends on the weights by the layer's ``version``.
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import numpy as np
import torch
from anacc.compiler.chip import ChipSpec, Profile
from anacc.compiler.mapping import AnalogLayer
from anacc.runtime.profiler import Profiler

T = TypeVar("T")


class Backend(ABC):
    """One way to execute analog layers; see the module docstring for the two entry points.

    ``profiler`` (an :class:`~anacc.runtime.profiler.Profiler`, or None) receives the time a
    backend spends per kind of work, where it tells them apart."""

    name: ClassVar[str]
    quantizes: ClassVar[bool]

    def __init__(self, chip: ChipSpec, profile: Profile) -> None:
        self.chip = chip
        self.profile = profile
        self.profiler: Profiler | None = None
        self._gain_per_send = profile.gain_per_send  # the profile is immutable

    def reset_noise(self) -> None:  # noqa: B027 - deterministic backends have nothing to reset
        """Start the trial-to-trial noise sequence again (backends with noise)."""

    @property
    def gain_per_send(self) -> float:
        """The nominal gain per send of the profile (ADC LSB per unit of input x weight)."""
        return self._gain_per_send

    def linear(self, layer: AnalogLayer, x: torch.Tensor) -> torch.Tensor:
        """Float ``(B, in_features)`` -> float ``(B, out_features)``: estimate of ``x @ W``."""
        raise NotImplementedError(
            f"the {self.name} backend takes quantized inputs through mac(), not linear()"
        )

    def mac(self, layer: AnalogLayer, x_q: torch.Tensor, *, checked: bool = False) -> torch.Tensor:
        """Integer inputs ``(B, in_features)`` -> ADC reads ``(B, n_row_chunks, out_features)``."""
        raise NotImplementedError(
            f"the {self.name} backend does not quantize; call linear() with float inputs"
        )


class LayerCache:
    """Derived data per layer object, valid while the layer lives and its key is unchanged.

    Entries are keyed by ``id(layer)`` and checked against a weak reference, so a new layer
    that reuses a dead layer's id never sees stale data; entries vanish with their layer.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref, Hashable, object]] = {}

    def get(self, layer: AnalogLayer, key: Hashable, build: Callable[[], T]) -> T:
        layer_id = id(layer)
        entry = self._entries.get(layer_id)
        if entry is not None and entry[0]() is layer and entry[1] == key:
            return entry[2]  # type: ignore[return-value]
        value = build()
        entries = self._entries
        ref = weakref.ref(layer, lambda _ref: entries.pop(layer_id, None))
        entries[layer_id] = (ref, key, value)
        return value

    def peek(self, layer: AnalogLayer) -> object | None:
        """The value stored for ``layer`` under whatever key, or None."""
        entry = self._entries.get(id(layer))
        return entry[2] if entry is not None and entry[0]() is layer else None


@dataclass(frozen=True)
class ChunkLayout:
    """A layer's runs as one padded batch, and where each of its tiles sits on the chip.

    A *unit* is one row chunk of one copy of the layer: unit ``u = k * R + r`` is chunk ``r``
    of copy ``k`` (``R`` row chunks, ``copies`` copies); input vector ``b`` runs on copy
    ``b % copies``. A backend that models the physical chip runs every unit on its own
    synapses; one that does not sees a single copy.

    - ``row_chunks``: per unit, its chunk's input rows ``(start, stop)``; ``U`` of them.
    - ``gather``: ``(U, n_max)`` logical input row of each padded position (the chunk's rows
      in order, then padding that points at ``in_features``, a zero input).
    - ``valid``: ``(U, n_max)`` bool, False on padding.
    - ``slot``: ``(U, n_max)`` row-pair slot of each position within its tile (0 on padding).
    - ``time_order``: ``(U, n_max)`` positions sorted by slot, i.e. in the order the chip sends
      their events (padding last).
    - ``half`` / ``neuron`` / ``row_base``: ``(U, out_features)`` the chip half, the physical
      neuron and the first row-pair slot of the tile that computes output column ``c`` of
      unit ``u``: position ``i`` of that column sits on row pair ``row_base + slot[i]``.
    - ``memo``: what a backend derives from the layout alone (it lives as long as the layout).
    """

    in_features: int
    out_features: int
    row_chunks: tuple[tuple[int, int], ...]
    copies: int
    gather: torch.Tensor
    valid: torch.Tensor
    slot: torch.Tensor
    time_order: torch.Tensor
    half: torch.Tensor
    neuron: torch.Tensor
    row_base: torch.Tensor
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_chunks(self) -> int:
        """Units: row chunks times copies."""
        return len(self.row_chunks)

    @property
    def n_max(self) -> int:
        return int(self.gather.shape[1])

    @property
    def chunk_rows(self) -> torch.Tensor:
        """``(U,)`` number of real rows per unit."""
        return self.valid.sum(1)

    def chunk_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_features)`` -> ``(U, ceil(B / copies), n_max)``, zero on padding (a view of
        x when the chunks are equal and the copies divide the batch): unit ``k * R + r`` gets
        chunk ``r`` of vectors ``k, k + copies, ...``."""
        k = self.copies
        r = self.n_chunks // k
        batch = x.shape[0]
        groups = -(-batch // k)
        if r * self.n_max != self.in_features:
            # unequal chunks: each copied into its padded place (slice copies; a gather of
            # the columns costs several times more), the missing vectors zero
            chunked = x.new_empty(groups * k, r, self.n_max)
            for i, (start, stop) in enumerate(self.row_chunks[:r]):
                chunked[:batch, i, : stop - start] = x[:, start:stop]
                chunked[:batch, i, stop - start :] = 0.0
            chunked[batch:] = 0.0
            x = chunked
        elif groups * k != batch:
            x = torch.nn.functional.pad(x, (0, 0, 0, groups * k - batch))
        # (G, K, R, n_max) -> (K, R, G, n_max): merging K and R keeps it a view
        return x.reshape(groups, k, r, self.n_max).permute(1, 2, 0, 3).reshape(k * r, groups, -1)

    def unit_outputs(self, out: torch.Tensor, batch: int) -> torch.Tensor:
        """Reads ``(U, ceil(B / copies), C)`` -> ``(B, R, C)``: a view when ``out`` is a view of
        a sample-major buffer ``(G, U, C)``, else a copy for several copies."""
        k = self.copies
        if k == 1:
            return out.permute(1, 0, 2)
        r = self.n_chunks // k
        groups = out.shape[1]
        per_vector = out.view(k, r, groups, -1).permute(2, 0, 1, 3)  # (G, K, R, C)
        return per_vector.reshape(groups * k, r, -1)[:batch]

    def chunk_weights(self, weight: np.ndarray) -> torch.Tensor:
        """``(in_features, out_features)`` -> ``(U, n_max, out_features)`` float32, zero pad,
        contiguous and not sharing memory with ``weight``."""
        w = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
        padded = torch.cat([w, w.new_zeros(1, w.shape[1])])
        rows = padded.index_select(0, self.gather.reshape(-1))
        return rows.view(self.n_chunks, self.n_max, w.shape[1])


def check_weights(layer: AnalogLayer, chip: ChipSpec) -> None:
    """The integer weights fit the layer and the chip (compiler invariants, hence asserts)."""
    assert layer.weight_q.shape == (layer.in_features, layer.out_features), (
        "weight_q shape differs from weight"
    )
    weight_q = np.asarray(layer.weight_q)
    if weight_q.dtype.kind == "f":
        assert np.array_equal(weight_q, np.round(weight_q)), "weight_q must hold integers"
    # the extremes (no array of magnitudes: this runs for every version of a layer)
    top = chip.weight_max
    if weight_q.size:
        assert -top <= weight_q.min() and weight_q.max() <= top, "weight_q exceeds weight_max"


class _Same:
    """Equal only to a wrapper of the very same object (arrays have no plain ``==``)."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    __hash__ = None  # type: ignore[assignment]


def mapping_key(layer: AnalogLayer) -> tuple:
    """What the layout of ``layer`` depends on: its shape, tiles and row slots (the array
    object: the mapping is replaced, never edited in place)."""
    return (layer.weight.shape, layer.tiles, _Same(layer.row_slot))


def build_chunk_layout(layer: AnalogLayer, chip: ChipSpec, physical: bool = True) -> ChunkLayout:
    """Check the layer's tiling against the chip and lay its units out for batching; with
    ``physical=False`` a single copy (the arithmetic does not depend on where tiles sit).

    Every copy's tiles must be a grid: row chunks partition the input rows, and the tiles of
    each row chunk partition the output columns. These are compiler invariants, hence asserts.
    """
    chunks = tuple(layer.row_chunks)
    n_in, n_out = layer.in_features, layer.out_features
    assert chunks and chunks[0][0] == 0 and chunks[-1][1] == n_in, "row chunks must cover rows"
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:], strict=False)), (
        "row chunks must be disjoint and contiguous"
    )
    max_rows = chip.signed_inputs_per_run
    assert all(0 < stop - start <= max_rows for start, stop in chunks), "row chunk too large"
    n_max = max(stop - start for start, stop in chunks)
    copies = layer.copies if physical else 1
    n_units = copies * len(chunks)

    row_slot = np.asarray(layer.row_slot).astype(np.int64)
    assert row_slot.shape == (n_in,), "row_slot needs one slot per input row"
    gather = np.full((len(chunks), n_max), n_in, dtype=np.int64)
    slot = np.zeros((len(chunks), n_max), dtype=np.int64)
    time_order = np.tile(np.arange(n_max), (len(chunks), 1))
    for r, (start, stop) in enumerate(chunks):
        slots = row_slot[start:stop]
        assert slots.min() >= 0 and slots.max() < stop - start, "row_slot out of range"
        assert np.unique(slots).size == slots.size, "two rows share a row-pair slot"
        gather[r, : stop - start] = np.arange(start, stop)
        slot[r, : stop - start] = slots
        time_order[r, : stop - start] = np.argsort(slots, kind="stable")
    half = np.full((n_units, n_out), -1, dtype=np.int64)
    neuron = np.full((n_units, n_out), -1, dtype=np.int64)
    row_base = np.zeros((n_units, n_out), dtype=np.int64)
    chunk_index = {c: r for r, c in enumerate(chunks)}
    for tile in layer.tiles:
        if tile.copy >= copies:
            continue
        u = tile.copy * len(chunks) + chunk_index[tile.rows]
        c0, c1 = tile.cols
        assert 0 <= tile.half < chip.halves, f"tile {tile.index}: no half {tile.half}"
        assert tile.n_cols <= chip.outputs_per_run, f"tile {tile.index}: too many columns"
        assert tile.col_offset >= 0 and tile.col_offset + tile.n_cols <= chip.columns_per_half, (
            f"tile {tile.index}: columns outside the half"
        )
        assert tile.row_offset >= 0 and tile.row_offset + tile.n_rows <= max_rows, (
            f"tile {tile.index}: rows outside the half"
        )
        assert (half[u, c0:c1] == -1).all(), f"tile {tile.index} overlaps another tile"
        half[u, c0:c1] = tile.half
        neuron[u, c0:c1] = tile.col_offset + np.arange(tile.n_cols)
        row_base[u, c0:c1] = tile.row_offset
    assert (half >= 0).all(), "tiles must cover every output column of every row chunk"
    tile_rows = lambda a: np.tile(a, (copies, 1))  # noqa: E731 - per unit, copies repeat
    return ChunkLayout(
        in_features=n_in,
        out_features=n_out,
        row_chunks=chunks * copies,
        copies=copies,
        gather=torch.from_numpy(tile_rows(gather)),
        valid=torch.from_numpy(tile_rows(gather) < n_in),
        slot=torch.from_numpy(tile_rows(slot)),
        time_order=torch.from_numpy(tile_rows(time_order)),
        half=torch.from_numpy(half),
        neuron=torch.from_numpy(neuron),
        row_base=torch.from_numpy(row_base),
    )


class AnalogBackend(Backend):
    """A backend that runs integer inputs through the chip's analog runs (``mac``).

    ``physical`` backends model where each tile sits (every copy of a layer on its own
    synapses); the others see one copy of each layer."""

    quantizes: ClassVar[bool] = True
    physical: ClassVar[bool] = True

    def __init__(self, chip: ChipSpec, profile: Profile) -> None:
        super().__init__(chip, profile)
        self._layouts = LayerCache()
        self._checked = LayerCache()

    def layout(self, layer: AnalogLayer) -> ChunkLayout:
        """The layer's :class:`ChunkLayout`, built once per mapping; the weights are checked
        once per layer version."""
        self._checked.get(layer, layer.version, lambda: check_weights(layer, self.chip))
        return self._layouts.get(
            layer, mapping_key(layer), lambda: build_chunk_layout(layer, self.chip, self.physical)
        )

    def mac(self, layer: AnalogLayer, x_q: torch.Tensor, *, checked: bool = False) -> torch.Tensor:
        """See :meth:`Backend.mac`; ``checked``: the caller has made sure that ``x_q`` holds
        integers in ``0..input_max`` (the encoder does), so the range is not checked again."""
        assert x_q.is_floating_point(), f"mac expects float inputs, got {x_q.dtype}"
        x_q = x_q.to(torch.float32)
        assert x_q.dim() == 2 and x_q.shape[1] == layer.in_features, (
            f"mac expects (B, {layer.in_features}) inputs, got {tuple(x_q.shape)}"
        )
        assert 1 <= layer.num_sends <= self.chip.num_sends_max, "num_sends outside chip range"
        layout = self.layout(layer)
        if x_q.shape[0] == 0:
            return x_q.new_zeros(0, layout.n_chunks, layer.out_features)
        if not checked:
            lo, hi = (float(v) for v in torch.aminmax(x_q))
            assert lo >= 0 and hi <= self.chip.input_max, (
                f"mac inputs must lie in 0..{self.chip.input_max}, got {lo}..{hi}"
            )
        with torch.no_grad():
            out = layout.unit_outputs(self._run(layer, layout, layout.chunk_inputs(x_q)), len(x_q))
        assert out.shape == (x_q.shape[0], len(layer.row_chunks), layer.out_features)
        return out

    @abstractmethod
    def _run(self, layer: AnalogLayer, layout: ChunkLayout, xc: torch.Tensor) -> torch.Tensor:
        """Unit inputs ``(U, G, n_max)`` (maybe a strided view) -> reads ``(U, G,
        out_features)``, run-major."""
