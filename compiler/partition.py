"""Where every node of a model runs, and why: the analog array, the host, or nowhere at run
time (computed while compiling).

:func:`placement` decides for one node of the frontend's graph; the passes that map nodes to
the array (canonicalize, lower-conv, lower-recurrent) follow it, and ``anacc inspect`` and
``anacc report`` print it:

- ``analog`` / ``constant weight``: MatMul or Gemm of a float activation by a constant 2-D
  matrix, a 1-D or 2-D Conv with a constant kernel (not depthwise);
- ``analog`` / ``recurrent weights``: LSTM, GRU or RNN with constant weights, unrolled over
  time (the gates run on the host);
- ``digital`` / ``activation x activation``: a product without a constant operand;
- ``digital`` / another reason the product cannot map (depthwise, a per-row bias, ...);
- ``digital`` / ``shape op``: ops that compute shapes or indices, ``digital`` / ``no analog
  form``: every other op;
- ``folded`` / ``computed at compile time``: nodes whose outputs were known before run time.

:func:`macs_per_sample` counts a node's multiply-accumulates for one sample (a symbolic
batch counts as 1; a fixed-shape model counts one run).
"""

from __future__ import annotations

from dataclasses import dataclass

from anacc.compiler.ir import Graph, Node, numel_per_sample
from anacc.compiler.ops import lookup

ANALOG, DIGITAL, FOLDED = "analog", "digital", "folded"

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {
    "LSTM": ("Sigmoid", "Tanh", "Tanh"),
    "GRU": ("Sigmoid", "Tanh"),
    "RNN": ("Tanh",),
}
# activation name -> ONNX op and the attributes its alpha/beta feed
_ACTIVATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Sigmoid": ("Sigmoid", ()),
    "Tanh": ("Tanh", ()),
    "Relu": ("Relu", ()),
    "Softsign": ("Softsign", ()),
    "Softplus": ("Softplus", ()),
    "LeakyRelu": ("LeakyRelu", ("alpha",)),
    "ThresholdedRelu": ("ThresholdedRelu", ("alpha",)),
    "Elu": ("Elu", ("alpha",)),
    "HardSigmoid": ("HardSigmoid", ("alpha", "beta")),
}


def recurrent_activations(node: Node, directions: int) -> list[tuple[str, dict]] | None:
    """The gate activations (op and attributes) for every direction; None if unsupported."""
    names = list(node.attr("activations") or DEFAULT_ACTIVATIONS[node.op] * directions)
    alphas = list(node.attr("activation_alpha") or [])
    betas = list(node.attr("activation_beta") or [])
    out = []
    for name in names:
        found = _ACTIVATIONS.get(name)
        if found is None:
            return None
        op, params = found
        attrs: dict = {}
        if "alpha" in params and alphas:
            attrs["alpha"] = float(alphas.pop(0))
        if "beta" in params and betas:
            attrs["beta"] = float(betas.pop(0))
        out.append((op, attrs))
    per = len(DEFAULT_ACTIVATIONS[node.op])
    return out if len(out) == per * directions else None


def recurrent_blocker(graph: Graph, node: Node) -> str:
    """Why a recurrent node cannot be unrolled onto the array (empty if it can)."""
    inputs = list(node.inputs) + [""] * (8 - len(node.inputs))
    weights = [graph.initializers.get(inputs[i]) for i in (1, 2)]
    if any(w is None for w in weights):
        return "weights not constant"
    if any(w.size == 0 or w.ndim != 3 for w in weights):
        return "empty weights"
    for i, what in ((3, "bias"), (7, "peepholes")):
        if inputs[i] and graph.initializers.get(inputs[i]) is None:
            return f"{what} not constant"
    x = graph.tensors.get(inputs[0])
    if x is None or x.rank != 3 or x.dtype != "float32":
        return "input shape unknown"
    layout = int(node.attr("layout", 0))
    steps = x.shape[1 if layout else 0]
    if not isinstance(steps, int):
        return "sequence length not static"
    if inputs[4]:
        lens = graph.initializers.get(inputs[4])
        if lens is None or not (lens == steps).all():
            return "sequence_lens shorten sequences"
    directions = 2 if node.attr("direction", "forward") == "bidirectional" else 1
    if recurrent_activations(node, directions) is None:
        return "activations without an ONNX op"
    return ""


