"""Neural-network ops: products, convolutions, pools, normalizations and softmax.

MatMul, Gemm and Conv are also the ops the compiler maps onto the analog array when one
operand is a constant weight (``analog`` form); LSTM, GRU and RNN are lowered into analog
products and digital gates. Here they are the digital forms, for products of two
activations or weights the chip cannot take.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from anacc.compiler.ir import Node
from anacc.compiler.ops import window
from anacc.compiler.ops._common import axes, axis, optional
from anacc.compiler.ops.base import (
    Inputs,
    OpCall,
    OpDef,
    SignContext,
    always_nonneg,
    inputs_nonneg,
)
from anacc.compiler.ops.window import torch_pad_list


def resolve_pads(
    call: OpCall | Node,
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[int]:
    """Explicit pads (begins, then ends) of a window op (its call, or its IR node), with
    ``auto_pad`` resolved; ``spatial`` is read only for ``SAME_UPPER``/``SAME_LOWER``."""
    n = len(kernel)
    auto_pad = call.attr("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        return [int(p) for p in call.attr("pads", [0] * (2 * n))]
    if auto_pad == "VALID":
        return [0] * (2 * n)
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        head = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        begin.append(head)
        end.append(total - head)
    return begin + end


def _window(call: OpCall, x: torch.Tensor, kernel: Sequence[int]) -> tuple[list, list, list]:
    n = len(kernel)
    strides = list(call.attr("strides", [1] * n))
    dilations = list(call.attr("dilations", [1] * n))
    pads = resolve_pads(call, list(x.shape[2:]), kernel, strides, dilations)
    return strides, pads, dilations


def _gemm(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    a, b, c = inputs[0], inputs[1], optional(inputs, 2)
    a = a.t() if call.attr("transA", 0) else a
    b = b.t() if call.attr("transB", 0) else b
    y = float(call.attr("alpha", 1.0)) * (a @ b)
    return [y if c is None else y + float(call.attr("beta", 1.0)) * c]


def _conv(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, w, b = inputs[0], inputs[1], optional(inputs, 2)
    kernel = list(call.attr("kernel_shape", w.shape[2:]))
    strides, pads, dilations = _window(call, x, kernel)
    return [window.conv(x, w, b, strides, pads, dilations, int(call.attr("group", 1)))]


def _conv_transpose(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, w, b = inputs[0], inputs[1], optional(inputs, 2)
    n = x.dim() - 2
    kernel = list(call.attr("kernel_shape", w.shape[2:]))
    strides = list(call.attr("strides", [1] * n))
    dilations = list(call.attr("dilations", [1] * n))
    extra = list(call.attr("output_padding", [0] * n))
    group = int(call.attr("group", 1))
    spatial = list(x.shape[2:])
    full = [(spatial[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 for i in range(n)]
    target = call.attr("output_shape")
    auto_pad = call.attr("auto_pad", "NOTSET")
    if target is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if target is None:
            target = [spatial[i] * strides[i] for i in range(n)]
        target = list(target)[-n:]
        total = [full[i] + extra[i] - target[i] for i in range(n)]
        # as onnxruntime splits the total: halves rounded toward zero, the smaller one first
        # unless SAME_LOWER; a negative total (output_shape beyond the full size) grows the
        # output at the end
        halves = [int(t / 2) for t in total]
        if auto_pad == "SAME_LOWER":
            begins = [t - h for t, h in zip(total, halves, strict=True)]
        else:
            begins = halves
        pads = begins + [t - bg for t, bg in zip(total, begins, strict=True)]
    else:
        pads = list(call.attr("pads", [0] * (2 * n)))
    transpose = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
    y = transpose(x, w, None, strides, 0, 0, group, dilations)
    # the pads crop the full output (asymmetric crops are allowed in ONNX); output_padding
    # and negative pads grow it at the end, where only the bias arrives
    ends = [pads[n + i] - extra[i] for i in range(n)]
    y = F.pad(y, torch_pad_list([-p for p in pads[:n]], [-e for e in ends]))
    return [y if b is None else y + _per_channel(b, y.dim())]


def _per_channel(t: torch.Tensor, rank: int) -> torch.Tensor:
    return t.reshape((-1,) + (1,) * (rank - 2))


def _batch_norm(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, scale, bias, mean, var = inputs[:5]
    eps = float(call.attr("epsilon", 1e-5))
    outputs = [mean, var]
    if call.attr("training_mode", 0):  # opset 14: batch statistics, updated running ones
        dims = [d for d in range(x.dim()) if d != 1]
        batch_mean = x.mean(dims)
        batch_var = x.var(dims, unbiased=False)
        momentum = float(call.attr("momentum", 0.9))
        outputs = [mean * momentum + batch_mean * (1 - momentum)]
        outputs.append(var * momentum + batch_var * (1 - momentum))
        mean, var = batch_mean, batch_var
    factor = _per_channel(scale / torch.sqrt(var + eps), x.dim())
    y = (x - _per_channel(mean, x.dim())) * factor + _per_channel(bias, x.dim())
    return [y, *outputs][: max(1, len(call.node.outputs))]


def _instance_norm(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, scale, bias = inputs[:3]
    eps = float(call.attr("epsilon", 1e-5))
    return [F.instance_norm(x, weight=scale, bias=bias, eps=eps)]


def _layer_norm(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, scale, bias = inputs[0], inputs[1], optional(inputs, 2)
    at = axis(int(call.attr("axis", -1)), x.dim())
    eps = float(call.attr("epsilon", 1e-5))
    dims = tuple(range(at, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    centered = x - mean
    var = (centered * centered).mean(dim=dims, keepdim=True)
    inv_std = torch.rsqrt(var + eps)
    y = centered * inv_std * scale
    y = y if bias is None else y + bias
    return [y, mean, inv_std][: max(1, len(call.node.outputs))]


def _rms_norm(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    """Opset 23: ``x / sqrt(mean(x^2) + epsilon) * scale`` over the axes from ``axis`` on,
    computed in float32 for narrower inputs (``stash_type`` 1)."""
    x, scale = inputs[0], inputs[1]
    at = axis(int(call.attr("axis", -1)), x.dim())
    eps = float(call.attr("epsilon", 1e-5))
    wide = x.to(torch.float32) if x.dtype in (torch.float16, torch.bfloat16) else x
    dims = tuple(range(at, x.dim()))
    y = wide * torch.rsqrt(wide.square().mean(dim=dims, keepdim=True) + eps)
    return [(y * scale).to(x.dtype)]


def _group_norm(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x, scale, bias = inputs[:3]
    groups = int(call.attr("num_groups"))
    eps = float(call.attr("epsilon", 1e-5))
    n, c = x.shape[:2]
    grouped = x.reshape(n, groups, -1)
    mean = grouped.mean(-1, keepdim=True)
    var = grouped.var(-1, unbiased=False, keepdim=True)
    y = ((grouped - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    if scale.numel() == groups and c != groups:  # opset 18: one scale per group
        scale = scale.repeat_interleave(c // groups)
        bias = bias.repeat_interleave(c // groups)
    return [y * _per_channel(scale, x.dim()) + _per_channel(bias, x.dim())]


def _lrn(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    return [
        window.lrn(
            inputs[0],
            int(call.attr("size")),
            float(call.attr("alpha", 1e-4)),
            float(call.attr("beta", 0.75)),
            float(call.attr("bias", 1.0)),
        )
    ]


def _max_pool(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    kernel = list(call.attr("kernel_shape"))
    strides, pads, dilations = _window(call, x, kernel)
    ceil = bool(call.attr("ceil_mode", 0))
    if len(call.node.outputs) > 1 and call.node.outputs[1]:
        order = int(call.attr("storage_order", 0))
        return list(window.max_pool_indices(x, kernel, strides, pads, dilations, ceil, order))
    return [window.max_pool(x, kernel, strides, pads, dilations, ceil)]


def _average_pool(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    kernel = list(call.attr("kernel_shape"))
    strides, pads, dilations = _window(call, x, kernel)
    ceil = bool(call.attr("ceil_mode", 0))
    include = bool(call.attr("count_include_pad", 0))
    return [window.average_pool(x, kernel, strides, pads, ceil, include, dilations)]


def _lp_pool(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    kernel = list(call.attr("kernel_shape"))
    strides, pads, dilations = _window(call, x, kernel)
    ceil = bool(call.attr("ceil_mode", 0))
    return [window.lp_pool(x, kernel, strides, pads, dilations, ceil, int(call.attr("p", 2)))]


def _global_pool(reduce: str):
    def run(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
        x = inputs[0]
        dims = tuple(range(2, x.dim()))
        return [x.mean(dims, keepdim=True) if reduce == "mean" else x.amax(dims, keepdim=True)]

    return run


def _softmax(fn):
    def run(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
        x = inputs[0]
        if call.opset < 13:
            at = axis(int(call.attr("axis", 1)), x.dim())
            flat = x.reshape(math.prod(x.shape[:at]), -1)
            return [fn(flat, dim=1).reshape(x.shape)]
        return [fn(x, dim=axis(int(call.attr("axis", -1)), x.dim()))]

    return run


def _hardmax_rows(x: torch.Tensor, dim: int) -> torch.Tensor:
    index = x.argmax(dim=dim, keepdim=True)
    return torch.zeros_like(x).scatter_(dim, index, 1.0)


def _einsum(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    return [torch.einsum(call.attr("equation").replace(" ", ""), *inputs)]


def _lp_norm(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    dim = axis(int(call.attr("axis", -1)), x.dim())
    norm = torch.linalg.vector_norm(x, ord=int(call.attr("p", 2)), dim=dim, keepdim=True)
    return [x / torch.where(norm == 0, torch.ones_like(norm), norm)]  # a zero vector stays 0


def _mean_variance(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    x = inputs[0]
    dims = tuple(axes(call.attr("axes", [0, 2, 3]), x.dim()))
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    return [(x - mean) / torch.sqrt(var + 1e-9)]


def _matmul_nonneg(node: Node, ctx: SignContext) -> bool:
    return all(ctx.nonneg(t) for t in node.inputs[:2])


def _gemm_nonneg(node: Node, ctx: SignContext) -> bool:
    return (
        all(ctx.nonneg(t) for t in node.inputs if t)
        and float(node.attrs.get("alpha", 1.0)) >= 0
        and float(node.attrs.get("beta", 1.0)) >= 0
    )


OPS: list[OpDef] = [
    OpDef(
        "MatMul",
        torch=lambda call, inputs: [inputs[0] @ inputs[1]],
        sign=_matmul_nonneg,
        analog="matmul",
    ),
    OpDef("Gemm", torch=_gemm, sign=_gemm_nonneg, analog="matmul"),
    OpDef("Conv", torch=_conv, sign=inputs_nonneg(), analog="conv"),
    OpDef("ConvTranspose", torch=_conv_transpose, sign=inputs_nonneg()),
    OpDef("LSTM", analog="recurrent"),
    OpDef("GRU", analog="recurrent"),
    OpDef("RNN", analog="recurrent"),
    OpDef("BatchNormalization", torch=_batch_norm, params=(1, 2)),
    OpDef("InstanceNormalization", torch=_instance_norm, params=(1, 2)),
    OpDef("LayerNormalization", torch=_layer_norm, params=(1, 2)),
    OpDef("GroupNormalization", torch=_group_norm, params=(1, 2)),
    OpDef("RMSNormalization", torch=_rms_norm, params=(1,)),
    OpDef("LRN", torch=_lrn, sign=inputs_nonneg(0)),
    OpDef("MaxPool", torch=_max_pool, sign=inputs_nonneg(0)),
    OpDef("AveragePool", torch=_average_pool, sign=inputs_nonneg(0)),
    OpDef("LpPool", torch=_lp_pool, sign=always_nonneg),
    OpDef("GlobalAveragePool", torch=_global_pool("mean"), sign=inputs_nonneg(0)),
    OpDef("GlobalMaxPool", torch=_global_pool("max"), sign=inputs_nonneg(0)),
    OpDef("Softmax", torch=_softmax(torch.softmax), sign=always_nonneg),
    OpDef("LogSoftmax", torch=_softmax(torch.log_softmax)),
    OpDef("Hardmax", torch=_softmax(_hardmax_rows), sign=always_nonneg),
    OpDef("Einsum", torch=_einsum, sign=inputs_nonneg()),
    OpDef("LpNormalization", torch=_lp_norm, sign=inputs_nonneg(0)),
    OpDef("MeanVarianceNormalization", torch=_mean_variance),
    OpDef("Det", torch=lambda call, inputs: [torch.linalg.det(inputs[0])]),
]
