"""The mapping passes' decisions, checked against numbers computed independently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from anacc.compiler.chip import load_chip
from anacc.compiler.conv import ConvGeometry
from anacc.compiler.options import CompileOptions
from anacc.passes.calibrate_scales import clip_value, quantize_weights, requantize_weights
from anacc.runtime.analog import rows_of
from anacc.runtime.session import Session
from onnx import TensorProto, helper, numpy_helper

import anacc
from anacc.errors import OptionError

CHIP = load_chip("bss2")


def mlp(path: Path, first_input_shift: float = 0.0, n_in: int = 24, hidden: int = 40) -> Path:
    """x -> Gemm -> Relu -> Gemm, weights from a fixed seed."""
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((hidden, n_in)).astype(np.float32) * 0.4
    w2 = rng.standard_normal((hidden, 5)).astype(np.float32) * 0.4
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def data(shift: float, n: int = 512, n_in: int = 24) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {"x": (rng.uniform(0, 1, (n, n_in)) + shift).astype(np.float32)}


@pytest.mark.parametrize(
    "shift,expected",
    [(0.0, "none"), (-0.1, "shift"), (-0.5, "split")],
    ids=["non-negative", "small-negative-part", "symmetric"],
)
def test_signed_input_strategy_follows_the_calibrated_range(tmp_path, shift, expected):
    prog = anacc.compile(mlp(tmp_path / "m.onnx"), calib=data(shift))
    first, second = prog.layers.values()
    assert first.signed == expected
    assert second.signed == "none"  # after a ReLU
    if expected == "shift":
        assert first.input_offset == pytest.approx(shift, abs=0.01)


@pytest.mark.parametrize("strategy", ["shift", "split"])
def test_forced_strategies_keep_the_quantized_result_close_to_ideal(tmp_path, strategy):
    calib = data(-0.5)
    prog = anacc.compile(mlp(tmp_path / "m.onnx"), calib=calib, signed=strategy)
    assert next(iter(prog.layers.values())).signed == strategy
    ideal = prog.run(calib, backend="ideal")["y"]
    quant = prog.run(calib, backend="quantized")["y"]
    rel = np.sqrt(np.mean((quant - ideal) ** 2) / np.mean(ideal**2))
    assert rel < 0.1


def test_scale_methods_against_numpy():
    rng = np.random.default_rng(0)
    v = np.abs(rng.standard_normal(100_000)).astype(np.float32)
    assert clip_value(v, "max", None, 0.0, 31) == pytest.approx(float(v.max()))
    assert clip_value(v, "percentile", 99.0, 0.0, 31) == pytest.approx(np.percentile(v, 99.0))
    assert clip_value(v, "ema", None, 1.5, 31) == pytest.approx(1.5)
    c = clip_value(v, "mse", None, 0.0, 31)

    # the MSE clip beats both extremes on the quantity it minimizes
    def err(clip: float) -> float:
        step = clip / 31
        return float(np.mean((np.clip(np.round(v / step), 0, 31) * step - v) ** 2))

    assert 0 < c < v.max()
    assert err(c) <= err(float(v.max())) and err(c) <= err(0.25 * float(v.max()))


def test_weight_quantization_per_column_and_per_layer():
    w = np.array([[0.5, -2.0], [-0.2, 0.9]], dtype=np.float32)
    q, s = quantize_weights(w, True, 63)
    np.testing.assert_allclose(s, [0.5 / 63, 2.0 / 63])
    np.testing.assert_array_equal(q, [[63, -63], [-25, 28]])  # -25.2 and 28.35 round
    q, s = quantize_weights(w, False, 63)
    np.testing.assert_allclose(s, [2.0 / 63, 2.0 / 63])
    np.testing.assert_array_equal(q, [[16, -63], [-6, 28]])


@pytest.mark.parametrize("per_column", [True, False])
def test_weight_quantization_equals_the_float32_formula_and_reports_changes(per_column):
    """The compiled quantization against numpy's float32 formula, bit for bit (ties at .5
    round to even), the dequantized weights, and the comparison with earlier weights."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((37, 11)) * 0.3).astype(np.float32)
    w[:, 4] = 0.0  # an all-zero column keeps scale 1
    amax = np.abs(w).max(axis=0) if per_column else np.full(11, np.abs(w).max())
    scale = np.where(amax > 0, amax / 63, 1.0).astype(np.float32)
    w[3, 2] = np.float32(2.5) * scale[2]  # an exact tie, if the product is exact
    amax = np.abs(w).max(axis=0) if per_column else np.full(11, np.abs(w).max())
    scale = np.where(amax > 0, amax / 63, 1.0).astype(np.float32)
    expected = np.clip(np.round(w / scale), -63, 63).astype(np.int16)
    q, s, deq, changed = requantize_weights(w, per_column, 63, dequantized=True)
    assert s.dtype == np.float32 and np.array_equal(s.view(np.int32), scale.view(np.int32))
    assert q.dtype == np.int16 and np.array_equal(q, expected)
    np.testing.assert_array_equal(deq, expected * scale)
    assert changed  # nothing to compare with
    assert not requantize_weights(w, per_column, 63, previous=q)[3]
    other = q.copy()
    other[5, 7] += 1
    assert requantize_weights(w, per_column, 63, previous=other)[3]
    assert requantize_weights(w, per_column, 63, previous=q[:3])[3]  # another shape
    assert requantize_weights(w, per_column, 63)[2] is None


