"""Plan layers: one :class:`~anacc.passes.base.LayerPlan` per analog layer.

Contract: after the graph passes, every ``Linear`` node names its layer (attribute ``layer``);
nodes of one layer (the unrolled steps of a recurrent weight) share one weight, bias and
geometry. The pass creates ``ctx.layers[layer]`` with them, in the order of first use, for the
mapping passes to fill in.
"""

from __future__ import annotations

from anacc.compiler.ir import Graph
from anacc.passes.base import CompileContext, LayerPlan, Pass, PassResult, linear_nodes


class PlanLayers(Pass):
    name = "plan-layers"
    requires = frozenset({"canonical", "bn-folded", "conv-lowered", "recurrent-lowered"})
    provides = frozenset({"layers"})

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        notes = []
        ctx.layers.clear()
        for name, nodes in linear_nodes(graph).items():
            first = nodes[0]
            assert all(n.inputs[1:] == first.inputs[1:] for n in nodes), "a layer has one weight"
            bias = graph.initializers[first.inputs[2]] if len(first.inputs) > 2 else None
            ctx.layers[name] = LayerPlan(
                name=name,
                weight=graph.initializers[first.inputs[1]],
                bias=bias,
                conv=first.attr("conv"),
                source_op=first.attr("source_op", "MatMul"),
            )
            uses = f", used {len(nodes)} times" if len(nodes) > 1 else ""
            w = ctx.layers[name].weight
            notes.append(f"{name}: {w.shape[0]}x{w.shape[1]}{uses}")
        return PassResult(graph, False, notes)

    def verify(self, graph: Graph, ctx: CompileContext) -> None:
        for plan in ctx.layers.values():
            assert plan.weight.ndim == 2 and plan.weight.dtype.kind == "f"
