"""Export a program back to ONNX with its current float weights.

Analog steps become ``MatMul`` (+ ``Add`` for the bias) or ``Conv`` (the lowered patch matrix
folded back into a kernel, :meth:`ConvGeometry.kernel`), one weight per layer however often
the layer runs; digital nodes are written as they are, in the model's own opsets. onnxruntime
runs the result; it equals the program on the ``ideal`` backend.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from anacc.compiler.emit import OnnxBuilder, model
from anacc.compiler.files import atomic_write
from anacc.compiler.ir import TensorInfo
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


def export_onnx(program: Program, path: str | Path, *, protect: tuple = ()) -> Path:
    """Write the program's float model to ``path`` (checked by ``onnx.checker``)."""
    proto = to_onnx(program)
    onnx.checker.check_model(proto)
    path = Path(path)
    atomic_write(path, proto.SerializeToString(), protect=protect)
    return path
