"""Lower Conv to a Linear over im2col patches.

Contract: every 1-D or 2-D ``Conv`` with a constant weight ``(C_out, C_in/g, *k)`` becomes a
``Linear`` whose ``conv`` attribute is its :class:`~anacc.compiler.conv.ConvGeometry` and whose
weight is the ``(C_in * prod(k), C_out)`` matrix over channel-major patches. ``auto_pad`` is
resolved into explicit pads from the input's spatial size. Grouped convolutions map
block-diagonally: the rows of group ``i`` feed only its output columns. The zeros cost array
area but no accuracy: the digital sum leaves out the reads of runs that hold no weight for a
column (:func:`~anacc.runtime.analog.used_reads`).

Depthwise convolutions (one input channel per group) stay digital: they do ``prod(k)`` MACs per
output, and block-diagonal tiles would use ``1/C`` of the array; the host does them cheaper.
"""

from __future__ import annotations

import numpy as np
from anacc.compiler.conv import ConvGeometry
from anacc.compiler.ir import Graph, Node
from anacc.compiler.ops.nn import resolve_pads
from anacc.compiler.partition import placement
from anacc.passes._util import constant
from anacc.passes.base import CompileContext, Pass, PassResult
from anacc.passes.canonicalize import linear_node


def conv_geometry(graph: Graph, node: Node, w: np.ndarray) -> ConvGeometry | None:
    """The geometry of an ONNX Conv node with weight ``w``; None if its input's spatial size
    is needed (auto_pad) and not static."""
    kernel = [int(k) for k in node.attr("kernel_shape", w.shape[2:])]
    n = len(kernel)
    strides = [int(s) for s in node.attr("strides", [1] * n)]
    dilations = [int(d) for d in node.attr("dilations", [1] * n)]
    needs_size = node.attr("auto_pad", "NOTSET") not in ("NOTSET", "", "VALID")
    spatial = graph.shape(node.inputs[0])[2:] if needs_size else ()
    if needs_size and not all(isinstance(d, int) for d in spatial):
        return None
    pads = resolve_pads(node, spatial, kernel, strides, dilations)
    group = int(node.attr("group", 1))
    return ConvGeometry(
        kernel_shape=tuple(kernel),
        strides=tuple(strides),
        pads=tuple(pads),
        dilations=tuple(dilations),
        group=group,
        in_channels=int(w.shape[1] * group),
        out_channels=int(w.shape[0]),
    )


class LowerConv(Pass):
    name = "lower-conv"
    requires = frozenset({"bn-folded"})
    provides = frozenset({"conv-lowered"})

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        notes: list[str] = []
        lowered = 0
        for node in graph.nodes():
            if node.op != "Conv" or node.domain:
                continue
            where = placement(graph, node)
            if not where.analog:
                notes.append(f"kept {node.name} digital ({where.reason})")
                continue
            w = graph.initializers[node.inputs[1]]
            conv = conv_geometry(graph, node, w)
            assert conv is not None, "placement checked the input size"
            group = conv.group
            mat = conv.weight_matrix(w)
            bias = None
            if len(node.inputs) > 2 and node.inputs[2]:
                bias = constant(graph, node.inputs[2])
            graph.remove_node(node.name)
            linear_node(
                graph, node.name, node.inputs[0], node.outputs[0], mat, bias, "Conv", conv=conv
            )
            lowered += 1
            shape = "x".join(map(str, conv.kernel_shape))
            notes.append(
                f"{node.name}: Conv {conv.in_channels}->{conv.out_channels} k{shape}"
                f" -> Linear {mat.shape[0]}x{mat.shape[1]}"
                + (f" (block-diagonal, {group} groups)" if group > 1 else "")
            )
        graph.prune_unused()
        return PassResult(graph, lowered > 0, notes)
