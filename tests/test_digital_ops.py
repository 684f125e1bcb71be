"""The torch forms of the op registry match onnxruntime on one-node ONNX models and
backpropagate.

Each case builds a one-node model in its ONNX form (attributes, configuration inputs as
initializers), runs it in onnxruntime and through :func:`run_torch` (the same node, the
configuration inputs as tensors) on the same random data. The ONNX node test suite
(tests/test_onnx_node_suite.py) checks the torch forms more broadly; these cases pin the
attribute and opset variants fine-tuning meets in exported models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from anacc.compiler.onnx_nodes import ir_node
from anacc.compiler.ops import REGISTRY, lookup, run_torch, window
from onnx import TensorProto, helper, numpy_helper

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Case:
    """One op call: ``data`` shapes are runtime inputs of both sides (``None``: absent optional);
    ``config`` arrays are ONNX-only constant inputs after them (``None``: absent)."""

    id: str
    op: str
    data: tuple[Shape | None, ...]
    onnx_attrs: dict[str, Any] = field(default_factory=dict)
    config: tuple[np.ndarray | None, ...] = ()
    opset: int = 17
    positive: tuple[int, ...] = ()  # data inputs drawn from [0.5, 2] (divisors, variances)


def _i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _f32(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)


def _onnx_run(case: Case, feeds: dict[str, np.ndarray]) -> np.ndarray:
    data_names = [f"d{i}" if shape is not None else "" for i, shape in enumerate(case.data)]
    config_names = [f"c{i}" if arr is not None else "" for i, arr in enumerate(case.config)]
    node = helper.make_node(case.op, data_names + config_names, ["y"], **case.onnx_attrs)
    graph = helper.make_graph(
        [node],
        case.id,
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in feeds],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(arr, f"c{i}")
            for i, arr in enumerate(case.config)
            if arr is not None
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _random_feeds(case: Case, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for i, shape in enumerate(case.data):
        if shape is None:
            continue
        if i in case.positive:
            feeds[f"d{i}"] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        else:
            feeds[f"d{i}"] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _assert_close(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape
    assert np.isfinite(ref).all()
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    err = float(np.abs(got - ref).max()) if ref.size else 0.0
    assert err <= 1e-5 * scale, f"max abs error {err:.3g} at output scale {scale:.3g}"


def _gemm_cases() -> list[Case]:
    cases = []
    m, k, n = 3, 4, 5
    for trans_a in (0, 1):
        for trans_b in (0, 1):
            for c_shape, c_name in ((None, "noC"), ((n,), "Cvec"), ((m, n), "Cmat")):
                for alpha, beta in ((1.0, 1.0), (0.5, -2.0)):
                    a = (k, m) if trans_a else (m, k)
                    b = (n, k) if trans_b else (k, n)
                    attrs = {"alpha": alpha, "beta": beta, "transA": trans_a, "transB": trans_b}
                    cases.append(
                        Case(
                            f"Gemm-tA{trans_a}-tB{trans_b}-{c_name}-a{alpha}-b{beta}",
                            "Gemm",
                            (a, b) if c_shape is None else (a, b, c_shape),
                            attrs,
                        )
                    )
    return cases


def _conv_case(
    name: str,
    x: Shape,
    w: Shape,
    bias: bool,
    strides: list[int],
    pads: list[int],
    dilations: list[int],
    group: int,
) -> Case:
    attrs = {
        "kernel_shape": list(w[2:]),
        "strides": strides,
        "pads": pads,
        "dilations": dilations,
        "group": group,
    }
    return Case(f"Conv-{name}", "Conv", (x, w, (w[0],)) if bias else (x, w), attrs)


CONV_CASES = [
    _conv_case("1d-stride2-asympad-bias", (2, 4, 11), (6, 4, 3), True, [2], [1, 2], [1], 1),
    _conv_case("1d-dilation2-group2-nobias", (3, 4, 12), (6, 2, 3), False, [1], [0, 0], [2], 2),
    _conv_case("1d-sympad", (2, 3, 9), (5, 3, 4), True, [1], [2, 2], [1], 1),
    _conv_case(
        "2d-asympad-stride12", (2, 4, 9, 10), (6, 4, 3, 3), True, [1, 2], [1, 0, 2, 1], [1, 1], 1
    ),
    _conv_case(
        "2d-sympad-dil21-group2", (2, 4, 9, 9), (6, 2, 3, 3), True, [1, 1], [1, 1, 1, 1], [2, 1], 2
    ),
    _conv_case("2d-depthwise", (3, 4, 8, 8), (4, 1, 3, 3), True, [2, 2], [1, 1, 1, 1], [1, 1], 4),
    _conv_case(
        "2d-depthwise-mult2-asympad",
        (2, 4, 7, 8),
        (8, 1, 3, 3),
        False,
        [1, 2],
        [0, 1, 2, 0],
        [1, 2],
        4,
    ),
    _conv_case("2d-kernel23-nobias", (2, 3, 8, 7), (4, 3, 2, 3), False, [2, 1], [0] * 4, [1, 1], 1),
]


def _pool_geometries() -> list[tuple[str, Shape, list[int], list[int], list[int]]]:
    """(id, input shape, kernel, strides, pads)."""
    return [
        ("1d-asympad", (2, 3, 11), [3], [2], [0, 1]),
        ("1d-k2s2-lastwindow-in-endpad", (3, 2, 4), [2], [2], [0, 1]),
        ("2d-asympad", (2, 3, 9, 10), [3, 2], [2, 2], [1, 0, 0, 1]),
        ("2d-sympad", (2, 3, 8, 9), [3, 3], [2, 3], [1, 1, 1, 1]),
        ("2d-lastwindow-in-endpad", (2, 2, 4, 5), [2, 3], [2, 2], [0, 1, 1, 1]),
    ]


def _pool_cases() -> list[Case]:
    cases = []
    for geo_id, shape, kernel, strides, pads in _pool_geometries():
        rank = len(kernel)
        for ceil_mode in (0, 1):
            attrs = {
                "kernel_shape": kernel,
                "strides": strides,
                "pads": pads,
                "dilations": [1] * rank,
                "ceil_mode": ceil_mode,
            }
            cases.append(Case(f"MaxPool-{geo_id}-ceil{ceil_mode}", "MaxPool", (shape,), attrs))
            for include_pad in (0, 1):
                attrs = {
                    "kernel_shape": kernel,
                    "strides": strides,
                    "pads": pads,
                    "ceil_mode": ceil_mode,
                    "count_include_pad": include_pad,
                }
                cases.append(
                    Case(
                        f"AveragePool-{geo_id}-ceil{ceil_mode}-includepad{include_pad}",
                        "AveragePool",
                        (shape,),
                        attrs,
                    )
                )
    for ceil_mode in (0, 1):
        attrs = {
            "kernel_shape": [2, 3],
            "strides": [2, 1],
            "pads": [1, 0, 0, 2],
            "dilations": [2, 2],
            "ceil_mode": ceil_mode,
        }
        cases.append(
            Case(f"MaxPool-2d-dilated-ceil{ceil_mode}", "MaxPool", ((2, 3, 10, 9),), attrs)
        )
    return cases


def _softmax_cases() -> list[Case]:
    cases = []
    for op in ("Softmax", "LogSoftmax"):
        for axis in (0, 1, 2):
            cases.append(
                Case(
                    f"{op}-axis{axis}",
                    op,
                    ((2, 3, 4),),
                    {"axis": axis},
                )
            )
        cases.append(
            Case(
                f"{op}-opset11-axis1-3d",
                op,
                ((2, 3, 4),),
                {"axis": 1},
                opset=11,
            )
        )
        cases.append(
            Case(
                f"{op}-opset11-axis2-4d",
                op,
                ((3, 2, 3, 4),),
                {"axis": 2},
                opset=11,
            )
        )
    return cases


def _clip_cases() -> list[Case]:
    bounds = {"both": (-0.5, 0.7), "minonly": (-0.5, None), "maxonly": (None, 0.7)}
    cases = [
        Case(
            f"Clip-{name}",
            "Clip",
            ((2, 3, 4),),
            config=(
                None if low is None else _f32(low),
                None if high is None else _f32(high),
            ),
        )
        for name, (low, high) in bounds.items()
    ]
    cases.append(
        Case(
            "Clip-unbounded",
            "Clip",
            ((2, 3, 4),),
        )
    )
    return cases


def _pad_cases() -> list[Case]:
    cases = []
    layouts = {
        "3d-last": ((2, 3, 6), [0, 0, 2, 0, 0, 3]),
        "4d-hw-asym": ((2, 3, 5, 6), [0, 0, 1, 2, 0, 0, 3, 1]),
        "4d-channel": ((3, 4, 3, 3), [0, 2, 1, 0, 0, 1, 0, 2]),
        "4d-crop": ((2, 3, 5, 6), [0, 0, -1, 2, 0, 0, 1, -2]),
    }
    for mode in ("constant", "reflect", "edge"):
        for layout, (shape, pads) in layouts.items():
            value = 0.5 if mode == "constant" else 0.0
            config = (_i64(*pads), _f32(value)) if mode == "constant" else (_i64(*pads),)
            cases.append(
                Case(
                    f"Pad-{mode}-{layout}",
                    "Pad",
                    (shape,),
                    {"mode": mode},
                    config,
                )
            )
    return cases


def _misc_cases() -> list[Case]:
    x4 = (2, 3, 4, 5)
    bn = {"epsilon": 1e-3}
    return [
        Case(
            "MatMul-3dx2d",
            "MatMul",
            ((2, 3, 4), (4, 5)),
        ),
        Case(
            "MatMul-broadcast-batch",
            "MatMul",
            ((2, 1, 3, 4), (3, 4, 5)),
        ),
        Case(
            "MatMul-activations",
            "MatMul",
            ((3, 2, 4), (3, 4, 2)),
        ),
        Case(
            "MatMul-vector",
            "MatMul",
            ((3, 4), (4,)),
        ),
        *[
            Case(f"{op}-{name}", op, shapes, positive=(1,) if op == "Div" else ())
            for op in ("Add", "Sub", "Mul", "Div")
            for name, shapes in (
                ("same", (x4, x4)),
                ("channel", (x4, (3, 1, 1))),
                ("row", ((2, 3), (3,))),
                ("scalar", ((2, 3), ())),
                ("both-ways", ((2, 1, 4), (3, 1))),
            )
        ],
        Case(
            "Sum-1",
            "Sum",
            ((2, 3),),
        ),
        Case(
            "Sum-2-broadcast",
            "Sum",
            ((2, 3, 4), (4,)),
        ),
        Case(
            "Sum-3",
            "Sum",
            ((2, 3, 4), (2, 3, 4), (3, 1)),
        ),
        Case(
            "BatchNormalization-4d",
            "BatchNormalization",
            (x4, (3,), (3,), (3,), (3,)),
            bn,
            positive=(4,),
        ),
        Case(
            "BatchNormalization-3d",
            "BatchNormalization",
            ((3, 3, 7), (3,), (3,), (3,), (3,)),
            bn,
            positive=(4,),
        ),
        Case(
            "BatchNormalization-2d",
            "BatchNormalization",
            ((2, 4), (4,), (4,), (4,), (4,)),
            bn,
            positive=(4,),
        ),
        *[
            Case(
                op,
                op,
                ((2, 3, 4),),
            )
            for op in ("Relu", "Sigmoid", "Tanh", "Identity")
        ],
        Case(
            "Dropout-inference",
            "Dropout",
            ((2, 3, 4),),
        ),
        Case("LeakyRelu", "LeakyRelu", ((2, 3, 4),), {"alpha": 0.1}),
        Case(
            "GlobalAveragePool-1d",
            "GlobalAveragePool",
            ((2, 3, 7),),
        ),
        Case(
            "GlobalAveragePool-2d",
            "GlobalAveragePool",
            ((3, 3, 5, 6),),
        ),
        Case(
            "ReduceMean-hw-keep",
            "ReduceMean",
            (x4,),
            {"axes": [2, 3], "keepdims": 1},
        ),
        Case(
            "ReduceMean-channel-drop",
            "ReduceMean",
            (x4,),
            {"axes": [1], "keepdims": 0},
        ),
        Case(
            "ReduceMean-all-explicit",
            "ReduceMean",
            (x4,),
            {"keepdims": 0},
        ),
        Case(
            "ReduceMean-all-empty",
            "ReduceMean",
            (x4,),
            {"keepdims": 1},
        ),
        *[Case(f"Flatten-axis{a}", "Flatten", (x4,), {"axis": a}) for a in (0, 1, 2, 4)],
        *[
            Case(
                f"Reshape-{name}",
                "Reshape",
                (shape,),
                config=(_i64(*target),),
            )
            for name, shape, target in (
                ("copy-batch-infer", x4, [0, -1]),
                ("copy-two", x4, [0, 3, -1]),
                ("infer-lead", x4, [-1, 5]),
                ("copy-middle", x4, [2, 0, 20]),
            )
        ],
        Case(
            "Reshape-allowzero-empty",
            "Reshape",
            ((2, 0, 3),),
            {"allowzero": 1},
            (_i64(0, 3),),
        ),
        Case("Transpose-nhwc", "Transpose", (x4,), {"perm": [0, 2, 3, 1]}),
        Case("Transpose-swap", "Transpose", ((2, 3, 4),), {"perm": [1, 0, 2]}),
        Case("Squeeze-two", "Squeeze", ((2, 1, 4, 1),), config=(_i64(1, 3),)),
        Case("Squeeze-spatial", "Squeeze", ((3, 4, 1, 1),), config=(_i64(2, 3),)),
        Case("Unsqueeze-two", "Unsqueeze", ((2, 3),), config=(_i64(1, 3),)),
        Case("Unsqueeze-last", "Unsqueeze", ((2, 3),), config=(_i64(2),)),
        Case("Concat-channel", "Concat", ((2, 3, 4), (2, 1, 4), (2, 2, 4)), {"axis": 1}),
        Case("Concat-batch", "Concat", ((2, 3), (3, 3)), {"axis": 0}),
        *[
            Case(
                f"LRN-size{size}",
                "LRN",
                ((2, 7, 4, 5),),
                {"size": size, "alpha": 1e-2, "beta": 0.75, "bias": 1.5},
            )
            for size in (1, 3, 5)  # onnxruntime rejects even sizes: see the formula test
        ],
        Case(
            "LRN-defaults",
            "LRN",
            ((3, 5, 3, 3),),
            {"size": 3},
        ),
    ]


def _floats(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def _resample_cases() -> list[Case]:
    """Resize and Upsample where the node suite has no case: shrinking and non-integer
    scales of the opset-10 rounding rule, and every coordinate mode with a shrinking and a
    growing axis (whole output lengths: test_resize_follows_the_onnx_reference has the rest)."""
    x = (2, 3, 5, 7)
    cases = []
    for scales in ((1, 1, 0.5, 0.6), (1, 1, 0.7, 1.3), (1, 1, 3.3, 0.4)):
        for mode in ("nearest", "linear"):
            name = f"Resize-opset10-{mode}-" + "x".join(f"{s:g}" for s in scales[2:])
            cases.append(Case(name, "Resize", (x,), {"mode": mode}, (_floats(*scales),), 10))
    for mode in ("nearest", "linear"):
        up = _floats(1, 1, 1.5, 2.5)
        cases.append(Case(f"Upsample-opset9-{mode}", "Upsample", (x,), {"mode": mode}, (up,), 9))
    for coordinates, mode, nearest in _RESIZE_MODES:
        attrs = {"mode": mode, "coordinate_transformation_mode": coordinates}
        if nearest:
            attrs["nearest_mode"] = nearest
        cases.append(
            Case(
                f"Resize-{coordinates}-{mode}{nearest and '-' + nearest}",
                "Resize",
                ((2, 3, 8, 7),),
                attrs,
                (None, _floats(1, 1, 0.75, 2.0)),  # exact in binary: no rounding at the floors
                19,
            )
        )
    return cases


_RESIZE_MODES = [
    (coordinates, mode, nearest)
    for coordinates in (
        "half_pixel",
        "pytorch_half_pixel",
        "align_corners",
        "asymmetric",
        "half_pixel_symmetric",
    )
    for mode, nearest in (("nearest", "round_prefer_ceil"), ("nearest", "floor"), ("cubic", ""))
]


@pytest.mark.parametrize("coordinates,mode,nearest", _RESIZE_MODES)
def test_resize_follows_the_onnx_reference(coordinates: str, mode: str, nearest: str) -> None:
    """Output lengths that are not whole: ONNX maps coordinates by the given scale, as its
    reference implementation does (onnxruntime maps them by the rounded length's ratio)."""
    from onnx.reference import ReferenceEvaluator

    attrs = {"mode": mode, "coordinate_transformation_mode": coordinates}
    if nearest:
        attrs["nearest_mode"] = nearest
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 7)).astype(np.float32)
    scales = _floats(1, 1, 0.6, 0.45)
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(scales, "scales")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    (want,) = ReferenceEvaluator(model).run(None, {"x": x})
    (got,) = _run("Resize", attrs, [torch.from_numpy(x), None, torch.from_numpy(scales)], 19)
    _assert_close(got.numpy(), want)


