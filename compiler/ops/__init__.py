"""The op registry (:mod:`~anacc.compiler.ops.registry`) and the torch forms of the ops."""

from anacc.compiler.ops.base import OpCall, OpDef
from anacc.compiler.ops.registry import REGISTRY, lookup, run_torch, torch_ops
from anacc.compiler.ops.support import runs_digitally

__all__ = ["REGISTRY", "OpCall", "OpDef", "lookup", "run_torch", "runs_digitally", "torch_ops"]
