"""``inspect``: parameters, MACs and placement per node, its text and JSON, and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import onnx
import pytest
from anacc.compiler.frontend import load_model
from anacc.compiler.inspect import inspect_graph, render_text, to_json
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper


def _weight(name: str, *shape: int, seed: int = 0) -> onnx.TensorProto:
    rng = np.random.default_rng([seed, *shape])
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def _save(nodes, x_shape, out_shape, inits, path: Path) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])],
        initializer=inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _conv_macs(out_h: int, out_w: int, c_out: int, c_in: int, group: int, k: int) -> int:
    return out_h * out_w * c_out * (c_in // group) * k * k


@pytest.fixture
def cnn_path(tmp_path: Path) -> Path:
    """Conv 1->4 (3x3, pad 1) on 8x8, ReLU, 2x2 max pool, grouped Conv 4->8 (3x3, group 2),
    Flatten, Gemm 32->10."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node(
            "MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2", group=2),
        helper.make_node("Flatten", ["c2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc", transB=1),
    ]
    inits = [
        _weight("w1", 4, 1, 3, 3),
        _weight("b1", 4),
        _weight("w2", 8, 2, 3, 3),
        _weight("w3", 10, 32),
        _weight("b3", 10),
    ]
    return _save(nodes, (1, 8, 8), (10,), inits, tmp_path / "cnn.onnx")


@pytest.fixture
def mlp_path(tmp_path: Path) -> Path:
    """MatMul 784->32 + Add bias, ReLU, Gemm 32->10 with bias."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2"),
    ]
    inits = [_weight("w1", 784, 32), _weight("b1", 32), _weight("w2", 32, 10), _weight("b2", 10)]
    return _save(nodes, (784,), (10,), inits, tmp_path / "mlp.onnx")


def test_cnn_params_and_macs_follow_the_hand_formulas(cnn_path: Path) -> None:
    report = inspect_graph(load_model(cnn_path))
    rows = {r.node: r for r in report.rows}
    assert [r.node for r in report.rows] == ["conv1", "relu1", "pool1", "conv2", "flatten", "fc"]
    conv1 = _conv_macs(8, 8, 4, 1, 1, 3)
    conv2 = _conv_macs(2, 2, 8, 4, 2, 3)
    fc = 32 * 10
    assert (rows["conv1"].params, rows["conv1"].macs) == (4 * 1 * 9 + 4, conv1)
    assert (rows["conv2"].params, rows["conv2"].macs) == (8 * 2 * 9, conv2)
    assert (rows["fc"].params, rows["fc"].macs) == (32 * 10 + 10, fc)
    for name in ("relu1", "pool1", "flatten"):
        assert (rows[name].params, rows[name].macs, rows[name].placement) == (0, 0, "digital")
    assert {rows[n].placement for n in ("conv1", "conv2", "fc")} == {"analog"}
    assert rows["conv2"].input_shapes == (("N", 4, 4, 4),)
    assert rows["conv2"].output_shapes == (("N", 8, 2, 2),)
    assert rows["flatten"].output_shapes == (("N", 32),)
    totals = report.totals
    assert totals.params == 40 + 144 + 330
    assert totals.macs == conv1 + conv2 + fc == totals.analog_macs
    assert totals.analog_share == 1.0


def test_an_add_is_a_bias_only_when_it_alone_reads_the_layer(tmp_path: Path) -> None:
    """A MatMul whose output another node also reads keeps its Add digital: the canonicalize
    pass cannot fold the bias into the layer without changing what the other node sees."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="fc"),
        helper.make_node("Add", ["m", "b"], ["a"], name="bias"),
        helper.make_node("Mul", ["m", "a"], ["y"], name="mix"),
    ]
    path = _save(nodes, [6], [4], [_weight("w", 6, 4), _weight("b", 4)], tmp_path / "m.onnx")
    rows = {r.node: r for r in inspect_graph(load_model(path)).rows}
    assert (rows["fc"].placement, rows["bias"].placement) == ("analog", "digital")


