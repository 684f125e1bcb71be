"""The graph IR: operations as nodes of a networkx DiGraph, tensors on the edges.

A :class:`Graph` owns
- ``nodes``: :class:`Node` objects (op type, attributes, input and output tensor names),
  stored on a ``networkx.DiGraph`` keyed by node name; an edge ``producer -> consumer`` carries
  the name of the tensor it passes (``tensor`` edge attribute) and its :class:`TensorInfo`;
- ``tensors``: the :class:`TensorInfo` (shape, dtype) of every value whose shape is known;
- ``initializers``: constant tensors as numpy arrays (weights, biases, folded constants);
- ``inputs`` / ``outputs``: the graph's runtime inputs and outputs.

Shapes are tuples whose entries are ``int`` or ``str``; a ``str`` is a symbolic dimension
(the batch dimension is kept symbolic, by default named ``"N"``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

Dim = int | str
Shape = tuple[Dim, ...]


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and numpy dtype name (``"float32"``, ``"int64"``...) of one tensor."""

    name: str
    shape: Shape
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def numel_per_sample(self) -> int:
        """Product of the static dimensions (symbolic ones count as 1)."""
        n = 1
        for d in self.shape:
            if isinstance(d, int):
                n *= d
        return n


@dataclass
class Node:
    """One operation. ``inputs`` may contain ``""`` for an omitted optional input."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)


class Graph:
    """A dataflow graph of :class:`Node` objects; see the module docstring."""

    def __init__(
        self,
        name: str = "graph",
        inputs: list[TensorInfo] | None = None,
        outputs: list[TensorInfo] | None = None,
        initializers: dict[str, np.ndarray] | None = None,
        tensors: dict[str, TensorInfo] | None = None,
        opset: int = 17,
    ) -> None:
        self.name = name
        self.inputs: list[TensorInfo] = list(inputs or [])
        self.outputs: list[TensorInfo] = list(outputs or [])
        self.initializers: dict[str, np.ndarray] = dict(initializers or {})
        self.tensors: dict[str, TensorInfo] = dict(tensors or {})
        self.opset = opset
        self._g = nx.DiGraph()
        self._producer: dict[str, str] = {}
        for t in self.inputs + self.outputs:
            self.tensors.setdefault(t.name, t)

    # -- construction -------------------------------------------------------------------
    def add_node(self, node: Node) -> Node:
        assert node.name not in self._g, f"duplicate node name {node.name!r}"
        self._g.add_node(node.name, node=node)
        for out in node.outputs:
            if out:
                assert out not in self._producer, f"tensor {out!r} produced twice"
                self._producer[out] = node.name
        self._connect(node)
        return node

    def remove_node(self, name: str) -> Node:
        node = self.node(name)
        for out in node.outputs:
            if self._producer.get(out) == name:
                del self._producer[out]
        self._g.remove_node(name)
        return node

    def set_tensor(self, info: TensorInfo) -> None:
        self.tensors[info.name] = info

    def add_initializer(self, name: str, value: np.ndarray) -> None:
        self.initializers[name] = value
        self.tensors[name] = TensorInfo(name, tuple(int(d) for d in value.shape), value.dtype.name)

    def unique_name(self, base: str) -> str:
        """A node or tensor name not used yet, derived from ``base``."""
        if base not in self._g and base not in self.tensors and base not in self._producer:
            return base
        i = 1
        while True:
            cand = f"{base}_{i}"
            if cand not in self._g and cand not in self.tensors and cand not in self._producer:
                return cand
            i += 1

    def _connect(self, node: Node) -> None:
        for t in node.inputs:
            src = self._producer.get(t) if t else None
            if src is not None:
                self._g.add_edge(src, node.name, tensor=t)
        for out in node.outputs:
            for other_name, data in list(self._g.nodes(data=True)):
                other: Node = data["node"]
                if other_name != node.name and out and out in other.inputs:
                    self._g.add_edge(node.name, other_name, tensor=out)

    def rebuild_edges(self) -> None:
        """Recompute producer map and edges after nodes' inputs/outputs were edited."""
        self._producer = {}
        self._g.clear_edges()
        for name, data in self._g.nodes(data=True):
            for out in data["node"].outputs:
                if out:
                    self._producer[out] = name
        edges = [
            (self._producer[t], name, {"tensor": t})
            for name, data in self._g.nodes(data=True)
            for t in data["node"].inputs
            if t and t in self._producer
        ]
        self._g.add_edges_from(edges)

    def replace_uses(self, old: str, new: str) -> None:
        """Make every consumer (and graph output) of tensor ``old`` read ``new`` instead."""
        for node in self.nodes():
            node.inputs = [new if t == old else t for t in node.inputs]
        self.outputs = [
            TensorInfo(new, o.shape, o.dtype) if o.name == old else o for o in self.outputs
        ]
        self.rebuild_edges()

    # -- queries ------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        return self._g.nodes[name]["node"]

    def __contains__(self, name: str) -> bool:
        return name in self._g

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def nodes(self) -> list[Node]:
        """All nodes in a deterministic topological order (ties broken by insertion order)."""
        order = {n: i for i, n in enumerate(self._g.nodes)}
        names = nx.lexicographical_topological_sort(self._g, key=lambda n: order[n])
        return [self._g.nodes[n]["node"] for n in names]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes())

    def producer(self, tensor: str) -> Node | None:
        name = self._producer.get(tensor)
        return None if name is None else self.node(name)

    def consumers(self, tensor: str) -> list[Node]:
        """The nodes reading ``tensor``, in the order of :meth:`nodes`."""
        found = [d["node"] for d in self._g.nodes.values() if tensor in d["node"].inputs]
        if len(found) > 1:  # only then is the (costly) topological order needed
            order = {n.name: i for i, n in enumerate(self.nodes())}
            found.sort(key=lambda n: order[n.name])
        return found

    def is_graph_output(self, tensor: str) -> bool:
        return any(o.name == tensor for o in self.outputs)

    def shape(self, tensor: str) -> Shape:
        return self.tensors[tensor].shape

    def is_constant(self, tensor: str) -> bool:
        return tensor in self.initializers

    @property
    def nx_graph(self) -> nx.DiGraph:
        """The underlying networkx graph (read-only use)."""
        return self._g

    def copy(self) -> Graph:
        g = Graph(
            self.name,
            list(self.inputs),
            list(self.outputs),
            dict(self.initializers),
            dict(self.tensors),
            self.opset,
        )
        for node in self.nodes():
            g.add_node(copy.deepcopy(node))
        return g

    def prune_unused(self) -> bool:
        """Drop nodes whose outputs nobody reads and unused initializers; True if any."""
        changed = False
        while True:
            needed = {o.name for o in self.outputs}
            for node in self.nodes():
                needed.update(t for t in node.inputs if t)
            dead = [n.name for n in self.nodes() if not any(o in needed for o in n.outputs)]
            if not dead:
                break
            for name in dead:
                self.remove_node(name)
            changed = True
        used = {t for n in self.nodes() for t in n.inputs}
        used |= {o.name for o in self.outputs}
        for name in [k for k in self.initializers if k not in used]:
            del self.initializers[name]
            changed = True
        return changed
