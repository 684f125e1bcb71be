"""Small graph-editing helpers shared by several passes."""

from __future__ import annotations

import numpy as np
from anacc.compiler.ir import Graph, Node


def single_consumer(graph: Graph, tensor: str) -> Node | None:
    """The only node reading ``tensor``, or None if it has several readers or is an output."""
    if graph.is_graph_output(tensor):
        return None
    users = graph.consumers(tensor)
    return users[0] if len(users) == 1 else None


def constant(graph: Graph, tensor: str) -> np.ndarray | None:
    return graph.initializers.get(tensor) if tensor else None


def used_outputs(graph: Graph, node: Node) -> list[str]:
    """The node's outputs that something reads (or that are graph outputs)."""
    return [t for t in node.outputs if t and (graph.consumers(t) or graph.is_graph_output(t))]


def bypass(graph: Graph, node: Node) -> bool:
    """Remove a node whose first output equals its first input (Identity, inference
    Dropout), keeping graph output names stable.

    Returns False (and leaves the node) when its other outputs are used or the node is
    needed to name a graph output.
    """
    node = graph.node(node.name)  # an earlier bypass may have rewired its input
    src, out = node.inputs[0], node.outputs[0]
    if used_outputs(graph, node) != [out] or not src:
        return False
    if not graph.is_graph_output(out):
        graph.remove_node(node.name)
        graph.replace_uses(out, src)
        return True
    producer = graph.producer(src)
    if producer is None or graph.is_graph_output(src) or len(graph.consumers(src)) != 1:
        return False
    graph.remove_node(node.name)
    graph.set_outputs(producer, [out if t == src else t for t in producer.outputs])
    return True


def take_output(graph: Graph, victim: Node, keeper: Node) -> Node:
    """Remove ``victim`` (which reads ``keeper``'s only output) and let ``keeper`` produce
    ``victim``'s output tensor instead, so downstream names stay as they were; returns the
    updated keeper."""
    old = keeper.outputs[0]
    new = victim.outputs[0]
    graph.remove_node(victim.name)
    keeper = graph.set_outputs(graph.node(keeper.name), [new])
    graph.tensors.pop(old, None)
    return keeper
