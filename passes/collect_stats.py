"""Collect statistics: run the float graph on the calibration data and summarize, per analog
layer, the inputs it receives (:mod:`anacc.compiler.calibration`).

Contract: with calibration data (``ctx.calib_data``), ``ctx.calib`` maps every layer to its
:class:`~anacc.compiler.calibration.LayerStats`, measured on the graph as the graph passes left
it (so the statistics are those of the tensors the chip will see, whatever the source model
called them); without data it stays None and the later passes fall back to dynamic scales.
"""

from __future__ import annotations

import numpy as np
from anacc.compiler.calibration import LayerProbe, collect_stats
from anacc.compiler.emit import graph_model
from anacc.compiler.ir import Graph
from anacc.passes.base import CompileContext, Pass, PassResult, linear_nodes


class CollectStats(Pass):
    name = "collect-stats"
    requires = frozenset({"layers"})
    provides = frozenset({"stats"})

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        if ctx.calib_data is None:
            ctx.calib = None
            return PassResult(graph, False, ["no calibration data"])
        probes = {
            name: LayerProbe(tuple(n.inputs[0] for n in nodes), ctx.plan(name).conv)
            for name, nodes in linear_nodes(graph).items()
        }
        tensors = [t for p in probes.values() for t in p.tensors]
        ctx.calib = collect_stats(
            graph_model(graph, tensors),
            ctx.calib_data,
            probes,
            rng=np.random.default_rng(ctx.options.seed),
            batch_size=ctx.options.calib_batch,
        )
        notes = [
            f"{name}: inputs {s.min:.4g}..{s.max:.4g} over {s.samples} samples"
            for name, s in ctx.calib.items()
        ]
        return PassResult(graph, False, notes)
