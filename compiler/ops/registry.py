"""The op registry: what every ONNX op is to anacc, declared once per op.

An :class:`~anacc.compiler.ops.base.OpDef` says, for one op of a domain,
- ``analog``: which analog form the compiler can give it (``"matmul"`` for MatMul/Gemm,
  ``"conv"``, ``"recurrent"`` for LSTM/GRU/RNN), or None;
- ``sign``: whether its output is provably non-negative given its inputs (the signed-input
  pass uses it to feed the chip, which only takes unsigned inputs);
- ``torch``: a differentiable torch implementation with the op's ONNX semantics (all the
  opsets anacc reads), used where gradients are needed (fine-tuning); inference runs the
  digital side in onnxruntime, which runs every op it has a CPU kernel for;
- ``shape_op``: whether it computes shapes or indices rather than activations (inspection
  calls such nodes "shape ops");
- ``params``: the inputs that hold trained per-channel parameters (the scale and bias of a
  normalization), which fine-tuning trains when they are constants.

The ops are declared in :mod:`~anacc.compiler.ops.elementwise`, :mod:`~anacc.compiler.ops.nn`,
:mod:`~anacc.compiler.ops.attention`, :mod:`~anacc.compiler.ops.reduce`,
:mod:`~anacc.compiler.ops.resample` and :mod:`~anacc.compiler.ops.tensor`. Ops the registry does
not declare are still digital ops when onnxruntime runs them
(:mod:`anacc.compiler.ops.support`): they may make any value negative and have no torch
implementation. :func:`lookup` answers for every op.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

import torch
from anacc.compiler.ir import Node
from anacc.compiler.ops import attention, elementwise, nn, reduce, resample, tensor
from anacc.compiler.ops.base import Inputs, OpCall, OpDef


def _build(groups: Iterable[Iterable[OpDef]]) -> Mapping[tuple[str, str], OpDef]:
    table: dict[tuple[str, str], OpDef] = {}
    for group in groups:
        for op in group:
            assert op.key not in table, f"op {op.key} declared twice"
            table[op.key] = op
    return MappingProxyType(table)


REGISTRY: Mapping[tuple[str, str], OpDef] = _build(
    [elementwise.OPS, nn.OPS, attention.OPS, reduce.OPS, resample.OPS, tensor.OPS]
)


def normal_domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


def lookup(op: str, domain: str = "") -> OpDef:
    """The declaration of ``op`` (a plain digital op without torch form if undeclared)."""
    domain = normal_domain(domain)
    found = REGISTRY.get((domain, op))
    return found if found is not None else OpDef(op, domain)


def run_torch(node: Node, opset: int, inputs: Inputs) -> list[torch.Tensor]:
    """Execute ``node`` with its torch implementation (which must exist)."""
    op = lookup(node.op, node.domain)
    assert op.torch is not None, f"{node.op} has no torch implementation"
    return list(op.torch(OpCall(node, opset), inputs))


def torch_ops() -> list[str]:
    """Names of the default-domain ops with a torch implementation, sorted."""
    return sorted(name for (domain, name), op in REGISTRY.items() if not domain and op.torch)
