"""Export a program back to ONNX (opset 17) with its current float weights.

Analog layers become ``MatMul`` (+ ``Add`` for the bias) or ``Conv`` (the lowered patch matrix
folded back into a kernel); digital steps become the ONNX ops they came from, with the
configuration that opset 17 passes as inputs (Reshape shape, Squeeze/Unsqueeze axes, Clip
bounds, Pad pads) turned back into initializers. onnxruntime runs the result; it equals the
program on the ``ideal`` backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from anacc.compiler.program import Program, ProgramLayer, atomic_write
from onnx import TensorProto, helper, numpy_helper

from anacc import __version__

OPSET = 17
_PASS_ATTRS = {
    "Gemm": ("alpha", "beta", "transA", "transB"),
    "Conv": ("kernel_shape", "strides", "pads", "dilations", "group"),
    "BatchNormalization": ("epsilon",),
    "LeakyRelu": ("alpha",),
    "MaxPool": ("kernel_shape", "strides", "pads", "dilations", "ceil_mode"),
    "AveragePool": ("kernel_shape", "strides", "pads", "ceil_mode", "count_include_pad"),
    "ReduceMean": ("axes", "keepdims"),
    "Flatten": ("axis",),
    "Transpose": ("perm",),
    "Concat": ("axis",),
    "LRN": ("size", "alpha", "beta", "bias"),
    "Reshape": ("allowzero",),
    "Pad": ("mode",),
}


def conv_kernel(mat: np.ndarray, conv: dict) -> np.ndarray:
    """Inverse of the conv lowering: ``(C_in * prod(k), C_out)`` -> ``(C_out, C_in/g, *k)``."""
    g, c_in, c_out = conv["group"], conv["in_channels"], conv["out_channels"]
    k = conv["kernel_shape"]
    cg, og, kk = c_in // g, c_out // g, int(np.prod(k))
    w = np.empty((c_out, cg, *k), dtype=mat.dtype)
    for i in range(g):
        block = mat[i * cg * kk : (i + 1) * cg * kk, i * og : (i + 1) * og]
        w[i * og : (i + 1) * og] = block.T.reshape(og, cg, *k)
    return w


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def const(self, base: str, value: np.ndarray) -> str:
        self._n += 1
        name = f"{base}__c{self._n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def tmp(self, base: str) -> str:
        self._n += 1
        return f"{base}__t{self._n}"

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))


def _analog(b: _Builder, layer: ProgramLayer, x: str, y: str) -> None:
    a = layer.analog
    name = a.name
    bias = None if layer.bias is None else b.const(f"{name}.bias", layer.bias)
    if layer.conv is not None:
        c = layer.conv
        w = b.const(f"{name}.weight", conv_kernel(a.weight, c))
        b.node(
            "Conv",
            [x, w] + ([bias] if bias else []),
            [y],
            name,
            kernel_shape=c["kernel_shape"],
            strides=c["strides"],
            pads=c["pads"],
            dilations=c["dilations"],
            group=c["group"],
        )
        return
    w = b.const(f"{name}.weight", a.weight)
    if bias is None:
        b.node("MatMul", [x, w], [y], name)
        return
    t = b.tmp(name)
    b.node("MatMul", [x, w], [t], name)
    b.node("Add", [t, bias], [y], f"{name}/bias")


def _digital(
    b: _Builder, op: str, name: str, inputs: list[str], outputs: list[str], attrs: dict
) -> None:
    keep = {k: attrs[k] for k in _PASS_ATTRS.get(op, ()) if k in attrs and attrs[k] is not None}
    if op in ("Identity", "Dropout"):
        b.node("Identity", inputs[:1], outputs, name)
    elif op == "Reshape":
        shape = b.const(f"{name}.shape", np.array(attrs["shape"], dtype=np.int64))
        b.node("Reshape", [inputs[0], shape], outputs, name, **keep)
    elif op in ("Squeeze", "Unsqueeze"):
        axes = b.const(f"{name}.axes", np.array(attrs["axes"], dtype=np.int64))
        b.node(op, [inputs[0], axes], outputs, name)
    elif op == "Clip":
        lo = "" if attrs.get("min") is None else b.const(f"{name}.min", np.float32(attrs["min"]))
        hi = "" if attrs.get("max") is None else b.const(f"{name}.max", np.float32(attrs["max"]))
        b.node("Clip", [inputs[0], lo, hi], outputs, name)
    elif op == "Pad":
        pads = b.const(f"{name}.pads", np.array(attrs["pads"], dtype=np.int64))
        value = b.const(f"{name}.value", np.float32(attrs.get("value", 0.0)))
        b.node("Pad", [inputs[0], pads, value], outputs, name, **keep)
    elif op in ("Softmax", "LogSoftmax") and attrs.get("coerce_2d"):
        flat, soft, shape = b.tmp(name), b.tmp(name), b.tmp(name)
        b.node("Flatten", inputs[:1], [flat], f"{name}/flatten", axis=int(attrs["axis"]))
        b.node(op, [flat], [soft], name, axis=1)
        b.node("Shape", inputs[:1], [shape], f"{name}/shape")
        b.node("Reshape", [soft, shape], outputs, f"{name}/reshape")
    elif op in ("Softmax", "LogSoftmax"):
        b.node(op, inputs, outputs, name, axis=int(attrs["axis"]))
    else:
        b.node(op, inputs, outputs, name, **keep)


def to_onnx(program: Program) -> onnx.ModelProto:
    b = _Builder()
    for k, v in program.constants.items():
        b.inits.append(numpy_helper.from_array(np.asarray(v), k))
    for step in program.steps:
        if step.analog:
            _analog(b, program.layers[step.name], step.inputs[0], step.outputs[0])
        else:
            _digital(b, step.op, step.name, list(step.inputs), list(step.outputs), step.attrs)
    inputs = [
        helper.make_tensor_value_info(i.name, TensorProto.FLOAT, ["N", *i.sample_shape])
        for i in program.inputs
    ]
    outputs = [
        helper.make_tensor_value_info(
            o.name,
            TensorProto.FLOAT,
            ["N", *[d if isinstance(d, int) else None for d in o.sample_shape]],
        )
        for o in program.outputs
    ]
    graph = helper.make_graph(
        b.nodes, f"anacc_export_{program.source.get('file', 'model')}", inputs, outputs, b.inits
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="anacc",
        producer_version=__version__,
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def export_onnx(program: Program, path: str | Path, *, protect: tuple = ()) -> Path:
    path = Path(path)
    atomic_write(path, to_onnx(program).SerializeToString(), protect=protect)
    return path
