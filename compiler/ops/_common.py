"""Helpers the torch implementations of the op registry share: dtypes, optional inputs,
attribute-or-input configuration and axes."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
import torch
from anacc.compiler.ops.base import Inputs, OpCall

# ONNX element types with a torch dtype (float8 and 4-bit types have none here)
_TORCH_DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.UINT16: torch.uint16,
    onnx.TensorProto.UINT32: torch.uint32,
    onnx.TensorProto.UINT64: torch.uint64,
    onnx.TensorProto.BOOL: torch.bool,
}


def torch_dtype(onnx_type: int) -> torch.dtype:
    dtype = _TORCH_DTYPES.get(int(onnx_type))
    assert dtype is not None, f"ONNX element type {onnx_type} has no torch dtype"
    return dtype


def optional(inputs: Inputs, index: int) -> torch.Tensor | None:
    """Input ``index``, or None when it is absent (not given or the empty name)."""
    return inputs[index] if index < len(inputs) else None


def ints(t: torch.Tensor | None) -> list[int] | None:
    """A 0-D or 1-D integer tensor as a list (None stays None)."""
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def attr_or_input(call: OpCall, name: str, inputs: Inputs, index: int, since: int) -> list | None:
    """Configuration that opset ``since`` moved from attribute ``name`` to input ``index``."""
    if call.opset >= since:
        return ints(optional(inputs, index))
    value = call.attr(name)
    return None if value is None else list(value)


def axis(value: int, rank: int) -> int:
    return value + rank if value < 0 else value


def axes(values: Sequence[int], rank: int) -> list[int]:
    return [axis(int(v), rank) for v in values]


def is_float(t: torch.Tensor) -> bool:
    return t.is_floating_point()
