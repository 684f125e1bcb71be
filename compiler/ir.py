"""The graph IR: operations as nodes of a networkx DiGraph, tensors on the edges.

A :class:`Graph` owns
- its :class:`Node` objects (op type, domain, attributes, input and output tensor names),
  stored on a ``networkx.DiGraph`` keyed by node name; an edge ``producer -> consumer`` carries
  the name of the tensor it passes (``tensor`` edge attribute);
- ``tensors``: the :class:`TensorInfo` (shape, dtype) of every value whose type is known;
- ``initializers``: constant tensors as numpy arrays (weights, biases, folded constants);
- ``inputs`` / ``outputs``: the graph's runtime inputs and outputs;
- ``opsets``: the ONNX operator sets (domain -> version) its nodes follow;
- ``folded``: the source model's nodes that were computed at compile time (name -> op).

Nodes keep the ONNX form of the op they came from: ONNX op type, domain and attributes
(decoded to Python values, with their ONNX attribute types kept for writing them back), so a
digital node runs with exactly the semantics onnxruntime gives it. The compiler's own analog op
is ``Linear`` (see :mod:`anacc.passes.canonicalize`).

Edges follow the nodes: every edit goes through the graph (:meth:`Graph.add_node`,
:meth:`Graph.remove_node`, :meth:`Graph.set_inputs`, :meth:`Graph.set_outputs`,
:meth:`Graph.replace_uses`), which keeps the producer and consumer maps, the networkx edges
and the cached topological order in step. Nodes are frozen: a pass edits through the graph
or replaces the node.

Shapes are tuples whose entries are ``int`` or ``str``; a ``str`` is a symbolic dimension (the
batch dimension is named ``"N"``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx
import numpy as np

Dim = int | str
Shape = tuple[Dim, ...]
BATCH = "N"


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and numpy dtype name (``"float32"``, ``"int64"``...) of one tensor."""

    name: str
    shape: Shape
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def batched(self) -> bool:
        """True when the first dimension is the symbolic batch."""
        return bool(self.shape) and self.shape[0] == BATCH


def format_shape(shape: Shape) -> str:
    """``(N, 3, 32, 32)`` as ``N x 3 x 32 x 32`` (``scalar`` for rank 0)."""
    return " x ".join(str(d) for d in shape) if shape else "scalar"


def numel_per_sample(shape: Shape) -> int:
    """Product of the static dimensions (a symbolic one counts as 1)."""
    n = 1
    for d in shape:
        if isinstance(d, int):
            n *= d
    return n


@dataclass(frozen=True)
class Node:
    """One operation. ``inputs`` may contain ``""`` for an omitted optional input.

    ``attr_types`` maps an attribute name to its ONNX ``AttributeProto`` type where the
    Python value alone does not tell it (an empty list); ``subgraph_inputs`` names the
    outer-scope tensors that subgraph attributes (If, Loop, Scan bodies) read.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    attr_types: dict[str, int] = field(default_factory=dict)
    subgraph_inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "subgraph_inputs", tuple(self.subgraph_inputs))

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    @property
    def reads(self) -> tuple[str, ...]:
        """Every tensor the node depends on: its inputs and its subgraphs' outer reads."""
        return tuple(t for t in (*self.inputs, *self.subgraph_inputs) if t)

    def with_(self, **changes: Any) -> Node:
        """A copy with ``changes`` (dataclass fields)."""
        return replace(self, **changes)


