"""Small single-op ONNX models, one per supported op and attribute variant, for tests.

Every model has a dynamic batch: each graph input's first dimension is the symbol ``N``.
:data:`OP_CASES` maps a stable case name to a function returning ``(model, example_inputs)``;
the example inputs have batch :data:`EXAMPLE_BATCH`. :func:`inputs_for_batch` draws inputs of
another batch size. Weights are drawn from a fixed seed, so every call returns the same model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

EXAMPLE_BATCH = 2
BATCH = "N"

Case = Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]]


def single_op_model(
    op: str,
    inputs: Mapping[str, tuple[int, ...]],
    consts: Mapping[str, np.ndarray] | None = None,
    *,
    order: list[str] | None = None,
    opset: int = 17,
    outputs: tuple[str, ...] = ("y",),
    **attrs: object,
) -> onnx.ModelProto:
    """One ``op`` node reading float32 graph inputs (``name: per-sample shape``, batch ``N``
    in front) and constant initializers, in ``order`` (default: inputs, then constants; ``""``
    marks an absent optional input). Only ``outputs[0]`` is a graph output."""
    consts = dict(consts or {})
    graph_inputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, *shape])
        for name, shape in inputs.items()
    ]
    node = helper.make_node(
        op, order if order is not None else [*inputs, *consts], list(outputs), **attrs
    )
    graph = helper.make_graph(
        [node],
        f"{op.lower()}_case",
        graph_inputs,
        [helper.make_tensor_value_info(outputs[0], TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, name) for name, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    # onnx.checker wants the output's rank; its dims stay unknown because ONNX's shape
    # inference and onnxruntime disagree on some of them (MaxPool with ceil_mode).
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    for dim in inferred.graph.output[0].type.tensor_type.shape.dim:
        dim.Clear()
    return inferred


def inputs_for_batch(
    model: onnx.ModelProto, batch: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Random float32 inputs with batch size ``batch`` for every runtime input of ``model``."""
    constant = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in constant:
            continue
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim[1:]]
        feeds[vi.name] = rng.standard_normal((batch, *dims)).astype(np.float32)
    return feeds


