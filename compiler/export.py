"""Export a program back to ONNX with its current float weights, and its digital regions as
ONNX models of their own (:func:`region_model`, what onnxruntime runs them from).

Analog steps become ``MatMul`` (+ ``Add`` for the bias) or ``Conv`` (the lowered patch matrix
folded back into a kernel, :meth:`ConvGeometry.kernel`), one weight per layer however often
the layer runs; digital nodes are written as they are, in the model's own opsets. onnxruntime
runs the result; it equals the program on the ``ideal`` backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
from anacc.compiler.emit import OnnxBuilder, model
from anacc.compiler.files import atomic_write
from anacc.compiler.ir import Node, TensorInfo
from anacc.compiler.program import AnalogStep, Program

from anacc import __version__


def to_onnx(program: Program) -> onnx.ModelProto:
    """The program as an ONNX model (not checked; see :func:`export_onnx`)."""
    builder = OnnxBuilder(initializers=dict(program.constants))
    for step in program.steps:
        if isinstance(step, AnalogStep):
            layer = program.layers[step.layer]
            a = layer.analog
            builder.linear(
                step.name,
                step.inputs[0],
                step.outputs[0],
                a.weight,
                layer.bias,
                layer.conv,
                key=step.layer,
            )
        else:
            for node in step.nodes:
                builder.node(node)
    inputs = [TensorInfo(i.name, i.shape, i.dtype) for i in program.inputs]
    outputs = [TensorInfo(o.name, o.shape, o.dtype) for o in program.outputs]
    source = program.source.get("file", "model")
    return model(
        builder,
        inputs,
        outputs,
        program.opsets,
        f"anacc_export_{source}",
        producer=f"anacc {__version__}",
    )


def region_model(
    program: Program,
    nodes: Sequence[Node],
    inputs: Sequence[str],
    outputs: Sequence[str],
    types: Mapping[str, str],
) -> onnx.ModelProto:
    """An ONNX model of ``nodes`` reading ``inputs`` (and the program's constants) and
    computing ``outputs``; ``types`` gives each boundary tensor's dtype.

    A region input that is a graph input keeps the program's declared shape (the batch axis
    symbolic): some ONNX functions need their input shapes to expand (onnxruntime refuses
    CausalConvWithState and LinearAttention without them). The program keeps no shapes of
    other tensors, so those inputs keep their dtype only."""
    reads = {t for n in nodes for t in n.reads}
    builder = OnnxBuilder(initializers={k: v for k, v in program.constants.items() if k in reads})
    for node in nodes:
        builder.node(node)
    declared = {i.name: i.shape for i in program.inputs}
    proto = model(
        builder,
        [TensorInfo(t, declared.get(t, ()), types.get(t, "float32")) for t in inputs],
        [TensorInfo(t, (), "unknown") for t in outputs],
        program.opsets,
    )
    for vi in proto.graph.input:
        if vi.name not in declared:
            vi.type.tensor_type.ClearField("shape")
    return proto


def boundary_types(program: Program) -> dict[str, str]:
    """The dtype of each graph input and of each tensor that crosses a step boundary."""
    types = {i.name: i.dtype for i in program.inputs}
    types.update(program.tensor_types)
    return types


def export_onnx(program: Program, path: str | Path, *, protect: tuple = ()) -> Path:
    """Write the program's float model to ``path`` (checked by ``onnx.checker``)."""
    proto = to_onnx(program)
    onnx.checker.check_model(proto)
    path = Path(path)
    atomic_write(path, proto.SerializeToString(), protect=protect)
    return path