def _dilated_pool_cases() -> list[Case]:
    attrs = {"kernel_shape": [2, 3], "strides": [2, 1], "pads": [1, 0, 0, 2], "dilations": [2, 2]}
    return [
        Case(
            f"AveragePool-dilated-ceil{ceil}-includepad{include}",
            "AveragePool",
            ((2, 3, 10, 9),),
            {**attrs, "ceil_mode": ceil, "count_include_pad": include},
            opset=19,
        )
        for ceil in (0, 1)
        for include in (0, 1)
    ] + [Case("LpPool-dilated-p3", "LpPool", ((2, 3, 10, 9),), {**attrs, "p": 3}, opset=18)]


CASES = (
    _gemm_cases()
    + CONV_CASES
    + _pool_cases()
    + _softmax_cases()
    + _clip_cases()
    + _pad_cases()
    + _misc_cases()
    + _resample_cases()
    + _dilated_pool_cases()
)


def _torch_run(case: Case, feeds: dict[str, np.ndarray]) -> list[torch.Tensor]:
    data_names = [f"d{i}" if shape is not None else "" for i, shape in enumerate(case.data)]
    config_names = [f"c{i}" if arr is not None else "" for i, arr in enumerate(case.config)]
    node = ir_node(
        helper.make_node(case.op, data_names + config_names, ["y"], **case.onnx_attrs), "n"
    )
    inputs = [
        None if shape is None else torch.from_numpy(feeds[f"d{i}"])
        for i, shape in enumerate(case.data)
    ]
    inputs += [None if arr is None else torch.from_numpy(arr) for arr in case.config]
    return run_torch(node, case.opset, inputs)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_op_matches_onnxruntime(case: Case) -> None:
    feeds = _random_feeds(case)
    outputs = _torch_run(case, feeds)
    assert outputs[0].dtype == torch.float32
    _assert_close(outputs[0].numpy(), _onnx_run(case, feeds))


