"""Lower Conv to a Linear over im2col patches.

Contract: every 1-D or 2-D ``Conv`` with a constant weight ``(C_out, C_in/g, *k)`` becomes a
``Linear`` whose ``conv`` attribute holds the geometry (``kernel_shape``, ``strides``, ``pads``,
``dilations``, ``group``, ``in_channels``, ``out_channels``) and whose weight is the
``(C_in * prod(k), C_out)`` matrix over channel-major patches (the layout of
``torch.nn.functional.unfold``). Grouped convolutions map block-diagonally: the rows of group
``i`` feed only its output columns, and the zeros cost array area but no accuracy.

Depthwise convolutions (one input channel per group) stay digital: they do ``prod(k)`` MACs per
output, and block-diagonal tiles would use ``1/C`` of the array; the host does them cheaper.
"""

from __future__ import annotations

import numpy as np
from anacc.compiler.ir import Graph, Node
from anacc.passes._util import constant
from anacc.passes.base import CompileContext, Pass, PassResult


def conv_weight_matrix(w: np.ndarray, group: int) -> np.ndarray:
    """``(C_out, C_in/g, *k)`` conv weight -> ``(C_in * prod(k), C_out)`` patch matrix."""
    c_out, cg = w.shape[0], w.shape[1]
    k = int(np.prod(w.shape[2:]))
    og = c_out // group
    mat = np.zeros((cg * group * k, c_out), dtype=w.dtype)
    for g in range(group):
        block = w[g * og : (g + 1) * og].reshape(og, cg * k).T
        mat[g * cg * k : (g + 1) * cg * k, g * og : (g + 1) * og] = block
    return mat


class LowerConv(Pass):
    name = "lower-conv"

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        notes: list[str] = []
        lowered = 0
        for node in graph.nodes():
            if node.op != "Conv":
                continue
            w = constant(graph, node.inputs[1])
            if w is None or w.ndim not in (3, 4):
                notes.append(f"kept {node.name} digital (weight not constant or not 1-D/2-D)")
                continue
            group = int(node.attr("group", 1))
            if group > 1 and w.shape[1] == 1:
                notes.append(f"kept depthwise {node.name} digital ({group} groups)")
                continue
            mat = conv_weight_matrix(w, group)
            conv = {
                "kernel_shape": [int(k) for k in w.shape[2:]],
                "strides": [int(s) for s in node.attr("strides")],
                "pads": [int(p) for p in node.attr("pads")],
                "dilations": [int(d) for d in node.attr("dilations")],
                "group": group,
                "in_channels": int(w.shape[1] * group),
                "out_channels": int(w.shape[0]),
            }
            graph.remove_node(node.name)
            w_name = graph.unique_name(f"{node.name}.weight_matrix")
            graph.add_initializer(w_name, mat.astype(np.float32))
            inputs = [node.inputs[0], w_name]
            if len(node.inputs) > 2 and node.inputs[2]:
                inputs.append(node.inputs[2])
            graph.add_node(Node(node.name, "Linear", inputs, list(node.outputs), {"conv": conv}))
            lowered += 1
            shape = "x".join(map(str, conv["kernel_shape"]))
            notes.append(
                f"{node.name}: Conv {conv['in_channels']}->{conv['out_channels']} k{shape}"
                f" -> Linear {mat.shape[0]}x{mat.shape[1]}"
                + (f" (block-diagonal, {group} groups)" if group > 1 else "")
            )
        graph.prune_unused()
        return PassResult(graph, lowered > 0, notes)
