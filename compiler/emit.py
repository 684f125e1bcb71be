"""Write a graph back as an ONNX model with the float semantics of its nodes.

ONNX-form nodes are written as they are. The compiler's ``Linear`` becomes ``MatMul`` (plus
``Add`` for the bias) over the last axis, or, for a lowered convolution, a ``Conv`` with the
kernel folded back from the patch matrix (:meth:`ConvGeometry.kernel`). Used to run the
compiled graph in onnxruntime (calibration statistics), to export a program, and to give the
digital regions of a program to onnxruntime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from anacc.compiler.conv import ConvGeometry
from anacc.compiler.ir import BATCH, Graph, Node, TensorInfo
from anacc.compiler.onnx_nodes import node_proto
from onnx import helper, numpy_helper

MIN_IR_VERSION = 8
ANALOG_OP = "Linear"


@dataclass
class OnnxBuilder:
    """Nodes and initializers of a model being written."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)

    def const(self, name: str, value: np.ndarray) -> str:
        if name not in self.initializers:
            self.initializers[name] = np.asarray(value)
        return name

    def linear(
        self,
        name: str,
        x: str,
        y: str,
        weight: np.ndarray,
        bias: np.ndarray | None,
        conv: ConvGeometry | None,
        key: str | None = None,
    ) -> None:
        """``y = x @ weight + bias`` (or the convolution ``conv`` lowers) as ONNX nodes;
        nodes of one ``key`` (default: ``name``) share their initializers."""
        key = key or name
        b = None if bias is None else self.const(f"{key}::b", bias.astype(np.float32))
        if conv is not None:
            w = self.const(f"{key}::k", conv.kernel(np.asarray(weight, np.float32)))
            attrs = {
                "kernel_shape": list(conv.kernel_shape),
                "strides": list(conv.strides),
                "pads": list(conv.pads),
                "dilations": list(conv.dilations),
                "group": conv.group,
            }
            inputs = [x, w] + ([b] if b else [])
            self.nodes.append(helper.make_node("Conv", inputs, [y], name=name, **attrs))
            return
        w = self.const(f"{key}::w", np.asarray(weight, np.float32))
        if b is None:
            self.nodes.append(helper.make_node("MatMul", [x, w], [y], name=name))
            return
        t = f"{name}::mm"
        self.nodes.append(helper.make_node("MatMul", [x, w], [t], name=name))
        self.nodes.append(helper.make_node("Add", [t, b], [y], name=f"{name}/bias"))

    def node(self, node: Node) -> None:
        self.nodes.append(node_proto(node))


def value_info(info: TensorInfo) -> onnx.ValueInfoProto:
    """A graph input or output; symbolic dims stay symbolic (``None`` for unknown ones), an
    ``unknown`` dtype leaves the type out."""
    if info.dtype == "unknown":
        return helper.make_empty_tensor_value_info(info.name)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype))
    dims = [d if isinstance(d, int) or d == BATCH else None for d in info.shape]
    return helper.make_tensor_value_info(info.name, elem, dims)


def model(
    builder: OnnxBuilder,
    inputs: Sequence[TensorInfo],
    outputs: Iterable[TensorInfo],
    opsets: Mapping[str, int],
    name: str = "anacc",
    producer: str = "anacc",
) -> onnx.ModelProto:
    """The model of ``builder``'s nodes (every needed initializer included)."""
    used = {t for n in builder.nodes for t in n.input}
    used |= {t for n in builder.nodes for a in n.attribute for t in _subgraph_reads(a)}
    inits = [numpy_helper.from_array(v, k) for k, v in builder.initializers.items() if k in used]
    graph = helper.make_graph(
        builder.nodes,
        name,
        [value_info(t) for t in inputs],
        [value_info(t) for t in outputs],
        inits,
    )
    imports = [helper.make_opsetid(d, v) for d, v in sorted(opsets.items())]
    proto = helper.make_model(graph, opset_imports=imports, producer_name=producer)
    proto.ir_version = max(MIN_IR_VERSION, helper.find_min_ir_version_for(imports, True))
    return proto


def _subgraph_reads(attr: onnx.AttributeProto) -> list[str]:
    graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
    return [t for g in graphs for n in g.node for t in n.input]


def graph_model(graph: Graph, extra_outputs: Sequence[str] = ()) -> onnx.ModelProto:
    """``graph`` as an ONNX model computing its float semantics; ``extra_outputs`` names
    intermediate tensors to expose as additional outputs."""
    builder = OnnxBuilder(initializers=dict(graph.initializers))
    for node in graph.nodes():
        if node.op == ANALOG_OP:
            w = graph.initializers[node.inputs[1]]
            b = graph.initializers[node.inputs[2]] if len(node.inputs) > 2 else None
            conv = node.attr("conv")
            key = node.attr("layer", node.name)
            builder.linear(node.name, node.inputs[0], node.outputs[0], w, b, conv, key)
        else:
            builder.node(node)
    present = {o.name for o in graph.outputs}
    extra = [TensorInfo(t, (), "unknown") for t in dict.fromkeys(extra_outputs) if t not in present]
    return model(builder, graph.inputs, [*graph.outputs, *extra], graph.opsets, graph.name)