@dataclass(frozen=True)
class PlacementRecord:
    """Where one node of the source model runs, why, and its multiply-accumulates."""

    node: str
    op: str
    where: str
    reason: str
    macs: int


def summary(records: tuple[PlacementRecord, ...] | list[PlacementRecord]) -> dict[str, object]:
    """Counts per placement, MACs per sample and the share on the array, digital ops by name."""
    counts: dict[str, int] = {}
    digital: dict[str, int] = {}
    for r in records:
        counts[r.where] = counts.get(r.where, 0) + 1
        if r.where == DIGITAL:
            digital[r.op] = digital.get(r.op, 0) + 1
    macs = sum(r.macs for r in records)
    analog = sum(r.macs for r in records if r.where == ANALOG)
    return {
        "nodes": dict(sorted(counts.items())),
        "macs_per_sample": macs,
        "analog_macs_per_sample": analog,
        "analog_share": analog / macs if macs else 0.0,
        "digital_ops": dict(sorted(digital.items())),
    }


@dataclass(frozen=True)
class Placement:
    where: str
    reason: str

    @property
    def analog(self) -> bool:
        return self.where == ANALOG


def _float_activation(graph: Graph, tensor: str) -> bool:
    info = graph.tensors.get(tensor)
    return info is not None and info.dtype == "float32" and not graph.is_constant(tensor)


def _matmul(graph: Graph, node: Node) -> Placement:
    a, b = node.inputs[0], node.inputs[1]
    const = [t for t in (a, b) if graph.is_constant(t)]
    if not const:
        return Placement(DIGITAL, "activation x activation")
    if len(const) == 2:
        return Placement(DIGITAL, "constant x constant")
    x = b if const[0] == a else a
    w = graph.initializers[const[0]]
    if w.ndim != 2:
        return Placement(DIGITAL, f"constant operand of rank {w.ndim}, not a matrix")
    if w.size == 0:
        return Placement(DIGITAL, "empty weight")
    if not _float_activation(graph, x):
        return Placement(DIGITAL, "the activation is not float32")
    if node.op == "Gemm":
        if const[0] != b:
            return Placement(DIGITAL, "the constant is Gemm's first operand")
        c = node.inputs[2] if len(node.inputs) > 2 else ""
        if c and not graph.is_constant(c):
            return Placement(DIGITAL, "Gemm's C is an activation")
        if c:
            out = w.shape[0] if node.attr("transB", 0) else w.shape[1]
            shape = graph.initializers[c].shape
            if graph.initializers[c].size != 1 and shape not in ((out,), (1, out)):
                return Placement(DIGITAL, "Gemm's C is not a bias (one value per row)")
    elif const[0] == a and len(graph.tensors[x].shape) < 2:
        return Placement(DIGITAL, "matrix times a vector")
    return Placement(ANALOG, "constant weight")