def test_mlp_params_and_macs_follow_the_hand_formulas(mlp_path: Path) -> None:
    report = inspect_graph(load_model(mlp_path))
    rows = {r.node: r for r in report.rows}
    assert (rows["fc1"].params, rows["fc1"].macs, rows["fc1"].placement) == (
        784 * 32,
        784 * 32,
        "analog",
    )
    # the bias Add is the canonicalize pass's: it folds into the analog layer before it
    assert (rows["bias1"].params, rows["bias1"].macs, rows["bias1"].placement) == (
        32,
        0,
        "folded",
    )
    assert rows["bias1"].reason == "bias of the analog layer before it"
    assert (rows["fc2"].params, rows["fc2"].macs) == (32 * 10 + 10, 32 * 10)
    assert report.totals.params == 784 * 32 + 32 + 32 * 10 + 10
    assert report.totals.macs == 784 * 32 + 32 * 10

    text = render_text(report)
    assert f"{784 * 32 + 32 + 32 * 10 + 10:,}" in text
    assert f"{784 * 32 + 32 * 10:,}" in text
    assert "N x 784" in text and "N x 32" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("node"))
    fc1 = next(line for line in lines if line.startswith("fc1 "))
    # Columns are aligned: the placement column starts at the same offset in every row.
    assert fc1.index("analog") == header.index("placement")


def test_matmul_of_two_activations_is_digital(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="proj"),
        helper.make_node("Transpose", ["a"], ["at"], name="t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["a", "at"], ["y"], name="gram"),
    ]
    path = _save(nodes, (3, 8), (3, 3), [_weight("w", 8, 4)], tmp_path / "gram.onnx")
    report = inspect_graph(load_model(path))
    rows = {r.node: r for r in report.rows}
    assert (rows["proj"].macs, rows["proj"].placement) == (3 * 8 * 4, "analog")
    assert (rows["gram"].macs, rows["gram"].placement, rows["gram"].params) == (
        3 * 4 * 3,
        "digital",
        0,
    )
    assert report.totals.analog_share == pytest.approx(96 / (96 + 36))
    assert "72.7 %" in render_text(report)


def test_json_holds_rows_and_totals(cnn_path: Path) -> None:
    data = json.loads(json.dumps(to_json(inspect_graph(load_model(cnn_path)))))
    assert data["inputs"] == [{"name": "x", "shape": ["N", 1, 8, 8], "dtype": "float32"}]
    assert data["nodes"][0]["output_shapes"] == [["N", 4, 8, 8]]
    assert data["totals"]["params"] == 514
    assert data["totals"]["analog_share"] == 1.0


def _cli() -> click.Group:
    from anacc.cli_inspect import inspect_cmd

    @click.group()
    def group() -> None:
        """Test group."""

    group.add_command(inspect_cmd)
    return group


def test_cli_prints_the_table_and_json(mlp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(_cli(), ["inspect", str(mlp_path)])
    assert result.exit_code == 0, result.output
    assert "25,450" in result.stdout and "fc1" in result.stdout
    result = runner.invoke(_cli(), ["inspect", str(mlp_path), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["totals"]["macs_per_sample"] == 784 * 32 + 32 * 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.onnx"], "no such file"),
        (["{mlp}", "--max-params", "100"], "more than the limit of 100"),
        (["{garbage}"], "not an ONNX model"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(
    args: list[str], message: str, mlp_path: Path, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07" + bytes(range(256)) * 3)
    args = [a.format(mlp=mlp_path, garbage=garbage) for a in args]
    result = CliRunner().invoke(_cli(), ["inspect", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr
    assert "Traceback" not in result.output


def _console_script() -> str | None:
    exe = shutil.which("anacc", path=str(Path(sys.executable).parent))
    if exe is None:
        return None
    probe = subprocess.run([exe, "inspect", "--help"], capture_output=True, text=True)
    return exe if probe.returncode == 0 else None


def test_console_script(mlp_path: Path, tmp_path: Path) -> None:
    exe = _console_script()
    if exe is None:
        pytest.skip("the anacc console script has no working inspect command yet")
    ok = subprocess.run([exe, "inspect", str(mlp_path), "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["totals"]["params"] == 25450
    bad = subprocess.run(
        [exe, "inspect", str(tmp_path / "nope.onnx")], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