class Graph:
    """A dataflow graph of :class:`Node` objects; see the module docstring."""

    def __init__(
        self,
        name: str = "graph",
        inputs: list[TensorInfo] | None = None,
        outputs: list[TensorInfo] | None = None,
        initializers: dict[str, np.ndarray] | None = None,
        tensors: dict[str, TensorInfo] | None = None,
        opsets: dict[str, int] | None = None,
    ) -> None:
        self.name = name
        self.inputs: list[TensorInfo] = list(inputs or [])
        self.outputs: list[TensorInfo] = list(outputs or [])
        self.initializers: dict[str, np.ndarray] = dict(initializers or {})
        self.tensors: dict[str, TensorInfo] = dict(tensors or {})
        self.opsets: dict[str, int] = dict(opsets or {"": 17})
        self.folded: dict[str, str] = {}
        self._g = nx.DiGraph()
        self._producer: dict[str, str] = {}
        self._consumers: dict[str, dict[str, None]] = {}
        self._order: list[Node] | None = None
        for t in self.inputs + self.outputs:
            self.tensors.setdefault(t.name, t)

    @property
    def opset(self) -> int:
        """The version of the default ONNX domain."""
        return self.opsets.get("", 0)

    # -- construction -------------------------------------------------------------------
    def add_node(self, node: Node) -> Node:
        assert node.name not in self._g, f"duplicate node name {node.name!r}"
        for out in node.outputs:
            assert not out or out not in self._producer, f"tensor {out!r} produced twice"
        self._g.add_node(node.name, node=node)
        self._link(node)
        return node

    def remove_node(self, name: str) -> Node:
        node = self.node(name)
        self._unlink(node)
        self._g.remove_node(name)
        self._order = None
        return node

    def set_inputs(self, node: Node, inputs: Iterable[str]) -> Node:
        """Replace the node's inputs; returns the new node (nodes are frozen)."""
        return self._swap(node, node.with_(inputs=tuple(inputs)))

    def set_outputs(self, node: Node, outputs: Iterable[str]) -> Node:
        """Replace the node's outputs; returns the new node."""
        new = node.with_(outputs=tuple(outputs))
        for out in new.outputs:
            owner = self._producer.get(out)
            assert not out or owner in (None, node.name), f"tensor {out!r} produced twice"
        return self._swap(node, new)

    def replace_node(self, node: Node, new: Node) -> Node:
        """Put ``new`` (same name) in the place of ``node``."""
        assert new.name == node.name, "replace_node keeps the node name"
        return self._swap(node, new)

    def set_tensor(self, info: TensorInfo) -> None:
        self.tensors[info.name] = info

    def add_initializer(self, name: str, value: np.ndarray) -> None:
        self.initializers[name] = value
        self.tensors[name] = TensorInfo(name, tuple(int(d) for d in value.shape), value.dtype.name)

    def unique_name(self, base: str) -> str:
        """A node or tensor name not used yet, derived from ``base``."""

        def used(name: str) -> bool:
            return (
                name in self._g
                or name in self.tensors
                or name in self._producer
                or name in self._consumers
            )

        if not used(base):
            return base
        i = 1
        while used(f"{base}_{i}"):
            i += 1
        return f"{base}_{i}"

    def replace_uses(self, old: str, new: str) -> None:
        """Make every consumer (and graph output) of tensor ``old`` read ``new`` instead."""
        for name in list(self._consumers.get(old, ())):
            node = self.node(name)
            self.set_inputs(node, [new if t == old else t for t in node.inputs])
            node = self.node(name)
            if old in node.subgraph_inputs:
                subs = [new if t == old else t for t in node.subgraph_inputs]
                self._swap(node, node.with_(subgraph_inputs=tuple(subs)))
        self.outputs = [
            TensorInfo(new, o.shape, o.dtype) if o.name == old else o for o in self.outputs
        ]

    def _swap(self, node: Node, new: Node) -> Node:
        self._unlink(node)
        self._g.nodes[node.name]["node"] = new
        self._link(new)
        return new

    def _link(self, node: Node) -> None:
        for out in node.outputs:
            if out:
                self._producer[out] = node.name
                for consumer in self._consumers.get(out, ()):
                    self._g.add_edge(node.name, consumer, tensor=out)
        for t in node.reads:
            self._consumers.setdefault(t, {})[node.name] = None
            src = self._producer.get(t)
            if src is not None:
                self._g.add_edge(src, node.name, tensor=t)
        self._order = None

    def _unlink(self, node: Node) -> None:
        for t in node.reads:
            users = self._consumers.get(t)
            if users is not None:
                users.pop(node.name, None)
                if not users:
                    del self._consumers[t]
        for out in node.outputs:
            if out and self._producer.get(out) == node.name:
                del self._producer[out]
        self._g.remove_edges_from(list(self._g.in_edges(node.name)))
        self._g.remove_edges_from(list(self._g.out_edges(node.name)))
        self._order = None

    # -- queries ------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        return self._g.nodes[name]["node"]

    def __contains__(self, name: str) -> bool:
        return name in self._g

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def nodes(self) -> list[Node]:
        """All nodes in a deterministic topological order (ties broken by insertion order);
        computed once per edit."""
        if self._order is None:
            position = {n: i for i, n in enumerate(self._g.nodes)}
            names = nx.lexicographical_topological_sort(self._g, key=position.__getitem__)
            self._order = [self._g.nodes[n]["node"] for n in names]
        return list(self._order)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes())

    def producer(self, tensor: str) -> Node | None:
        name = self._producer.get(tensor)
        return None if name is None else self.node(name)

    def consumers(self, tensor: str) -> list[Node]:
        """The nodes reading ``tensor`` (inputs or subgraph reads), in the order of
        :meth:`nodes`."""
        names = self._consumers.get(tensor)
        if not names:
            return []
        if len(names) == 1:
            return [self.node(next(iter(names)))]
        return [n for n in self.nodes() if n.name in names]

    def is_graph_output(self, tensor: str) -> bool:
        return any(o.name == tensor for o in self.outputs)

    def shape(self, tensor: str) -> Shape:
        return self.tensors[tensor].shape

    def dtype(self, tensor: str) -> str:
        return self.tensors[tensor].dtype

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
            dict(self.opsets),
        )
        g.folded = dict(self.folded)
        for node in self.nodes():
            g.add_node(copy.deepcopy(node))
        return g

    def prune_unused(self) -> bool:
        """Drop nodes whose outputs nobody reads and unused initializers; True if any."""
        changed = False
        needed = {o.name for o in self.outputs}
        for node in reversed(self.nodes()):
            if any(o in needed for o in node.outputs):
                needed.update(node.reads)
            else:
                self.remove_node(node.name)
                changed = True
        for name in [k for k in self.initializers if k not in needed]:
            del self.initializers[name]
            changed = True
        live = needed | {t.name for t in self.inputs + self.outputs}
        live |= {t for n in self.nodes() for t in n.outputs}
        for name in [t for t in self.tensors if t not in live]:
            del self.tensors[name]
        return changed