def _with_example(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    return model, inputs_for_batch(model, EXAMPLE_BATCH, np.random.default_rng(0))


def _w(*shape: int, positive: bool = False) -> np.ndarray:
    w = np.random.default_rng([1234, *shape]).standard_normal(shape).astype(np.float32)
    return np.abs(w) + 0.5 if positive else w


def _i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _f32(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)


def _case(op: str, inputs: Mapping[str, tuple[int, ...]], consts=None, **kwargs) -> Case:
    return lambda: _with_example(single_op_model(op, inputs, consts, **kwargs))


def _conv_cases() -> dict[str, Case]:
    return {
        "conv2d_basic": _case(
            "Conv", {"x": (3, 8, 8)}, {"w": _w(4, 3, 3, 3), "b": _w(4)}, pads=[1, 1, 1, 1]
        ),
        "conv2d_opset9": _case(
            "Conv", {"x": (3, 8, 8)}, {"w": _w(4, 3, 3, 3), "b": _w(4)}, opset=9, strides=[2, 2]
        ),
        "conv2d_stride_asym_pads_nobias": _case(
            "Conv", {"x": (2, 9, 7)}, {"w": _w(3, 2, 3, 2)}, strides=[2, 1], pads=[0, 1, 2, 0]
        ),
        "conv2d_dilated": _case(
            "Conv",
            {"x": (2, 9, 9)},
            {"w": _w(2, 2, 3, 3), "b": _w(2)},
            dilations=[2, 2],
            pads=[2, 2, 2, 2],
        ),
        "conv2d_grouped": _case("Conv", {"x": (4, 6, 6)}, {"w": _w(6, 2, 3, 3)}, group=2),
        "conv2d_depthwise": _case(
            "Conv", {"x": (3, 6, 6)}, {"w": _w(3, 1, 3, 3), "b": _w(3)}, group=3, pads=[1] * 4
        ),
        "conv2d_same_upper": _case(
            "Conv", {"x": (2, 8, 7)}, {"w": _w(3, 2, 3, 3)}, strides=[2, 2], auto_pad="SAME_UPPER"
        ),
        "conv2d_same_lower": _case(
            "Conv", {"x": (2, 8, 7)}, {"w": _w(3, 2, 3, 3)}, strides=[2, 2], auto_pad="SAME_LOWER"
        ),
        "conv2d_valid": _case(
            "Conv", {"x": (2, 7, 7)}, {"w": _w(2, 2, 3, 3)}, strides=[2, 2], auto_pad="VALID"
        ),
        "conv2d_no_kernel_shape": _case("Conv", {"x": (2, 5, 5)}, {"w": _w(3, 2, 2, 2)}),
        "conv1d": _case(
            "Conv", {"x": (2, 10)}, {"w": _w(4, 2, 3), "b": _w(4)}, strides=[2], pads=[1, 0]
        ),
        "conv1d_same_upper": _case(
            "Conv", {"x": (2, 11)}, {"w": _w(2, 2, 4)}, strides=[2], auto_pad="SAME_UPPER"
        ),
    }


def _linear_cases() -> dict[str, Case]:
    return {
        "gemm_transb_bias": _case("Gemm", {"x": (6,)}, {"w": _w(4, 6), "c": _w(4)}, transB=1),
        "gemm_no_c": _case("Gemm", {"x": (6,)}, {"w": _w(6, 4)}),
        "gemm_alpha_beta_c2d": _case(
            "Gemm", {"x": (6,)}, {"w": _w(6, 4), "c": _w(1, 4)}, alpha=0.5, beta=2.0
        ),
        "gemm_scalar_c": _case("Gemm", {"x": (6,)}, {"w": _w(6, 4), "c": _f32(0.25)}),
        "gemm_transa_const_a": _case(
            "Gemm", {"x": (6,)}, {"a": _w(6, 5)}, order=["a", "x"], transA=1, transB=1
        ),
        "gemm_opset9": _case("Gemm", {"x": (6,)}, {"w": _w(6, 4), "c": _w(4)}, opset=9),
        "matmul_2d": _case("MatMul", {"x": (8,)}, {"w": _w(8, 4)}),
        "matmul_batch_dims": _case("MatMul", {"x": (3, 8)}, {"w": _w(8, 4)}),
        "matmul_const_left": _case("MatMul", {"x": (3, 5)}, {"w": _w(4, 3)}, order=["w", "x"]),
        "matmul_two_activations": _case("MatMul", {"x": (3, 8), "z": (8, 5)}),
        "matmul_vector_weight": _case("MatMul", {"x": (8,)}, {"w": _w(8)}),
    }


def _elementwise_cases() -> dict[str, Case]:
    return {
        "add_bias_broadcast": _case("Add", {"x": (4, 5)}, {"c": _w(5)}),
        "add_two_inputs": _case("Add", {"x": (4,), "z": (4,)}),
        "sub_const_left": _case("Sub", {"x": (4,)}, {"c": _w(4)}, order=["c", "x"]),
        "mul_scalar": _case("Mul", {"x": (3, 4)}, {"c": _f32(1.5)}),
        "div_const": _case("Div", {"x": (4,)}, {"c": _w(1, 4, positive=True)}),
        "sum_three": _case("Sum", {"x": (3,), "z": (3,)}, {"c": _w(3)}),
        "relu": _case("Relu", {"x": (3, 4)}),
        "sigmoid": _case("Sigmoid", {"x": (3, 4)}),
        "tanh": _case("Tanh", {"x": (3, 4)}),
        "identity": _case("Identity", {"x": (3, 4)}),
        "leakyrelu_default": _case("LeakyRelu", {"x": (3, 4)}),
        "leakyrelu_alpha": _case("LeakyRelu", {"x": (3, 4)}, alpha=0.2),
        "dropout_opset9": _case("Dropout", {"x": (3, 4)}, opset=9, ratio=0.3),
        "dropout_opset13_ratio_input": _case("Dropout", {"x": (3, 4)}, {"r": _f32(0.3)}, opset=13),
        "dropout_unused_mask": _case("Dropout", {"x": (3, 4)}, outputs=("y", "mask")),
        "batchnorm": _case(
            "BatchNormalization",
            {"x": (3, 4, 4)},
            {"s": _w(3), "b": _w(3), "m": _w(3), "v": _w(3, positive=True)},
            epsilon=1e-3,
        ),
        "batchnorm_opset9": _case(
            "BatchNormalization",
            {"x": (3, 4, 4)},
            {"s": _w(3), "b": _w(3), "m": _w(3), "v": _w(3, positive=True)},
            opset=9,
        ),
        "batchnorm_2d": _case(
            "BatchNormalization",
            {"x": (5,)},
            {"s": _w(5), "b": _w(5), "m": _w(5), "v": _w(5, positive=True)},
        ),
        "lrn": _case("LRN", {"x": (5, 4, 4)}, size=3),
        "lrn_params": _case("LRN", {"x": (6, 3, 3)}, size=5, alpha=2e-3, beta=0.5, bias=2.0),
    }


def _clip_softmax_cases() -> dict[str, Case]:
    return {
        "clip_opset9_attrs": _case("Clip", {"x": (5,)}, opset=9, min=-0.5, max=0.5),
        "clip_opset9_min_only": _case("Clip", {"x": (5,)}, opset=9, min=0.0),
        "clip_opset11_min_only": _case("Clip", {"x": (5,)}, {"lo": _f32(-0.2)}, opset=11),
        "clip_opset13_max_only": _case(
            "Clip", {"x": (5,)}, {"hi": _f32(0.3)}, order=["x", "", "hi"], opset=13
        ),
        "clip_opset13_both": _case(
            "Clip", {"x": (5,)}, {"lo": _f32(-0.1), "hi": _f32(0.4)}, opset=13
        ),
        "softmax_opset11_default": _case("Softmax", {"x": (3, 4)}, opset=11),
        "softmax_opset11_axis2": _case("Softmax", {"x": (3, 4)}, opset=11, axis=2),
        "softmax_opset13_default": _case("Softmax", {"x": (3, 4)}, opset=13),
        "softmax_opset13_axis1": _case("Softmax", {"x": (3, 4)}, opset=13, axis=1),
        "logsoftmax_opset11": _case("LogSoftmax", {"x": (3, 4)}, opset=11, axis=1),
        "logsoftmax_opset13_neg_axis": _case("LogSoftmax", {"x": (3, 4)}, opset=13, axis=-2),
    }


def _pool_cases() -> dict[str, Case]:
    return {
        "maxpool_2x2": _case("MaxPool", {"x": (2, 8, 8)}, kernel_shape=[2, 2], strides=[2, 2]),
        "maxpool_opset9": _case(
            "MaxPool", {"x": (2, 8, 8)}, opset=9, kernel_shape=[2, 2], strides=[2, 2]
        ),
        "maxpool_ceil": _case(
            "MaxPool", {"x": (2, 7, 7)}, kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1
        ),
        "maxpool_ceil_drops_last_window": _case(
            "MaxPool",
            {"x": (1, 5, 5)},
            kernel_shape=[2, 2],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            ceil_mode=1,
        ),
        "maxpool_dilations_pads": _case(
            "MaxPool", {"x": (2, 9, 9)}, kernel_shape=[3, 3], dilations=[2, 2], pads=[1, 1, 1, 1]
        ),
        "maxpool_same_upper": _case(
            "MaxPool", {"x": (2, 7, 7)}, kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"
        ),
        "maxpool_1d": _case("MaxPool", {"x": (3, 10)}, kernel_shape=[3], strides=[2]),
        "maxpool_unused_indices": _case(
            "MaxPool", {"x": (2, 6, 6)}, kernel_shape=[2, 2], strides=[2, 2], outputs=("y", "i")
        ),
        "averagepool_pads_include": _case(
            "AveragePool",
            {"x": (2, 7, 7)},
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            count_include_pad=1,
        ),
        "averagepool_ceil": _case(
            "AveragePool", {"x": (2, 7, 7)}, kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1
        ),
        "averagepool_same_lower": _case(
            "AveragePool",
            {"x": (2, 8, 6)},
            kernel_shape=[3, 2],
            strides=[2, 2],
            auto_pad="SAME_LOWER",
        ),
        "globalaveragepool": _case("GlobalAveragePool", {"x": (3, 5, 4)}),
        "globalaveragepool_1d": _case("GlobalAveragePool", {"x": (3, 7)}),
        "reducemean_spatial_keepdims": _case("ReduceMean", {"x": (3, 4, 5)}, opset=13, axes=[2, 3]),
        "reducemean_spatial_no_keepdims": _case(
            "ReduceMean", {"x": (3, 4, 5)}, opset=13, axes=[-2, -1], keepdims=0
        ),
        "reducemean_opset18_axes_input": _case(
            "ReduceMean", {"x": (3, 4, 5)}, {"axes": _i64(2, 3)}, opset=18, keepdims=0
        ),
        "reducemean_all_axes": _case("ReduceMean", {"x": (3, 4)}, opset=13, keepdims=0),
        "reducemean_noop_empty_axes": _case(
            "ReduceMean", {"x": (3, 4)}, opset=18, noop_with_empty_axes=1
        ),
    }


def _shape_op_cases() -> dict[str, Case]:
    return {
        "flatten_default": _case("Flatten", {"x": (2, 3, 4)}),
        "flatten_axis2": _case("Flatten", {"x": (2, 3, 4)}, axis=2),
        "flatten_negative_axis": _case("Flatten", {"x": (2, 3, 4)}, opset=13, axis=-1),
        "flatten_axis0": _case("Flatten", {"x": (2, 3, 4)}, axis=0),
        "reshape_copy_batch": _case("Reshape", {"x": (2, 3, 4)}, {"s": _i64(0, -1)}),
        "reshape_batch_times_two": _case("Reshape", {"x": (2, 3, 4)}, {"s": _i64(-1, 12)}),
        "reshape_opset9": _case("Reshape", {"x": (2, 3, 4)}, {"s": _i64(0, 6, 4)}, opset=9),
        "reshape_allowzero": _case(
            "Reshape", {"x": (2, 3, 4)}, {"s": _i64(-1, 4, 6)}, opset=14, allowzero=1
        ),
        "transpose_nhwc": _case("Transpose", {"x": (3, 4, 5)}, perm=[0, 2, 3, 1]),
        "transpose_default_perm": _case("Transpose", {"x": (3, 4)}),
        "squeeze_opset11_attr": _case("Squeeze", {"x": (3, 1, 4)}, opset=11, axes=[2]),
        "squeeze_opset13_input": _case("Squeeze", {"x": (3, 1, 4)}, {"axes": _i64(-2)}, opset=13),
        "unsqueeze_opset11_attr": _case("Unsqueeze", {"x": (3, 4)}, opset=11, axes=[1]),
        "unsqueeze_opset13_input": _case(
            "Unsqueeze", {"x": (3, 4)}, {"axes": _i64(-1, 1)}, opset=13
        ),
        "concat_axis1": _case("Concat", {"x": (2, 3), "z": (4, 3)}, axis=1),
        "concat_negative_axis_three": _case(
            "Concat", {"x": (2, 3), "z": (2, 1), "u": (2, 2)}, axis=-1
        ),
        "pad_opset9_constant": _case(
            "Pad", {"x": (2, 4, 4)}, opset=9, pads=[0, 0, 1, 2, 0, 0, 2, 1], value=0.5
        ),
        "pad_opset9_reflect": _case(
            "Pad", {"x": (2, 4, 4)}, opset=9, pads=[0, 0, 1, 1, 0, 0, 2, 1], mode="reflect"
        ),
        "pad_opset11_constant_value": _case(
            "Pad", {"x": (2, 4, 4)}, {"p": _i64(0, 0, 1, 0, 0, 0, 0, 2), "v": _f32(1.5)}, opset=11
        ),
        "pad_opset13_reflect": _case(
            "Pad", {"x": (2, 4, 4)}, {"p": _i64(0, 0, 2, 1, 0, 0, 1, 2)}, opset=13, mode="reflect"
        ),
        "pad_opset13_edge": _case(
            "Pad", {"x": (2, 4)}, {"p": _i64(0, 0, 0, 0, 0, 3)}, opset=13, mode="edge"
        ),
        "pad_opset18_axes": _case(
            "Pad",
            {"x": (2, 4, 4)},
            {"p": _i64(1, 0, 2, 0), "v": _f32(-1.0), "axes": _i64(-1, 2)},
            opset=18,
        ),
    }


OP_CASES: dict[str, Case] = {
    **_conv_cases(),
    **_linear_cases(),
    **_elementwise_cases(),
    **_clip_softmax_cases(),
    **_pool_cases(),
    **_shape_op_cases(),
}