def _run(op: str, attrs: dict, inputs: list, opset: int = 17) -> list[torch.Tensor]:
    names = [f"i{k}" if t is not None else "" for k, t in enumerate(inputs)]
    node = ir_node(helper.make_node(op, names, ["y"], **attrs), op)
    return run_torch(node, opset, inputs)


def _lrn_formula(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """The ONNX LRN definition in float64, one channel at a time."""
    x = x.astype(np.float64)
    channels = x.shape[1]
    before, after = (size - 1) // 2, -(-(size - 1) // 2)
    square_sum = np.zeros_like(x)
    for c in range(channels):
        lo, hi = max(0, c - before), min(channels - 1, c + after)
        square_sum[:, c] = (x[:, lo : hi + 1] ** 2).sum(axis=1)
    return x / (bias + alpha / size * square_sum) ** beta


@pytest.mark.parametrize("shape", [(2, 7, 4, 5), (3, 6, 5)], ids=["2d", "1d"])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_lrn_matches_onnx_formula(size: int, shape: Shape) -> None:
    x = np.random.default_rng(size).standard_normal(shape).astype(np.float32)
    params = {"size": size, "alpha": 0.5, "beta": 0.75, "bias": 1.5}
    (got,) = _run("LRN", params, [torch.from_numpy(x)])
    _assert_close(got.numpy(), _lrn_formula(x, **params))


def test_every_op_with_a_torch_form_is_declared_once_with_an_onnx_schema() -> None:
    import onnx

    for (domain, name), op in REGISTRY.items():
        assert op.name == name and op.domain == domain
        if op.torch is not None:
            assert onnx.defs.has(name, domain), name


def test_undeclared_ops_are_digital_without_a_torch_form() -> None:
    op = lookup("Einsum2", "")
    assert op.torch is None and op.analog is None
    assert lookup("Relu", "ai.onnx") is lookup("Relu", "")


def test_gradients_flow_through_conv_pool_gemm() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 9, 8, generator=gen, requires_grad=True)
    w = torch.randn(4, 2, 3, 3, generator=gen, requires_grad=True)
    b = torch.randn(4, generator=gen, requires_grad=True)
    conv_attrs = {"kernel_shape": [3, 3], "pads": [1, 0, 0, 1]}
    (h,) = _run("Conv", conv_attrs, [x, w, b])
    pool_attrs = {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 1, 1, 0], "ceil_mode": 1}
    (h,) = _run("MaxPool", pool_attrs, [h])
    (h,) = _run("Flatten", {"axis": 1}, [h])
    fc = torch.randn(h.shape[1], 5, generator=gen, requires_grad=True)
    (y,) = _run("Gemm", {}, [h, fc])
    y.square().sum().backward()
    for grad in (x.grad, w.grad, b.grad, fc.grad):
        assert grad is not None
        assert torch.isfinite(grad).all()
        assert grad.abs().sum() > 0


