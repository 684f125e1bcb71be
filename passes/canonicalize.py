"""Canonicalize: one ``Linear`` op for every dense product with a constant weight.

Contract:
- ``Identity`` and inference ``Dropout`` (whose mask nobody reads) are removed.
- ``Gemm`` with a constant ``B`` becomes ``Linear(X, W[, b])`` with ``W`` of shape
  ``(in, out)`` (transB applied, alpha folded into W, beta into b); with ``transA`` the
  activation is transposed first (a digital Transpose).
- ``MatMul`` of an activation of any rank by a constant 2-D matrix becomes ``Linear``; a
  constant 2-D matrix times an activation (``W @ x``) becomes Transpose, Linear, Transpose
  (``(x^T W^T)^T``). A following ``Add`` of a constant that broadcasts along the last axis
  only is folded into the bias.
- ``Linear`` computes ``y = x @ W + b`` over the last axis of ``x`` (leading axes are rows).
  Its attributes: ``layer`` (the analog layer it uses, its own name here), ``source_op``.
Everything else (a product of two activations) stays as it is and runs digitally.
"""

from __future__ import annotations

import numpy as np
from anacc.compiler.ir import Graph, Node, TensorInfo
from anacc.compiler.partition import placement
from anacc.passes._util import bypass, constant, single_consumer, take_output
from anacc.passes.base import CompileContext, Pass, PassResult

ANALOG_DOMAIN = "anacc"


def linear_node(
    graph: Graph,
    name: str,
    x: str,
    y: str,
    w: np.ndarray,
    b: np.ndarray | None,
    source_op: str,
    **attrs: object,
) -> Node:
    """Add ``Linear(x) -> y`` with new initializers for ``w`` and ``b``."""
    w_name = graph.unique_name(f"{name}.weight")
    graph.add_initializer(w_name, np.ascontiguousarray(w, dtype=np.float32))
    inputs = [x, w_name]
    if b is not None:
        b_name = graph.unique_name(f"{name}.bias")
        graph.add_initializer(b_name, np.ascontiguousarray(b, dtype=np.float32))
        inputs.append(b_name)
    node_attrs = {"layer": name, "source_op": source_op, **attrs}
    return graph.add_node(Node(name, "Linear", inputs, [y], node_attrs, domain=ANALOG_DOMAIN))


def _transpose_last(graph: Graph, x: str, name: str) -> str:
    """A Transpose node swapping the last two axes of ``x``; returns its output."""
    shape = graph.shape(x)
    rank = len(shape)
    perm = [*range(rank - 2), rank - 1, rank - 2]
    out = graph.unique_name(f"{name}/transposed")
    graph.set_tensor(TensorInfo(out, tuple(shape[p] for p in perm), graph.dtype(x)))
    graph.add_node(
        Node(graph.unique_name(f"{name}/transpose"), "Transpose", [x], [out], {"perm": perm})
    )
    return out


class Canonicalize(Pass):
    name = "canonicalize"
    provides = frozenset({"canonical"})

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        notes: list[str] = []
        for node in graph.nodes():
            if node.op in ("Identity", "Dropout") and not node.domain and bypass(graph, node):
                notes.append(f"removed {node.op} {node.name}")
        for node in graph.nodes():
            if node.domain:
                continue
            if node.op == "Gemm" and self._gemm(graph, node):
                notes.append(f"Gemm {node.name} -> Linear")
            elif node.op == "MatMul" and self._matmul(graph, node):
                notes.append(f"MatMul {node.name} -> Linear")
        for node in graph.nodes():
            if node.op == "Linear" and self._fuse_add(graph, node):
                notes.append(f"folded bias Add into Linear {node.name}")
        graph.prune_unused()
        return PassResult(graph, bool(notes), notes)

    def _gemm(self, graph: Graph, node: Node) -> bool:
        if not placement(graph, node).analog:
            return False
        b = graph.initializers[node.inputs[1]]
        w = b.T if node.attr("transB", 0) else b
        alpha = float(node.attr("alpha", 1.0))
        if alpha != 1.0 or w.dtype != np.float32:  # float32 times 1.0 needs no float64 copy
            w = w.astype(np.float64) * alpha
        out_features = w.shape[1]
        bias = None
        if len(node.inputs) > 2 and node.inputs[2]:
            c = graph.initializers[node.inputs[2]].astype(np.float64)
            c = c * float(node.attr("beta", 1.0))
            bias = np.full(out_features, float(c.reshape(-1)[0])) if c.size == 1 else c.reshape(-1)
        graph.remove_node(node.name)
        x = node.inputs[0]
        if node.attr("transA", 0):
            x = _transpose_last(graph, x, node.name)
        linear_node(graph, node.name, x, node.outputs[0], w, bias, "Gemm")
        return True

    def _matmul(self, graph: Graph, node: Node) -> bool:
        if not placement(graph, node).analog:
            return False
        a, b = (constant(graph, t) for t in node.inputs[:2])
        x = node.inputs[0] if b is not None else node.inputs[1]
        w = b if b is not None else a
        assert w is not None
        graph.remove_node(node.name)
        if b is not None:
            linear_node(graph, node.name, x, node.outputs[0], w, None, "MatMul")
            return True
        # W @ x = (x^T @ W^T)^T over the last two axes
        xt = _transpose_last(graph, x, node.name)
        yt = graph.unique_name(f"{node.name}/product")
        out_shape = graph.shape(node.outputs[0])
        graph.set_tensor(TensorInfo(yt, (*out_shape[:-2], out_shape[-1], out_shape[-2]), "float32"))
        linear_node(graph, node.name, xt, yt, w.T, None, "MatMul")
        graph.add_node(
            Node(
                graph.unique_name(f"{node.name}/transpose_back"),
                "Transpose",
                [yt],
                [node.outputs[0]],
                {"perm": [*range(len(out_shape) - 2), len(out_shape) - 1, len(out_shape) - 2]},
            )
        )
        return True

    def _fuse_add(self, graph: Graph, node: Node) -> bool:
        add = single_consumer(graph, node.outputs[0])
        if add is None or add.op != "Add" or add.domain or len(add.inputs) != 2:
            return False
        other = [t for t in add.inputs if t != node.outputs[0]]
        if len(other) != 1:
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
        inputs = list(node.inputs)
        if len(inputs) > 2:
            bias = bias + graph.initializers[inputs[2]].astype(np.float64)
        b_name = graph.unique_name(f"{node.name}.bias")
        graph.add_initializer(b_name, bias.astype(np.float32))
        node = graph.set_inputs(node, [*inputs[:2], b_name])
        take_output(graph, add, node)
        return True