def test_num_sends_keeps_the_999th_percentile_inside_the_linear_range(tmp_path):
    calib = data(0.0)
    prog = anacc.compile(mlp(tmp_path / "m.onnx"), calib=calib)
    result = Session(prog, "quantized").evaluate(calib, trace=True)
    for name, layer in prog.layers.items():
        reads = torch.cat([r.reshape(-1) for r in result.traces[name].adc]).abs().numpy()
        p999 = np.percentile(reads, 99.9)
        assert p999 <= CHIP.linear_max + 1  # +1: ADC rounding
        # one more send would push it beyond the linear range (or the cap was reached)
        grown = p999 * (layer.analog.num_sends + 1) / layer.analog.num_sends
        assert grown > CHIP.linear_max - 1 or layer.analog.num_sends == CHIP.num_sends_max


def test_fewer_input_features_get_more_sends(tmp_path):
    small = anacc.compile(mlp(tmp_path / "a.onnx", n_in=8), calib=data(0.0, n_in=8))
    large = anacc.compile(mlp(tmp_path / "b.onnx", n_in=120), calib=data(0.0, n_in=120))
    assert next(iter(small.layers.values())).analog.num_sends > (
        next(iter(large.layers.values())).analog.num_sends
    )


def test_gain_factor_scales_num_sends(tmp_path):
    base = anacc.compile(mlp(tmp_path / "m.onnx"), calib=data(0.0))
    more = anacc.compile(tmp_path / "m.onnx", calib=data(0.0), gain_factor=2.0)
    for name, layer in base.layers.items():
        expected = min(2 * layer.analog.num_sends, CHIP.num_sends_max)
        assert more.layers[name].analog.num_sends == expected


def test_without_calibration_data_scales_are_dynamic_and_a_warning_is_given(tmp_path):
    prog = anacc.compile(mlp(tmp_path / "m.onnx"))
    assert all(layer.input_scale is None for layer in prog.layers.values())
    assert any("no calibration data" in w for w in prog.warnings)
    x = data(0.0)
    ideal = prog.run(x, backend="ideal")["y"]
    quant = prog.run(x, backend="quantized")["y"]
    assert np.sqrt(np.mean((quant - ideal) ** 2) / np.mean(ideal**2)) < 0.1


