"""Place: put every tile on the chip and group the tiles into runs
(:mod:`anacc.compiler.placement`).

Contract: for every layer the pass sets ``LayerPlan.vectors`` (the input vectors one sample
sends it: output positions of a convolution, rows of a dense layer's input, every use of a
recurrent weight, times two input parts for ``split``) and ``LayerPlan.tiles``: per copy the
layer's chunks, each placed on a half, row pairs and neurons of a chip load, with the run that
fires it. Every tile of a load owns its neurons; the objective (``time``, ``energy`` or
``naive``) and the number of chips come from the options.
"""

from __future__ import annotations

import math

from anacc.compiler.ir import Graph, Node, numel_per_sample
from anacc.compiler.placement import Geometry, LayerDemand, lower_bound_runs, place
from anacc.passes.base import CompileContext, Pass, PassResult, linear_nodes


def input_vectors(graph: Graph, node: Node) -> int:
    """Input vectors one sample sends a ``Linear`` node (1 where its input size is unknown)."""
    shape = graph.tensors[node.inputs[0]].shape if node.inputs[0] in graph.tensors else ()
    conv = node.attr("conv")
    if conv is None:
        return max(1, numel_per_sample(shape[:-1]))
    spatial = shape[2:]
    if len(spatial) != conv.rank or not all(isinstance(d, int) for d in spatial):
        return 1
    return max(1, numel_per_sample(shape[:1])) * conv.positions(tuple(spatial))


class PlaceTiles(Pass):
    name = "place"
    requires = frozenset({"chunks", "signed"})
    provides = frozenset({"tiles"})

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        chip, opts = ctx.chip, ctx.options
        geo = Geometry(chip.halves, chip.signed_inputs_per_run, chip.outputs_per_run)
        demands = []
        for name, nodes in linear_nodes(graph).items():
            plan = ctx.plan(name)
            parts = 2 if plan.signed == "split" else 1
            plan.vectors = sum(input_vectors(graph, n) for n in nodes)
            demands.append(
                LayerDemand(name, plan.row_chunks, plan.col_chunks, plan.vectors * parts)
            )
        cost = {d.name: chip.overhead_us_per_run for d in demands}
        placed = place(demands, geo, cost, objective=opts.placement, chips=opts.chips)
        notes = []
        total = bound = 0
        for d in demands:
            layer = placed.layers[d.name]
            ctx.plan(d.name).tiles = layer.tiles
            runs = math.ceil(d.vectors / layer.copies) * layer.runs_per_cycle
            low = lower_bound_runs(d, geo)
            total, bound = total + runs, bound + low
            loads = sorted({t.load for t in layer.tiles})
            notes.append(
                f"{d.name}: {layer.copies} cop{'ies' if layer.copies > 1 else 'y'}, "
                f"{len(layer.tiles)} tiles on load(s) {','.join(map(str, loads))}, "
                f"{runs} runs per sample (bound {low})"
            )
        notes.append(
            f"{placed.objective}: {total} runs per sample (chip bound {bound}) on "
            f"{placed.loads} load(s), {opts.chips} chip(s)"
        )
        return PassResult(graph, bool(demands), notes)

    def verify(self, graph: Graph, ctx: CompileContext) -> None:
        for plan in ctx.layers.values():
            for copy in range(1 + max((t.copy for t in plan.tiles), default=0)):
                area = sum(t.n_rows * t.n_cols for t in plan.tiles if t.copy == copy)
                assert area == plan.in_features * plan.out_features, "a copy covers the matrix"
