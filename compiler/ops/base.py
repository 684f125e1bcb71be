"""The types of the op registry: :class:`OpDef`, :class:`OpCall` and the sign rules.

The registry itself is :mod:`anacc.compiler.ops.registry`; see it for what an op declares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from anacc.compiler.ir import Node

Tensor = torch.Tensor
Inputs = Sequence[torch.Tensor | None]


@dataclass(frozen=True)
class OpCall:
    """One node being executed: its attributes and the version of its op's domain."""

    node: Node
    opset: int

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)


TorchFn = Callable[[OpCall, Inputs], Sequence[torch.Tensor]]


class SignContext(Protocol):
    """What a sign rule may ask about the node's inputs."""

    def nonneg(self, tensor: str) -> bool:
        """True if ``tensor`` is provably >= 0 everywhere."""

    def constant(self, tensor: str) -> np.ndarray | None:
        """The value of a constant tensor, else None."""


SignRule = Callable[[Node, SignContext], bool]


def never_nonneg(node: Node, ctx: SignContext) -> bool:
    return False


def always_nonneg(node: Node, ctx: SignContext) -> bool:
    return True


def inputs_nonneg(*indices: int) -> SignRule:
    """Non-negative when the inputs at ``indices`` (all inputs if none given) are."""

    def rule(node: Node, ctx: SignContext) -> bool:
        picked = [node.inputs[i] for i in indices if i < len(node.inputs)] if indices else []
        tensors = picked if indices else list(node.inputs)
        return all(ctx.nonneg(t) for t in tensors if t)

    return rule


@dataclass(frozen=True)
class OpDef:
    """One op; see the module docstring."""

    name: str
    domain: str = ""
    torch: TorchFn | None = None
    sign: SignRule = never_nonneg
    analog: str | None = None
    shape_op: bool = False
    # inputs that hold trained per-channel parameters (fine-tuning trains them when constant)
    params: tuple[int, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.domain, self.name)