def test_conv_rows_are_im2col_patches_of_the_lowered_weight(tmp_path):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=1)
    path = tmp_path / "c.onnx"
    torch.onnx.export(
        conv.eval(),
        (torch.randn(1, 3, 9, 9),),
        str(path),
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "N"}},
    )
    prog = anacc.compile(path)
    layer = next(iter(prog.layers.values()))
    x = torch.randn(2, 3, 9, 9)
    rows = rows_of(layer, x)
    assert rows.shape == (2 * 5 * 5, 27)
    y = (rows @ torch.from_numpy(layer.analog.weight)).reshape(2, 25, 4).transpose(1, 2)
    ref = torch.nn.functional.conv2d(x, conv.weight, None, stride=2, padding=1)
    torch.testing.assert_close(y.reshape(2, 4, 5, 5), ref, rtol=1e-4, atol=1e-5)


CONV_CASES = [
    # kernel, strides, dilations, pads (begins, then ends), input spatial
    ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1), (8, 8)),
    ((3, 2), (2, 1), (1, 2), (0, 2, 1, 0), (9, 7)),
    ((1, 1), (2, 3), (1, 1), (0, 0, 0, 0), (5, 6)),
    ((5,), (2,), (2,), (3, 1), (17,)),
    ((2,), (1,), (1,), (0, 0), (4,)),
]


def reference_patches(x: np.ndarray, k, s, d, p) -> np.ndarray:
    """im2col by explicit loops over output positions, channels and kernel offsets."""
    nd = len(k)
    pad = [(0, 0), (0, 0)] + [(p[i], p[i + nd]) for i in range(nd)]
    xp = np.pad(x, pad)
    out = [(xp.shape[2 + i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(nd)]
    rows = []
    for n in range(x.shape[0]):
        for pos in np.ndindex(*out):
            row = []
            for c in range(x.shape[1]):
                for off in np.ndindex(*k):
                    idx = tuple(pos[i] * s[i] + off[i] * d[i] for i in range(nd))
                    row.append(xp[(n, c, *idx)])
            rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize("k, s, d, p, spatial", CONV_CASES)
def test_im2col_equals_explicit_patches_and_counts_copies(k, s, d, p, spatial):
    rng = np.random.default_rng(len(k) + sum(spatial))
    x = rng.standard_normal((2, 3, *spatial))
    conv = ConvGeometry(k, s, p, d, group=1, in_channels=3, out_channels=1)
    rows = conv.im2col(torch.from_numpy(x))
    np.testing.assert_array_equal(rows.numpy(), reference_patches(x, k, s, d, p))
    # each input position is copied as often as its index shows up among the patches
    index = np.arange(1, np.prod(spatial) + 1, dtype=np.float64).reshape(1, 1, *spatial)
    copies = np.bincount(reference_patches(index, k, s, d, p).astype(np.int64).ravel())
    expected = np.zeros(np.prod(spatial) + 1)
    expected[: len(copies)] = copies
    counted = conv.multiplicity(spatial).numpy().ravel()
    np.testing.assert_array_equal(counted, expected[1:])


def test_bad_options_are_user_errors():
    with pytest.raises(OptionError, match="percentile"):
        CompileOptions(scale="percentile:200")
    with pytest.raises(OptionError, match="scale method"):
        CompileOptions(scale="median")
    with pytest.raises(OptionError, match="row order"):
        CompileOptions(row_order="random")


def test_a_chain_of_identities_is_removed_and_the_model_still_runs(tmp_path):
    nodes = [
        helper.make_node("Identity", ["x"], ["a"]),
        helper.make_node("Identity", ["a"], ["b"]),
        helper.make_node("Identity", ["b"], ["c"]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    path = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    program = anacc.compile(path)
    assert [n.op for n in program.digital_nodes] == ["Relu"]
    x = np.array([[-1.0, 0.5, 2.0], [3.0, -4.0, 0.0]], np.float32)
    y = Session(program, "ideal").run({"x": x})["y"]
    np.testing.assert_array_equal(y, np.maximum(x, 0))
