"""Pass infrastructure: a pass maps a graph to a :class:`PassResult`; a manager runs a sequence.

Each pass is a small class with one ``call(graph, ctx)`` method and a docstring that states its
contract. Passes may edit the graph in place; the manager hands each pass a copy only when asked
to keep the input intact. What a pass did is written to ``PassResult.notes`` (one line each),
which ``anacc compile --explain`` prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from anacc.compiler.ir import Graph


@dataclass
class PassResult:
    graph: Graph
    changed: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class CompileContext:
    """What passes share besides the graph: the chip, the options, calibration statistics.

    ``layers`` collects per analog layer the :class:`LayerPlan` the passes fill in (keyed by
    node name), so that later passes and the program writer read them from one place.
    """

    chip: Any
    profile: Any
    options: Any
    calib: Any = None  # dict[layer name, LayerStats] or None without calibration data
    layers: dict[str, LayerPlan] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def layer(self, name: str) -> LayerPlan:
        if name not in self.layers:
            self.layers[name] = LayerPlan(name)
        return self.layers[name]


class Pass:
    """Base class; subclasses set ``name`` and implement :meth:`call`."""

    name: str = "pass"

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        raise NotImplementedError

    def __call__(self, graph: Graph, ctx: CompileContext) -> PassResult:
        return self.call(graph, ctx)


@dataclass
class PassRecord:
    name: str
    changed: bool
    seconds: float
    notes: list[str]


class PassManager:
    """Runs passes in order and records what each did."""

    def __init__(self, passes: Sequence[Pass]) -> None:
        self.passes = list(passes)
        self.records: list[PassRecord] = []

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
            if on_pass is not None:
                on_pass(rec)
            graph = result.graph
        return graph

    def explain(self) -> str:
        lines = []
        for rec in self.records:
            state = "changed" if rec.changed else "no change"
            lines.append(f"[{rec.name}] {state} ({rec.seconds * 1e3:.1f} ms)")
            lines.extend(f"    {n}" for n in rec.notes)
        return "\n".join(lines)


@dataclass
class LayerPlan:
    """What the passes decided for one analog layer (a ``Linear`` node)."""

    name: str
    signed: str = "none"  # "none", "shift" (offset + digital correction) or "split" (+/- runs)
    signed_reason: str = ""
    input_offset: float = 0.0  # subtracted before quantization ("shift" only)
    input_scale: float | None = None  # float value of one input LSB; None: per batch at run time
    weight_scale: Any = None  # float32 (out_features,): float value of one weight LSB per column
    weight_q: Any = None  # int16 (in_features, out_features)
    num_sends: int = 1
    gain_reason: str = ""
    tiles: tuple = ()
    row_slot: Any = None  # int32 (in_features,)
    row_order: str = "natural"
