"""Canonicalize: one ``Linear`` op for every dense product with a constant weight.

Contract:
- ``Identity`` and ``Dropout`` (inference) are removed.
- ``Gemm`` with a constant ``B`` and ``transA == 0`` becomes ``Linear(X, W[, b])`` with ``W`` of
  shape ``(in, out)`` (transB applied, alpha folded into W, beta into b).
- ``MatMul`` with a constant 2-D second operand becomes ``Linear``; a following ``Add`` of a
  constant that broadcasts along the last axis only is folded into the bias.
- ``Linear`` computes ``y = x @ W + b`` over the last axis of ``x`` (leading axes are batch).
Everything else (a MatMul of two activations, Gemm with transA on an activation) stays as it is
and runs digitally.
"""

from __future__ import annotations

import numpy as np
from anacc.compiler.ir import Graph, Node
from anacc.passes._util import bypass, constant, single_consumer, take_output
from anacc.passes.base import CompileContext, Pass, PassResult


class Canonicalize(Pass):
    name = "canonicalize"

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        notes: list[str] = []
        for node in graph.nodes():
            if node.op in ("Identity", "Dropout") and bypass(graph, node):
                notes.append(f"removed {node.op} {node.name}")
        for node in graph.nodes():
            if node.op == "Gemm":
                if self._gemm(graph, node):
                    notes.append(f"Gemm {node.name} -> Linear")
            elif node.op == "MatMul" and self._matmul(graph, node):
                notes.append(f"MatMul {node.name} -> Linear")
        for node in graph.nodes():
            if node.op == "Linear" and self._fuse_add(graph, node):
                notes.append(f"folded bias Add into Linear {node.name}")
        graph.prune_unused()
        return PassResult(graph, bool(notes), notes)

    def _replace(self, graph: Graph, node: Node, w: np.ndarray, b: np.ndarray | None) -> None:
        graph.remove_node(node.name)
        w_name = graph.unique_name(f"{node.name}.weight")
        graph.add_initializer(w_name, np.ascontiguousarray(w, dtype=np.float32))
        inputs = [node.inputs[0], w_name]
        if b is not None:
            b_name = graph.unique_name(f"{node.name}.bias")
            graph.add_initializer(b_name, np.ascontiguousarray(b, dtype=np.float32))
            inputs.append(b_name)
        graph.add_node(Node(node.name, "Linear", inputs, list(node.outputs), {}))

    def _gemm(self, graph: Graph, node: Node) -> bool:
        b = constant(graph, node.inputs[1])
        if b is None or node.attr("transA", 0) or constant(graph, node.inputs[0]) is not None:
            return False
        w = b.T if node.attr("transB", 0) else b
        alpha = node.attr("alpha", 1.0)
        if alpha != 1.0 or w.dtype != np.float32:  # float32 times 1.0 needs no float64 copy
            w = w.astype(np.float64) * alpha
        out_features = w.shape[1]
        bias = None
        if len(node.inputs) > 2 and node.inputs[2]:
            c = constant(graph, node.inputs[2])
            if c is None:
                return False
            c = np.asarray(c, dtype=np.float64) * node.attr("beta", 1.0)
            if c.size == 1:
                bias = np.full(out_features, float(c.reshape(-1)[0]))
            elif c.shape in ((out_features,), (1, out_features)):
                bias = c.reshape(-1)
            else:
                return False  # a per-row C is not a bias; keep the Gemm digital
        self._replace(graph, node, w, bias)
        return True

    def _matmul(self, graph: Graph, node: Node) -> bool:
        w = constant(graph, node.inputs[1])
        if w is None or w.ndim != 2 or constant(graph, node.inputs[0]) is not None:
            return False
        if len(graph.shape(node.inputs[0])) < 2:
            return False
        self._replace(graph, node, w, None)
        return True

    def _fuse_add(self, graph: Graph, node: Node) -> bool:
        add = single_consumer(graph, node.outputs[0])
        if add is None or add.op != "Add":
            return False
        other = [t for t in add.inputs if t != node.outputs[0]]
        if len(other) != 1 or len(add.inputs) != 2:
            return False
        c = constant(graph, other[0])
        out_features = graph.initializers[node.inputs[1]].shape[1]
        if c is None:
            return False
        if c.size == 1:
            c = np.full(out_features, float(c.reshape(-1)[0]))
        if c.shape[-1] != out_features or int(np.prod(c.shape)) != out_features:
            return False
        out_rank = len(graph.shape(add.outputs[0]))
        if c.ndim > out_rank or out_rank != len(graph.shape(node.outputs[0])):
            return False
        bias = c.reshape(-1).astype(np.float64)
        if len(node.inputs) > 2:
            bias = bias + graph.initializers[node.inputs[2]].astype(np.float64)
            graph.initializers[node.inputs[2]] = bias.astype(np.float32)
        else:
            b_name = graph.unique_name(f"{node.name}.bias")
            graph.add_initializer(b_name, bias.astype(np.float32))
            node.inputs.append(b_name)
        take_output(graph, add, node)
        return True
