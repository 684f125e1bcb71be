"""Element-wise ops: activations, arithmetic, comparisons and logic, with numpy broadcasting."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from anacc.compiler.ir import Node
from anacc.compiler.ops._common import optional, torch_dtype
from anacc.compiler.ops.base import (
    Inputs,
    OpCall,
    OpDef,
    SignContext,
    always_nonneg,
    inputs_nonneg,
)

Unary = Callable[[torch.Tensor], torch.Tensor]


def _unary(fn: Unary) -> Callable[[OpCall, Inputs], list[torch.Tensor]]:
    return lambda call, inputs: [fn(inputs[0])]


def _same_dtype(fn: Callable[..., torch.Tensor]) -> Callable[[OpCall, Inputs], list[torch.Tensor]]:
    """A binary op whose result keeps the first input's dtype (ONNX types both alike)."""
    return lambda call, inputs: [fn(inputs[0], inputs[1]).to(inputs[0].dtype)]


def _div(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    a, b = inputs[0], inputs[1]
    if a.is_floating_point():
        return [a / b]
    return [torch.div(a, b, rounding_mode="trunc").to(a.dtype)]


def _mod(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    """``fmod=1`` truncates the quotient, ``fmod=0`` floors it (the result takes the divisor's
    sign); opsets before 28 allow floats with ``fmod=1`` only."""
    a, b = inputs[0], inputs[1]
    return [torch.fmod(a, b) if call.attr("fmod", 0) else torch.remainder(a, b)]


def _pow(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    base, exponent = inputs[0], inputs[1]
    if base.is_floating_point() and not exponent.is_floating_point():
        exponent = exponent.to(base.dtype)
    return [torch.pow(base, exponent).to(base.dtype)]


def _variadic(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    def run(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
        tensors = [t for t in inputs if t is not None]
        return [functools.reduce(fn, tensors)]

    return run


def _mean(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    tensors = [t for t in inputs if t is not None]
    return [functools.reduce(torch.add, tensors) / len(tensors)]


def _clip(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    if call.opset < 11:
        low, high = call.attr("min"), call.attr("max")
    else:
        lo_t, hi_t = optional(inputs, 1), optional(inputs, 2)
        low = None if lo_t is None else lo_t.reshape(()).item()
        high = None if hi_t is None else hi_t.reshape(()).item()
    if low is not None and high is not None and low > high:
        return [torch.full_like(x, high)]  # ONNX: every value becomes max
    return [x if low is None and high is None else torch.clamp(x, min=low, max=high)]


def _clip_nonneg(node: Node, ctx: SignContext) -> bool:
    if len(node.inputs) > 1 and node.inputs[1]:
        low = ctx.constant(node.inputs[1])
        return low is not None and float(low.reshape(-1)[0]) >= 0
    low = node.attrs.get("min")
    return (low is not None and low >= 0) or ctx.nonneg(node.inputs[0])


def _where_nonneg(node: Node, ctx: SignContext) -> bool:
    return all(ctx.nonneg(t) for t in node.inputs[1:3])


def _cast(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    dtype = torch_dtype(call.attr("to"))
    if x.is_floating_point() and not dtype.is_floating_point and dtype != torch.bool:
        x = torch.trunc(x)  # C-style conversion toward zero
    return [x.to(dtype)]


def _is_inf(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    pos = torch.isposinf(x) if call.attr("detect_positive", 1) else torch.zeros_like(x, dtype=bool)
    neg = torch.isneginf(x) if call.attr("detect_negative", 1) else torch.zeros_like(x, dtype=bool)
    return [pos | neg]


def _dropout(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    return [x, torch.ones_like(x, dtype=torch.bool)]


def _shrink(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    lambd, bias = float(call.attr("lambd", 0.5)), float(call.attr("bias", 0.0))
    out = torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))
    return [out.to(x.dtype)]


def _gelu(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    return [F.gelu(inputs[0], approximate=call.attr("approximate", "none"))]


def _prelu(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, slope = inputs[0], inputs[1]
    return [torch.where(x < 0, x * slope, x)]


def _bit_shift(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, y = inputs[0], inputs[1]
    shifted = x << y if call.attr("direction") == "LEFT" else x >> y
    return [shifted.to(x.dtype)]


def _unary_op(name: str, fn: Unary, nonneg: bool = False) -> OpDef:
    return OpDef(name, torch=_unary(fn), sign=always_nonneg if nonneg else inputs_nonneg(0))


def _signed_unary(name: str, fn: Unary) -> OpDef:
    """An op that may turn non-negative inputs negative (or its sign is not tracked)."""
    return OpDef(name, torch=_unary(fn))


def _attr_unary(
    name: str, fn: Callable[[OpCall, torch.Tensor], torch.Tensor], nonneg: bool = False
) -> OpDef:
    return OpDef(
        name,
        torch=lambda call, inputs: [fn(call, inputs[0])],
        sign=always_nonneg if nonneg else inputs_nonneg(0),
    )


def _selu(call: OpCall, x: torch.Tensor) -> torch.Tensor:
    alpha = float(call.attr("alpha", 1.67326319217681884765625))
    gamma = float(call.attr("gamma", 1.05070102214813232421875))
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


def _hard_sigmoid(call: OpCall, x: torch.Tensor) -> torch.Tensor:
    alpha, beta = float(call.attr("alpha", 0.2)), float(call.attr("beta", 0.5))
    return torch.clamp(alpha * x + beta, 0.0, 1.0)


def _hard_swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


def _binary(fn: Callable[..., torch.Tensor]) -> Callable[[OpCall, Inputs], list[torch.Tensor]]:
    return lambda call, inputs: [fn(inputs[0], inputs[1])]


# comparisons and logic give booleans (never negative)
_COMPARE = {
    "Equal": torch.eq,
    "Greater": torch.gt,
    "GreaterOrEqual": torch.ge,
    "Less": torch.lt,
    "LessOrEqual": torch.le,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
}
_BITWISE = {
    "BitwiseAnd": torch.bitwise_and,
    "BitwiseOr": torch.bitwise_or,
    "BitwiseXor": torch.bitwise_xor,
}

OPS: list[OpDef] = [
    # activations that never give negative values
    _unary_op("Relu", torch.relu, nonneg=True),
    _unary_op("Sigmoid", torch.sigmoid, nonneg=True),
    _unary_op("Abs", torch.abs, nonneg=True),
    _unary_op("Exp", torch.exp, nonneg=True),
    _unary_op("Sqrt", torch.sqrt, nonneg=True),
    _unary_op("Softplus", F.softplus, nonneg=True),
    _attr_unary("HardSigmoid", _hard_sigmoid, nonneg=True),
    # sign-preserving (non-negative in, non-negative out)
    _unary_op("Identity", lambda x: x),
    _unary_op("Ceil", torch.ceil),
    _unary_op("Floor", torch.floor),
    _unary_op("Round", torch.round),
    _unary_op("Sign", torch.sign),
    _unary_op("Reciprocal", torch.reciprocal),
    _unary_op("Sinh", torch.sinh),
    _unary_op("Tanh", torch.tanh),
    _unary_op("Atan", torch.atan),
    _unary_op("Asinh", torch.asinh),
    _unary_op("Asin", torch.asin),
    _unary_op("Atanh", torch.atanh),
    _unary_op("Erf", torch.erf),
    _unary_op("Softsign", F.softsign),
    _unary_op("HardSwish", _hard_swish),
    _unary_op("Mish", lambda x: x * torch.tanh(F.softplus(x))),
    _attr_unary("Swish", lambda call, x: x * torch.sigmoid(float(call.attr("alpha", 1.0)) * x)),
    _attr_unary("Elu", lambda call, x: F.elu(x, float(call.attr("alpha", 1.0)))),
    _attr_unary("Celu", lambda call, x: F.celu(x, float(call.attr("alpha", 1.0)))),
    _attr_unary("Selu", _selu),
    _attr_unary("LeakyRelu", lambda call, x: F.leaky_relu(x, float(call.attr("alpha", 0.01)))),
    _attr_unary(
        "ThresholdedRelu",
        lambda call, x: torch.where(x > float(call.attr("alpha", 1.0)), x, torch.zeros_like(x)),
    ),
    OpDef("Gelu", torch=_gelu, sign=inputs_nonneg(0)),
    OpDef("Shrink", torch=_shrink),
    OpDef("Clip", torch=_clip, sign=_clip_nonneg),
    OpDef("Dropout", torch=_dropout, sign=inputs_nonneg(0)),
    OpDef("PRelu", torch=_prelu, sign=inputs_nonneg(0)),
    # values of any sign
    _signed_unary("Neg", torch.neg),
    _signed_unary("Tan", torch.tan),
    _signed_unary("Log", torch.log),
    _signed_unary("Cos", torch.cos),
    _signed_unary("Sin", torch.sin),
    _signed_unary("Cosh", torch.cosh),
    _signed_unary("Acos", torch.acos),
    _signed_unary("Acosh", torch.acosh),
    _unary_op("Not", torch.logical_not, nonneg=True),
    _unary_op("BitwiseNot", torch.bitwise_not),
    _unary_op("IsNaN", torch.isnan, nonneg=True),
    OpDef("IsInf", torch=_is_inf, sign=always_nonneg),
    OpDef("Cast", torch=_cast, sign=inputs_nonneg(0)),
    OpDef(
        "CastLike",
        torch=lambda call, inputs: [inputs[0].to(inputs[1].dtype)],
        sign=inputs_nonneg(0),
    ),
    # binary and variadic arithmetic
    OpDef("Add", torch=_same_dtype(torch.add), sign=inputs_nonneg()),
    OpDef("Sub", torch=_same_dtype(torch.sub)),
    OpDef("Mul", torch=_same_dtype(torch.mul), sign=inputs_nonneg()),
    OpDef("Div", torch=_div, sign=inputs_nonneg()),
    OpDef("Pow", torch=_pow, sign=inputs_nonneg(0)),
    OpDef("Mod", torch=_mod, sign=inputs_nonneg()),
    OpDef("Sum", torch=_variadic(torch.add), sign=inputs_nonneg()),
    OpDef("Max", torch=_variadic(torch.maximum), sign=inputs_nonneg()),
    OpDef("Min", torch=_variadic(torch.minimum), sign=inputs_nonneg()),
    OpDef("Mean", torch=_mean, sign=inputs_nonneg()),
    OpDef("Where", torch=lambda call, inputs: [torch.where(*inputs[:3])], sign=_where_nonneg),
    OpDef("BitShift", torch=_bit_shift, sign=inputs_nonneg(0)),
    *(OpDef(name, torch=_binary(fn), sign=always_nonneg) for name, fn in _COMPARE.items()),
    *(OpDef(name, torch=_same_dtype(fn), sign=inputs_nonneg()) for name, fn in _BITWISE.items()),
]
