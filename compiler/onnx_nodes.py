"""ONNX nodes and IR nodes, both ways: :func:`ir_node` and :func:`node_proto`.

An IR :class:`~anacc.compiler.ir.Node` holds an ONNX node's attributes as Python values
(ints, floats, strings, lists of them, numpy arrays for tensors, ``onnx.GraphProto`` for
subgraphs) and their ONNX attribute types, so that writing it back gives the same node.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from anacc.compiler.ir import Node
from onnx import AttributeProto, helper, numpy_helper

_SUBGRAPH_TYPES = (AttributeProto.GRAPH, AttributeProto.GRAPHS)


def decode(attr: AttributeProto) -> Any:
    """The Python value of an attribute (see the module docstring)."""
    if attr.type == AttributeProto.TENSOR:
        return numpy_helper.to_array(attr.t)
    if attr.type == AttributeProto.TENSORS:
        return [numpy_helper.to_array(t) for t in attr.tensors]
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if attr.type == AttributeProto.STRINGS:
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    if attr.type in (AttributeProto.INTS, AttributeProto.FLOATS):
        return list(value)
    return value


def encode(name: str, value: Any, attr_type: int | None = None) -> AttributeProto:
    """The ONNX attribute ``name`` holding ``value`` (of ``attr_type`` where given)."""
    if isinstance(value, np.ndarray):
        value = numpy_helper.from_array(value)
    elif isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        value = [numpy_helper.from_array(v) for v in value]
    elif isinstance(value, np.generic):
        value = value.item()
    return helper.make_attribute(name, value, attr_type=attr_type)


def outer_reads(graph: onnx.GraphProto) -> set[str]:
    """Tensors a subgraph reads from the scope around it (nested subgraphs included)."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.name for t in graph.sparse_initializer}
    reads: set[str] = set()
    for node in graph.node:
        reads.update(t for t in node.input if t and t not in defined)
        for attr in node.attribute:
            for sub in _subgraphs(attr):
                reads.update(t for t in outer_reads(sub) if t not in defined)
        defined.update(node.output)
    return reads - defined


def _subgraphs(attr: AttributeProto) -> Iterable[onnx.GraphProto]:
    if attr.type == AttributeProto.GRAPH:
        yield attr.g
    elif attr.type == AttributeProto.GRAPHS:
        yield from attr.graphs


def ir_node(proto: onnx.NodeProto, name: str) -> Node:
    """The IR node of ``proto``, named ``name``."""
    attrs = {a.name: decode(a) for a in proto.attribute}
    types = {a.name: int(a.type) for a in proto.attribute}
    inner: set[str] = set()
    for a in proto.attribute:
        for sub in _subgraphs(a):
            inner |= outer_reads(sub)
    return Node(
        name=name,
        op=proto.op_type,
        inputs=tuple(proto.input),
        outputs=tuple(proto.output),
        attrs=attrs,
        domain="" if proto.domain == "ai.onnx" else proto.domain,
        attr_types=types,
        subgraph_inputs=tuple(sorted(inner - set(proto.input))),
    )


def node_proto(node: Node) -> onnx.NodeProto:
    """The ONNX node of an IR node in ONNX form (not the compiler's ``Linear``)."""
    proto = helper.make_node(
        node.op, list(node.inputs), list(node.outputs), name=node.name, domain=node.domain
    )
    proto.attribute.extend(
        encode(k, v, node.attr_types.get(k)) for k, v in sorted(node.attrs.items())
    )
    return proto


def has_subgraphs(node: Node) -> bool:
    return any(t in _SUBGRAPH_TYPES for t in node.attr_types.values())
