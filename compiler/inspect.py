"""A per-node summary of a graph before compilation: shapes, parameters, MACs, placement.

:func:`inspect_graph` builds an :class:`InspectReport` (one row per node in topological order,
the nodes computed at compile time listed as ``folded``, plus totals); :func:`render_text`
prints it as an aligned table and :func:`to_json` as plain JSON-ready data. MACs are per
sample (Conv, Gemm, MatMul and the recurrent ops have any); a row's placement and its reason
come from :func:`anacc.compiler.partition.placement`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anacc.compiler.ir import Graph, Shape, TensorInfo, format_shape
from anacc.compiler.partition import (
    FOLDED,
    PlacementRecord,
    macs_per_sample,
    param_count,
    placement,
)


@dataclass(frozen=True)
class InspectRow:
    """One node: its activation input shapes (constant inputs count as ``params``)."""

    node: str
    op: str
    input_shapes: tuple[Shape, ...]
    output_shapes: tuple[Shape, ...]
    params: int
    macs: int
    placement: str
    reason: str


@dataclass(frozen=True)
class InspectTotals:
    params: int
    macs: int
    analog_macs: int
    nodes: dict[str, int]

    @property
    def analog_share(self) -> float:
        """Fraction of the MACs per sample that run on the analog array (0 without MACs)."""
        return self.analog_macs / self.macs if self.macs else 0.0


@dataclass(frozen=True)
class InspectReport:
    model: str
    opset: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    rows: tuple[InspectRow, ...]
    totals: InspectTotals


def placement_records(report: InspectReport) -> tuple[PlacementRecord, ...]:
    """The report's rows as the placement records a program keeps."""
    return tuple(PlacementRecord(r.node, r.op, r.placement, r.reason, r.macs) for r in report.rows)


def inspect_graph(graph: Graph) -> InspectReport:
    """The per-node rows and totals of ``graph`` (as the frontend built it)."""
    rows = []
    for node in graph.nodes():
        where = placement(graph, node)
        rows.append(
            InspectRow(
                node=node.name,
                op=node.op if not node.domain else f"{node.domain}.{node.op}",
                input_shapes=tuple(
                    graph.shape(t)
                    for t in node.inputs
                    if t and not graph.is_constant(t) and t in graph.tensors
                ),
                output_shapes=tuple(graph.shape(t) for t in node.outputs if t in graph.tensors),
                params=param_count(graph, node),
                macs=macs_per_sample(graph, node),
                placement=where.where,
                reason=where.reason,
            )
        )
    for name, op in graph.folded.items():
        rows.append(InspectRow(name, op, (), (), 0, 0, FOLDED, "computed at compile time"))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.placement] = counts.get(r.placement, 0) + 1
    totals = InspectTotals(
        params=sum(int(v.size) for v in graph.initializers.values()),
        macs=sum(r.macs for r in rows),
        analog_macs=sum(r.macs for r in rows if r.placement == "analog"),
        nodes=counts,
    )
    return InspectReport(
        graph.name, graph.opset, tuple(graph.inputs), tuple(graph.outputs), tuple(rows), totals
    )


def _shapes(shapes: tuple[Shape, ...]) -> str:
    return ", ".join(format_shape(s) for s in shapes)


def _tensors(infos: tuple[TensorInfo, ...]) -> str:
    return ", ".join(f"{t.name}: {format_shape(t.shape)}" for t in infos)


def render_text(report: InspectReport) -> str:
    """An aligned table with a header, one line per node and the totals below."""
    header = ("node", "op", "inputs", "outputs", "params", "MACs", "placement", "why")
    cells = [
        (
            r.node,
            r.op,
            _shapes(r.input_shapes),
            _shapes(r.output_shapes),
            f"{r.params:,}",
            f"{r.macs:,}",
            r.placement,
            r.reason,
        )
        for r in report.rows
    ]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    numeric = {4, 5}

    def line(row: tuple[str, ...]) -> str:
        pairs = enumerate(zip(row, widths, strict=True))
        parts = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in pairs]
        return "  ".join(parts).rstrip()

    t = report.totals
    lines = [
        f"model {report.model} (opset {report.opset})",
        f"inputs  {_tensors(report.inputs)}",
        f"outputs {_tensors(report.outputs)}",
        "",
        line(header),
        line(tuple("-" * w for w in widths)),
        *(line(c) for c in cells),
        "",
        f"parameters       {t.params:,}",
        f"MACs per sample  {t.macs:,}",
        f"analog MACs      {t.analog_macs:,} ({100 * t.analog_share:.1f} % of MACs)",
        "nodes            " + ", ".join(f"{n} {k}" for k, n in sorted(t.nodes.items())),
    ]
    return "\n".join(lines) + "\n"


def to_json(report: InspectReport) -> dict[str, Any]:
    """The report as JSON-ready data; shapes are lists of ints and symbol strings."""

    def tensor(t: TensorInfo) -> dict[str, Any]:
        return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}

    t = report.totals
    return {
        "model": report.model,
        "opset": report.opset,
        "inputs": [tensor(i) for i in report.inputs],
        "outputs": [tensor(o) for o in report.outputs],
        "nodes": [
            {
                "node": r.node,
                "op": r.op,
                "input_shapes": [list(s) for s in r.input_shapes],
                "output_shapes": [list(s) for s in r.output_shapes],
                "params": r.params,
                "macs_per_sample": r.macs,
                "placement": r.placement,
                "reason": r.reason,
            }
            for r in report.rows
        ],
        "totals": {
            "params": t.params,
            "macs_per_sample": t.macs,
            "analog_macs_per_sample": t.analog_macs,
            "analog_share": t.analog_share,
            "nodes": dict(sorted(t.nodes.items())),
        },
    }
