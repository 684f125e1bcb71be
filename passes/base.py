"""Pass infrastructure: a pass maps a graph to a :class:`PassResult`; a manager runs a sequence.

Each pass is a small class with one ``call(graph, ctx)`` method and a docstring that states its
contract. It declares what it ``requires`` (facts earlier passes established, such as
``"conv-lowered"``) and what it ``provides``; the :class:`PassManager` refuses a sequence in
which a pass runs before what it requires, and after every pass runs its ``verify`` check of
what it promised. Passes may edit the graph in place. What a pass did is written to
``PassResult.notes`` (one line each), which ``anacc compile --explain`` prints.

Besides the graph, passes share a :class:`CompileContext`: the chip, the options, the
calibration data and statistics, and per analog layer the :class:`LayerPlan` the mapping
passes fill in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from anacc.compiler.calibration import LayerStats
from anacc.compiler.chip import ChipSpec, Profile
from anacc.compiler.conv import ConvGeometry
from anacc.compiler.datafile import Dataset
from anacc.compiler.ir import Graph, Node
from anacc.compiler.mapping import Tile
from anacc.compiler.options import CompileOptions

SIGNED_MODES = ("none", "shift", "split")


@dataclass
class PassResult:
    graph: Graph
    changed: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class LayerPlan:
    """What the passes decided for one analog layer (one or more ``Linear`` nodes).

    Filled in by the mapping passes, each field by the pass that provides it:
    ``signed*`` (signed-inputs), scales and ``weight_q`` (calibrate-scales), the chunks
    (tile), ``num_sends`` (choose-gain), ``tiles`` and ``vectors`` (place), ``row_slot``
    (map-rows).
    """

    name: str
    weight: np.ndarray  # float32 (in_features, out_features)
    bias: np.ndarray | None  # float32 (out_features,)
    conv: ConvGeometry | None
    source_op: str
    signed: str = "none"  # one of SIGNED_MODES
    signed_reason: str = ""
    input_offset: float = 0.0  # subtracted before quantization ("shift" only)
    input_scale: float | None = None  # float value of one input LSB; None: per batch
    weight_scale: np.ndarray | None = None  # float32 (out_features,)
    weight_q: np.ndarray | None = None  # int16 (in_features, out_features)
    num_sends: int = 1
    gain_reason: str = ""
    row_chunks: tuple[tuple[int, int], ...] = ()  # input-row ranges, one run's rows at most
    col_chunks: tuple[tuple[int, int], ...] = ()  # output-column ranges, one half at most
    vectors: int = 1  # input vectors one sample (or run of a fixed-shape model) sends
    tiles: tuple[Tile, ...] = ()
    row_slot: np.ndarray | None = None  # int32 (in_features,)
    row_order: str = "natural"

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[1])


@dataclass
class CompileContext:
    """What passes share besides the graph (see the module docstring)."""

    chip: ChipSpec
    profile: Profile
    options: CompileOptions
    calib_data: Dataset | None = None
    calib: dict[str, LayerStats] | None = None  # by layer; None without calibration data
    layers: dict[str, LayerPlan] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def plan(self, name: str) -> LayerPlan:
        """The plan of layer ``name`` (the layer-plan pass created it)."""
        return self.layers[name]


class Pass:
    """Base class; subclasses set ``name``, ``requires``, ``provides`` and implement
    :meth:`call` (and :meth:`verify` where the promise can be checked)."""

    name: ClassVar[str] = "pass"
    requires: ClassVar[frozenset[str]] = frozenset()
    provides: ClassVar[frozenset[str]] = frozenset()

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        raise NotImplementedError

    def verify(self, graph: Graph, ctx: CompileContext) -> None:
        """Assert what the pass provides (an internal check, not a user error)."""

    def __call__(self, graph: Graph, ctx: CompileContext) -> PassResult:
        return self.call(graph, ctx)


@dataclass
class PassRecord:
    name: str
    changed: bool
    seconds: float
    notes: list[str]


class PassManager:
    """Runs passes in order, checks their requirements and records what each did."""

    def __init__(self, passes: Sequence[Pass], given: frozenset[str] = frozenset()) -> None:
        self.passes = list(passes)
        self.records: list[PassRecord] = []
        provided = set(given)
        for p in self.passes:
            missing = p.requires - provided
            assert not missing, f"pass {p.name} runs before {sorted(missing)} is provided"
            provided |= p.provides
        self.provided = frozenset(provided)

    def run(
        self,
        graph: Graph,
        ctx: CompileContext,
        on_pass: Callable[[PassRecord], None] | None = None,
    ) -> Graph:
        for p in self.passes:
            t0 = time.perf_counter()
            result = p(graph, ctx)
            rec = PassRecord(p.name, result.changed, time.perf_counter() - t0, result.notes)
            self.records.append(rec)
            graph = result.graph
            p.verify(graph, ctx)
            if on_pass is not None:
                on_pass(rec)
        return graph

    def explain(self) -> str:
        lines = []
        for rec in self.records:
            state = "changed" if rec.changed else "no change"
            lines.append(f"[{rec.name}] {state} ({rec.seconds * 1e3:.1f} ms)")
            lines.extend(f"    {n}" for n in rec.notes)
        return "\n".join(lines)


def linear_nodes(graph: Graph) -> dict[str, list[Node]]:
    """The ``Linear`` nodes of ``graph`` by layer (a layer's nodes share its weights), layers
    in the order of their first use."""
    layers: dict[str, list[Node]] = {}
    for node in graph.nodes():
        if node.op == "Linear":
            layers.setdefault(node.attr("layer", node.name), []).append(node)
    return layers