@pytest.mark.parametrize(
    "name",
    [
        "max_pool",
        "average_pool_exclude_pad",
        "average_pool_include_pad",
        "lrn",
        "pad_reflect",
        "resize_cubic_antialias",
        "lp_pool_dilated",
    ],
)
def test_window_op_gradients_match_finite_differences(name: str) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    pool = {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": True}
    fns = {
        "max_pool": lambda t: window.max_pool(t, dilations=[1, 1], **pool),
        "average_pool_exclude_pad": lambda t: window.average_pool(
            t, count_include_pad=False, **pool
        ),
        "average_pool_include_pad": lambda t: window.average_pool(
            t, count_include_pad=True, **pool
        ),
        "lrn": lambda t: window.lrn(t, size=4, alpha=0.1, beta=0.75, bias=1.0),
        "pad_reflect": lambda t: _run(
            "Pad", {"mode": "reflect"}, [t, torch.tensor([0, 0, 2, 1, 0, 0, 1, 2])]
        )[0],
        "resize_cubic_antialias": lambda t: _run(
            "Resize",
            {"mode": "cubic", "antialias": 1},
            [t, None, torch.tensor([1.0, 1.0, 0.6, 1.5])],
            opset=19,
        )[0],
        "lp_pool_dilated": lambda t: window.lp_pool(
            t, [2, 2], [1, 2], [1, 0, 0, 1], [2, 1], ceil_mode=True, p=2
        ),
    }
    assert torch.autograd.gradcheck(fns[name], (x,))
