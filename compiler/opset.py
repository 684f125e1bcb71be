"""The ops anacc compiles, which of them run on the analog array, and their size.

- :data:`SUPPORTED_OPS`: exactly the op table of docs/ir.md; anything else in a model is
  rejected unless constant folding removes it.
- :data:`MIN_OPSET` .. :data:`MAX_OPSET`: default-domain opsets read directly; others are
  converted to :data:`CONVERT_OPSET` first.
- :func:`is_analog`: Gemm, MatMul and Conv whose weight operand is a constant run on the
  analog array; a product of two activations is digital.
- :func:`param_count` and :func:`macs_per_sample` count a node's constant input elements and
  its multiply-accumulates for one sample (symbolic batch dimensions count as their
  coefficient, so ``"N"`` is one sample).
"""

from __future__ import annotations

from anacc.compiler import symdim
from anacc.compiler.ir import Graph, Node

SUPPORTED_OPS: frozenset[str] = frozenset(
    {
        "Gemm",
        "MatMul",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Sum",
        "Conv",
        "BatchNormalization",
        "Relu",
        "Sigmoid",
        "Tanh",
        "Identity",
        "Dropout",
        "LeakyRelu",
        "Clip",
        "Softmax",
        "LogSoftmax",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "ReduceMean",
        "Flatten",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "LRN",
        "Pad",
    }
)

ANALOG_OPS: frozenset[str] = frozenset({"Gemm", "MatMul", "Conv"})

MIN_OPSET = 9
MAX_OPSET = 21
CONVERT_OPSET = 17


def weight_input(graph: Graph, node: Node) -> str | None:
    """The constant weight operand of a Gemm/MatMul/Conv, or None if it has none."""
    if node.op == "Conv":
        return node.inputs[1] if graph.is_constant(node.inputs[1]) else None
    if node.op in ("Gemm", "MatMul"):
        constant = [t for t in node.inputs[:2] if graph.is_constant(t)]
        return constant[0] if len(constant) == 1 else None
    return None


def is_analog(graph: Graph, node: Node) -> bool:
    """True for a Gemm, MatMul or Conv with exactly one constant weight operand."""
    return node.op in ANALOG_OPS and weight_input(graph, node) is not None


def param_count(graph: Graph, node: Node) -> int:
    """Elements of the node's constant inputs (weights, biases, BN statistics, ...)."""
    return sum(int(graph.initializers[t].size) for t in node.inputs if graph.is_constant(t))


def macs_per_sample(graph: Graph, node: Node) -> int:
    """Multiply-accumulates per sample of a Conv, Gemm or MatMul; 0 for every other op.

    Conv: output elements x (C_in / group) x kernel size. Gemm/MatMul: output elements x the
    reduced dimension, which is ``in * out`` per sample and grows with MatMul batch dims.
    """
    if node.op not in ANALOG_OPS:
        return 0
    out = symdim.numel_per_sample(graph.shape(node.outputs[0]))
    if node.op == "Conv":
        w_shape = graph.shape(node.inputs[1])
        return out * symdim.numel_per_sample(w_shape[1:])
    a_shape = graph.shape(node.inputs[0])
    gemm_k = a_shape[0] if node.attrs.get("transA") else a_shape[-1]
    k = gemm_k if node.op == "Gemm" else a_shape[-1]
    return out * symdim.per_sample(k)