def _conv(graph: Graph, node: Node) -> Placement:
    w = graph.initializers.get(node.inputs[1])
    if w is None:
        return Placement(DIGITAL, "activation x activation")
    if w.ndim not in (3, 4):
        return Placement(DIGITAL, f"{w.ndim - 2}-D convolution (1-D and 2-D map)")
    if w.size == 0:
        return Placement(DIGITAL, "empty weight")
    if not _float_activation(graph, node.inputs[0]):
        return Placement(DIGITAL, "the activation is not float32")
    if len(node.inputs) > 2 and node.inputs[2] and not graph.is_constant(node.inputs[2]):
        return Placement(DIGITAL, "bias is an activation")
    group = int(node.attr("group", 1))
    if group > 1 and w.shape[1] == 1:
        return Placement(DIGITAL, "depthwise convolution (cheaper on the host)")
    if node.attr("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        spatial = graph.shape(node.inputs[0])[2:]
        if not all(isinstance(d, int) for d in spatial):
            return Placement(DIGITAL, "auto_pad needs a static input size")
    return Placement(ANALOG, "constant weight")


def placement(graph: Graph, node: Node) -> Placement:
    """Where ``node`` of the frontend's graph runs; see the module docstring."""
    op = lookup(node.op, node.domain)
    if node.domain == "" and node.op in ("MatMul", "Gemm"):
        return _matmul(graph, node)
    if node.domain == "" and node.op == "Conv":
        return _conv(graph, node)
    if op.analog == "recurrent":
        why = recurrent_blocker(graph, node)
        return Placement(DIGITAL, why) if why else Placement(ANALOG, "recurrent weights")
    if node.domain == "" and node.op == "BatchNormalization" and _folds_into_layer(graph, node):
        return Placement(FOLDED, "folded into the analog layer before it")
    if node.domain == "" and node.op == "Add" and _bias_of_layer(graph, node):
        return Placement(FOLDED, "bias of the analog layer before it")
    if op.shape_op:
        return Placement(DIGITAL, "shape op")
    return Placement(DIGITAL, "no analog form")


def _bias_of_layer(graph: Graph, add: Node) -> bool:
    """The canonicalize pass's condition: an Add of a constant, one value per output column,
    that is the only reader of an analog MatMul's output."""
    if len(add.inputs) != 2:
        return False
    for x, c in (add.inputs, tuple(reversed(add.inputs))):
        producer = graph.producer(x)
        if producer is None or producer.domain or producer.op != "MatMul":
            continue
        const = graph.initializers.get(c)
        if const is None or len(graph.consumers(x)) != 1 or graph.is_graph_output(x):
            continue
        weight = next(
            (graph.initializers[t] for t in producer.inputs if graph.is_constant(t)), None
        )
        if weight is None or weight.ndim != 2 or not placement(graph, producer).analog:
            continue
        out = weight.shape[1] if graph.is_constant(producer.inputs[1]) else weight.shape[0]
        if const.size in (1, out) and const.shape[-1:] in ((), (1,), (out,)):
            return True
    return False


def _folds_into_layer(graph: Graph, bn: Node) -> bool:
    """The fold-batchnorm pass's condition: a BatchNormalization (inference, constant
    statistics) that is the only reader of an analog Conv's output, or of a 2-D dense one."""
    producer = graph.producer(bn.inputs[0])
    if producer is None or producer.domain or producer.op not in ("Conv", "Gemm", "MatMul"):
        return False
    users = graph.consumers(bn.inputs[0])
    if len(users) != 1 or graph.is_graph_output(bn.inputs[0]) or bn.attr("training_mode", 0):
        return False
    if any(bn.outputs[1:]) or not all(graph.is_constant(t) for t in bn.inputs[1:5]):
        return False
    dense_2d = producer.op != "Conv" and len(graph.shape(bn.inputs[0])) == 2
    return placement(graph, producer).analog and (producer.op == "Conv" or dense_2d)


def macs_per_sample(graph: Graph, node: Node) -> int:
    """Multiply-accumulates per sample of a Conv, Gemm, MatMul, LSTM, GRU or RNN; 0 else."""
    if node.domain:
        return 0
    if node.op == "Conv":
        w_shape = graph.shape(node.inputs[1])
        return numel_per_sample(graph.shape(node.outputs[0])) * numel_per_sample(w_shape[1:])
    if node.op in ("Gemm", "MatMul"):
        a_shape = graph.shape(node.inputs[0])
        if not a_shape:
            return 0
        k = a_shape[0] if node.op == "Gemm" and node.attr("transA", 0) else a_shape[-1]
        out = numel_per_sample(graph.shape(node.outputs[0]))
        return out * (k if isinstance(k, int) else 1)
    if node.op in ("LSTM", "GRU", "RNN"):
        x = graph.shape(node.inputs[0])
        w, r = graph.shape(node.inputs[1]), graph.shape(node.inputs[2])
        steps = x[1] if node.attr("layout", 0) else x[0]
        steps = steps if isinstance(steps, int) else 1
        # per direction and step: every gate row times the input and the hidden state
        return steps * int(w[0]) * int(w[1]) * (int(w[2]) + int(r[2]))
    return 0


def param_count(graph: Graph, node: Node) -> int:
    """Elements of the node's constant inputs (weights, biases, BN statistics, ...)."""
    return sum(int(graph.initializers[t].size) for t in node.inputs if graph.is_constant(t))
