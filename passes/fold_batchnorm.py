"""Fold BatchNormalization into the preceding Linear or Conv.

Contract: a ``BatchNormalization`` whose input is the only use of a ``Linear`` output (2-D, the
channel is the output feature) or of a ``Conv`` output (channel axis 1) with constant weights
disappears; the producer's weights are scaled per output channel by ``gamma / sqrt(var + eps)``
and its bias becomes ``(b - mean) * scale + beta``. A BatchNormalization with no such producer
stays in the graph and runs digitally.
"""

from __future__ import annotations

import numpy as np
from anacc.compiler.ir import Graph
from anacc.passes._util import constant, single_consumer, take_output
from anacc.passes.base import CompileContext, Pass, PassResult


class FoldBatchNorm(Pass):
    name = "fold-batchnorm"
    requires = frozenset({"canonical"})
    provides = frozenset({"bn-folded"})

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        notes: list[str] = []
        kept = 0
        for bn in graph.nodes():
            if bn.op != "BatchNormalization" or bn.domain:
                continue
            producer = graph.producer(bn.inputs[0])
            params = [constant(graph, t) for t in bn.inputs[1:5]]
            foldable = (
                producer is not None
                and producer.op in ("Linear", "Conv")
                and not bn.attr("training_mode", 0)
                and not any(bn.outputs[1:])
                and len(producer.inputs) > 1
                and getattr(single_consumer(graph, bn.inputs[0]), "name", None) == bn.name
                and all(p is not None for p in params)
                and constant(graph, producer.inputs[1]) is not None
                and (producer.op == "Conv" or len(graph.shape(bn.inputs[0])) == 2)
            )
            if not foldable:
                kept += 1
                notes.append(f"kept {bn.name} digital (no foldable Linear/Conv before it)")
                continue
            gamma, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
            scale = gamma / np.sqrt(var + float(bn.attr("epsilon", 1e-5)))
            w = graph.initializers[producer.inputs[1]].astype(np.float64)
            n_out = w.shape[1] if producer.op == "Linear" else w.shape[0]
            bias_name = producer.inputs[2] if len(producer.inputs) > 2 else ""
            b = constant(graph, bias_name) if bias_name else None
            b = np.zeros(n_out) if b is None else b.astype(np.float64)
            if producer.op == "Linear":
                w = w * scale[None, :]
            else:
                w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
            new_b = (b - mean) * scale + beta
            w_name = graph.unique_name(f"{producer.name}.weight_bn")
            b_name = graph.unique_name(f"{producer.name}.bias_bn")
            graph.add_initializer(w_name, w.astype(np.float32))
            graph.add_initializer(b_name, new_b.astype(np.float32))
            producer = graph.set_inputs(producer, [producer.inputs[0], w_name, b_name])
            take_output(graph, bn, producer)
            notes.append(f"folded {bn.name} into {producer.op} {producer.name}")
        graph.prune_unused()
        changed = len(notes) > kept
        return PassResult(graph, changed, notes)
