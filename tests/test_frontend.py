"""The ONNX frontend: IR shapes and attributes against onnxruntime, folding, and errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from anacc.compiler import symdim
from anacc.compiler.frontend import load_model, load_onnx, model_sha256
from anacc.compiler.ir import Graph
from onnx import TensorProto, helper, numpy_helper
from onnx_builders import OP_CASES, inputs_for_batch, single_op_model

from anacc.errors import ModelError, UnsupportedOpError


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def ort_shapes(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, tuple]:
    """The actual shape of every node output when onnxruntime runs ``model`` on ``feeds``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    declared = {o.name for o in m.graph.output}
    for node in m.graph.node:
        m.graph.output.extend(
            onnx.ValueInfoProto(name=t) for t in node.output if t and t not in declared
        )
    sess = _session(m)
    names = [o.name for o in sess.get_outputs()]
    return {n: v.shape for n, v in zip(names, sess.run(None, feeds), strict=True)}


def assert_shapes_match_ort(
    graph: Graph, model: onnx.ModelProto, batches: tuple[int, ...] = (1, 3)
) -> int:
    """Compare every IR tensor that onnxruntime also computes, for each batch size."""
    compared = 0
    model = _dynamic_batch(model)
    for batch in batches:
        feeds = inputs_for_batch(model, batch, np.random.default_rng(batch))
        actual = ort_shapes(model, feeds)
        for name, info in graph.tensors.items():
            if graph.is_constant(name) or name not in actual:
                continue
            ir = tuple(symdim.substitute(d, batch) for d in info.shape)
            assert ir == actual[name], f"{name}: IR {info.shape} vs onnxruntime {actual[name]}"
            compared += 1
    return compared


def _dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every graph input's first dimension symbolic, so any batch runs."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    constant = {t.name for t in m.graph.initializer}
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name not in constant and dims:
            dims[0].Clear()
            dims[0].dim_param = "N"
    return m


def _save(model: onnx.ModelProto, tmp_path: Path, name: str = "model.onnx") -> Path:
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


# -- every single-op case ------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_ir_shapes_match_onnxruntime_for_batch_1_and_3(case: str, tmp_path: Path) -> None:
    model, example = OP_CASES[case]()
    graph = load_model(_save(model, tmp_path))
    assert [i.shape[0] for i in graph.inputs] == ["N"] * len(example)
    assert len(graph) == 1
    outputs = [t for t in graph.nodes()[0].outputs if t]
    assert assert_shapes_match_ort(graph, model) == 2 * len(outputs)
    assert _session(model).run(None, example)  # the example inputs fit the model


def test_nodes_keep_their_onnx_form(tmp_path: Path) -> None:
    """Digital nodes are the model's own: op, inputs (config inputs included), attributes
    with their ONNX types, so writing them back gives the same model."""
    from anacc.compiler.onnx_nodes import node_proto

    for case in ("pad_opset18_axes", "squeeze_opset13_input", "conv2d_same_upper", "lrn"):
        model, _ = OP_CASES[case]()
        graph = load_model(_save(model, tmp_path, f"{case}.onnx"))
        [node] = graph.nodes()
        [source] = [n for n in model.graph.node if n.op_type == node.op]
        assert tuple(source.input) == node.inputs and tuple(source.output) == node.outputs
        written = node_proto(node)
        assert sorted(a.SerializeToString() for a in written.attribute) == sorted(
            a.SerializeToString() for a in source.attribute
        )


def test_symbolic_dims_stay_multiples_of_the_batch() -> None:
    assert symdim.mul("N", 4) == "4*N" and symdim.mul("2*N", 3) == "6*N"
    assert symdim.mul("N", "N") is None
    assert symdim.div_exact("6*N", 3) == "2*N" and symdim.div_exact("6*N", 4) is None
    assert symdim.div_exact("6*N", "2*N") == 3
    assert symdim.add("N", "N") == "2*N" and symdim.add("N", 1) is None
    assert symdim.add("N", 0) == "N" and symdim.sub("3*N", "N") == "2*N"
    assert symdim.sub(5, 7) == -2 and symdim.sub(1, "N") is None
    assert symdim.product(["N", 2, 3]) == "6*N" and symdim.product([2, 3]) == 6
    assert symdim.numel_per_sample(("N", 4, "2*N")) == 8
    assert symdim.substitute("3*N", 5) == 15 and symdim.substitute(7, 5) == 7


# -- folding ---------------------------------------------------------------------------------


def _graph_model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=list(inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model = onnx.shape_inference.infer_shapes(model)
    for out in model.graph.output:
        if not out.type.tensor_type.HasField("shape"):
            out.type.tensor_type.shape.SetInParent()
        for dim in out.type.tensor_type.shape.dim:
            dim.Clear()
    return model


def _x(name: str = "x", *dims: int | str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))


def _const(name: str, *values: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _scalar(name: str, value: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.int64), name)


def _ideal_matches_ort(path: Path, model: onnx.ModelProto, batches=(1, 3)) -> None:
    import anacc

    program = anacc.compile(path)
    for batch in batches:
        feeds = inputs_for_batch(_dynamic_batch(model), batch, np.random.default_rng(batch))
        want = _session(model).run(None, feeds)
        got = program.run(feeds, backend="ideal")
        for w, g in zip(want, got.values(), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_batch_dependent_shape_chains_stay_and_run_as_onnxruntime_runs_them(
    tmp_path: Path,
) -> None:
    # x.reshape(x.size(0) * x.size(1), -1) as a tracing exporter writes it.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
        helper.make_node("Gather", ["s", "i1"], ["c"], axis=0),
        helper.make_node("Mul", ["b", "c"], ["bc"]),
        helper.make_node("Unsqueeze", ["bc", "ax"], ["bc1"]),
        helper.make_node("Concat", ["bc1", "m1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape"),
    ]
    inits = [_scalar("i0", 0), _scalar("i1", 1), _const("ax", 0), _const("m1", -1)]
    model = _graph_model(nodes, [_x("x", "batch", 4, 3, 2)], ["y"], inits)
    path = _save(model, tmp_path)
    graph = load_model(path)
    ops = [n.op for n in graph.nodes()]
    # the channel count (4) is static and folds; the batch is only known at run time
    assert "Reshape" in ops and ops.count("Gather") == 1 and graph.is_constant("c")
    assert graph.outputs[0].shape[1:] == (6,)
    _ideal_matches_ort(path, model)


def test_static_shape_chains_fold_into_constants(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "st", "en"], ["tail"]),
        helper.make_node("ReduceProd", ["tail"], ["n"], keepdims=1),
        helper.make_node("Concat", ["m1", "n"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
        helper.make_node("Relu", ["y"], ["z"]),
    ]
    inits = [_const("st", 1), _const("en", 3), _const("m1", -1)]
    model = _graph_model(nodes, [_x("x", "N", 3, 4)], ["z"], inits)
    path = _save(model, tmp_path)
    graph = load_model(path)
    assert [n.op for n in graph.nodes()] == ["Reshape", "Relu"]
    np.testing.assert_array_equal(graph.initializers["shape"], [-1, 12])
    assert set(graph.folded) == {"Shape_0", "Slice_1", "ReduceProd_2", "Concat_3"}
    assert assert_shapes_match_ort(graph, model) == 4
    _ideal_matches_ort(path, model)


def test_constant_subgraphs_become_initializers(tmp_path: Path) -> None:
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    nodes = [
        helper.make_node("Constant", [], ["wt"], value=numpy_helper.from_array(w)),
        helper.make_node("Transpose", ["wt"], ["w"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node(
            "ConstantOfShape",
            ["shp"],
            ["bias"],
            value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5]),
        ),
        helper.make_node("Add", ["h", "bias"], ["y"]),
    ]
    model = _graph_model(nodes, [_x("x", "N", 4)], ["y"], [_const("shp", 3)])
    graph = load_model(_save(model, tmp_path))
    assert [n.op for n in graph.nodes()] == ["MatMul", "Add"]
    np.testing.assert_array_equal(graph.initializers["w"], w.T)
    np.testing.assert_array_equal(graph.initializers["bias"], np.full(3, 0.5, np.float32))
    assert set(graph.initializers) == {"w", "bias"}
    assert graph.tensors["w"].shape == (4, 3)
    assert assert_shapes_match_ort(graph, model) == 4


def test_opset8_model_is_converted(tmp_path: Path) -> None:
    model = single_op_model("Softmax", {"x": (3, 4)}, opset=8)
    graph = load_model(_save(model, tmp_path))
    assert graph.opset == 17
    assert graph.outputs[0].shape == ("N", 3, 4)
    assert assert_shapes_match_ort(graph, model) >= 2


def test_opset_above_21_is_converted_to_21(tmp_path: Path) -> None:
    graph = load_model(_save(single_op_model("Relu", {"x": (3,)}, opset=23), tmp_path))
    assert graph.opset == 21 and graph.nodes()[0].op == "Relu"


def test_opset_above_21_stays_when_it_does_not_convert_but_onnxruntime_runs_it(
    tmp_path: Path,
) -> None:
    consts = {"scale": np.full(4, 2.0, np.float32)}
    model = single_op_model("RMSNormalization", {"x": (3, 4)}, consts, opset=23)
    graph = load_model(_save(model, tmp_path))
    assert graph.opset == 23 and [n.op for n in graph.nodes()] == ["RMSNormalization"]
    assert graph.outputs[0].shape == ("N", 3, 4)


def test_opset_above_21_that_neither_converts_nor_runs_is_refused(tmp_path: Path) -> None:
    # onnxruntime 1.32 does not expand the Swish inside SwiGLU-28's function body
    model = single_op_model("SwiGLU", {"a": (4,), "b": (4,)}, opset=28)
    with pytest.raises(ModelError, match=r"opset 28 is not supported") as exc:
        load_model(_save(model, tmp_path))
    assert "onnxruntime" in str(exc.value) and "re-export" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_shapes_onnx_infers_wrongly_are_taken_from_onnxruntime(tmp_path: Path) -> None:
    # ONNX infers 2 x 2 for this ceil-mode pool, whose second window would start in the
    # padding; onnxruntime and the declared output say 1 x 1
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[1, 1], strides=[2, 2])
    node.attribute.append(helper.make_attribute("ceil_mode", 1))
    graph = helper.make_graph([node], "g", [_x("x", 1, 1, 2, 2)], [_x("y", 1, 1, 1, 1)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(onnx.shape_inference.InferenceError):
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = load_model(_save(model, tmp_path))
    assert graph.outputs[0].shape == (1, 1, 1, 1)


def test_declared_fixed_first_axis_stays_as_declared(tmp_path: Path) -> None:
    model = single_op_model("Relu", {"x": (3,)})
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    graph = load_model(_save(model, tmp_path))
    assert graph.inputs[0].shape == (1, 3)
    assert graph.outputs[0].shape == (1, 3)


# -- models exported by torch ----------------------------------------------------------------

torch = pytest.importorskip("torch")


class _SmallCnn(torch.nn.Module):
    def __init__(self, flatten: str) -> None:
        super().__init__()
        self.flatten = flatten
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        if self.flatten == "view":
            x = x.view(x.size(0), -1)
        elif self.flatten == "reshape3":
            x = x.reshape(x.size(0), x.size(1), -1).mean(dim=2)
            x = torch.cat([x] * 16, dim=1)
        else:
            x = torch.flatten(x, 1)
        return self.fc(x)


def _export(flatten: str, path: Path, **kwargs) -> onnx.ModelProto:
    torch.manual_seed(0)
    net = _SmallCnn(flatten).eval()
    torch.onnx.export(net, (torch.randn(2, 1, 8, 8),), str(path), input_names=["x"], **kwargs)
    return onnx.load(str(path))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("flatten", ["view", "flatten", "reshape3"])
@pytest.mark.parametrize("dynamic", [True, False])
def test_torchscript_exports_compile_and_run_as_exported(
    flatten: str, dynamic: bool, tmp_path: Path
):
    axes = {"dynamic_axes": {"x": {0: "batch"}}} if dynamic else {}
    path = tmp_path / "model.onnx"
    model = _export(flatten, path, dynamo=False, **axes)
    graph = load_model(path)
    ops = [n.op for n in graph.nodes()]
    assert ops.count("Conv") == 1 and ops.count("Gemm") == 1
    assert graph.outputs[0].shape == ("N", 10) if dynamic else (2, 10)
    # a fixed-batch export runs with its batch of 2, as declared
    batches = (1, 3) if dynamic else (2,)
    assert assert_shapes_match_ort(graph, model, batches) >= len(batches) * len(ops)
    import anacc

    program = anacc.compile(path)
    assert len(program.layers) == 2
    for batch in batches:
        feeds = inputs_for_batch(model, batch, np.random.default_rng(batch))
        [want] = _session(model).run(None, feeds)
        got = program.run(feeds, backend="ideal")
        np.testing.assert_allclose(next(iter(got.values())), want, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("dynamic", [True, False])
def test_dynamo_export_with_external_data(dynamic: bool, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    path = tmp_path / "model.onnx"
    torch.manual_seed(0)
    torch.onnx.export(
        _SmallCnn("view").eval(),
        (torch.randn(2, 1, 8, 8),),
        str(path),
        dynamo=True,
        external_data=True,
        dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic else None,
    )
    assert (tmp_path / "model.onnx.data").is_file()
    graph = load_model(path)
    ops = [n.op for n in graph.nodes()]
    assert ops[:3] == ["Conv", "Relu", "MaxPool"] and ops[-2:] == ["Reshape", "Gemm"]
    assert graph.outputs[0].shape == (("N", 10) if dynamic else (2, 10))
    model = onnx.load(str(path))
    batches = (1, 3) if dynamic else (2,)
    assert assert_shapes_match_ort(graph, model, batches) == len(ops) * len(batches)
    conv = graph.nodes()[0]
    assert graph.initializers[conv.inputs[1]].shape == (4, 1, 3, 3)
    _ideal_matches_ort(path, model, batches)

    (tmp_path / "model.onnx.data").unlink()
    with pytest.raises(ModelError, match=r"model\.onnx.*model\.onnx\.data.*missing"):
        load_model(path)


# -- errors ----------------------------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo, path: Path | str) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_ops_nothing_runs_are_named_alone(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Erf", ["x"], ["e1"], name="erf_1"),
        # an op onnxruntime's CPU provider has no kernel for
        helper.make_node("ImageDecoder", ["png"], ["img"], name="decode_1"),
        helper.make_node("ImageDecoder", ["png"], ["img2"], name="decode_2"),
        helper.make_node("Cast", ["img"], ["imgf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["img2"], ["imgf2"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["imgf"], ["s1"], keepdims=0),
        helper.make_node("ReduceSum", ["imgf2"], ["s2"], keepdims=0),
        helper.make_node("Add", ["s1", "s2"], ["s12"]),
        helper.make_node("Add", ["e1", "s12"], ["e3"]),
        helper.make_node("Gather", ["e3", "idx"], ["g"], name="/emb/Gather", axis=1),
        # a shape chain behind an unsupported op is not listed
        helper.make_node("Shape", ["g"], ["s"]),
        helper.make_node("Gather", ["s", "k0"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "i0"], ["b1"]),
        helper.make_node("Concat", ["b1", "m1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["g", "shape"], ["r"]),
        helper.make_node("Fancy", ["r"], ["y"], name="fancy", domain="my.ops"),
    ]
    idx = numpy_helper.from_array(np.array([0, 2], dtype=np.int64), "idx")
    graph = helper.make_graph(
        nodes,
        "g",
        [_x("x", "N", 4, 3), helper.make_tensor_value_info("png", TensorProto.UINT8, [64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        initializer=[idx, _const("i0", 0), _const("m1", -1), _scalar("k0", 0)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("my.ops", 1)]
    )
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(UnsupportedOpError) as exc:
        load_model(path)
    message = _one_line(exc, path)
    assert message.startswith(f"{path} uses ops that neither the analog array nor the digital")
    assert "ImageDecoder (nodes decode_1, decode_2)" in message
    assert "my.ops.Fancy (node fancy)" in message
    for op in ("Erf", "Gather", "Shape", "Concat", "Reshape", "Unsqueeze", "Cast", "Add"):
        assert op not in message.split(": ", 1)[1]


def test_shapes_computed_from_data_run_as_onnxruntime_runs_them(tmp_path: Path) -> None:
    import anacc

    nodes = [helper.make_node("Reshape", ["x", "target"], ["y"], name="dyn_reshape")]
    target = helper.make_tensor_value_info("target", TensorProto.INT64, [2])
    model = _graph_model(nodes, [_x("x", "N", 2, 3), target], ["y"])
    path = _save(model, tmp_path)
    program = anacc.compile(path)
    x = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    out = program.run({"x": x, "target": np.array([-1, 2], dtype=np.int64)}, backend="ideal")
    np.testing.assert_array_equal(out["y"], x.reshape(-1, 2))


def test_a_batch_baked_into_a_reshape_runs_only_with_that_batch(tmp_path: Path) -> None:
    import anacc
    from anacc.errors import DataError

    model = single_op_model("Reshape", {"x": (2, 3)}, {"s": np.array([2, 3], dtype=np.int64)})
    path = _save(model, tmp_path)
    program = anacc.compile(path)
    x = np.ones((1, 2, 3), dtype=np.float32)
    np.testing.assert_array_equal(program.run({"x": x}, backend="ideal")["y"], x.reshape(2, 3))
    with pytest.raises(DataError, match="Reshape") as exc:
        program.run({"x": np.ones((3, 2, 3), dtype=np.float32)}, backend="ideal")
    assert "\n" not in str(exc.value)


def test_dynamic_non_batch_dimension_is_rejected(tmp_path: Path) -> None:
    model = _graph_model([helper.make_node("Relu", ["x"], ["y"])], [_x("x", "N", "seq")], ["y"])
    path = _save(model, tmp_path)
    with pytest.raises(ModelError, match=r"'x'.*seq.*axis 1") as exc:
        load_model(path)
    _one_line(exc, path)


def test_extra_outputs_of_a_node_are_used_as_onnx_defines_them(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("MaxPool", ["x"], ["y", "idx"], name="pool", kernel_shape=[2]),
        helper.make_node("Cast", ["idx"], ["idx_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["y", "idx_f"], ["z"]),
    ]
    model = _graph_model(nodes, [_x("x", "N", 2, 4)], ["z"])
    path = _save(model, tmp_path)
    _ideal_matches_ort(path, model)


@pytest.fixture
def small_model_path(tmp_path: Path) -> Path:
    model, _ = OP_CASES["conv2d_basic"]()
    return _save(model, tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.onnx"
    with pytest.raises(ModelError, match="no such file") as exc:
        load_model(path)
    _one_line(exc, path)


def test_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a file"):
        load_model(tmp_path)


def test_truncated_file(small_model_path: Path) -> None:
    data = small_model_path.read_bytes()
    small_model_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as exc:
        load_model(small_model_path)
    _one_line(exc, small_model_path)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(seed).bytes(4096))
    with pytest.raises(ModelError) as exc:
        load_model(path)
    _one_line(exc, path)


def test_empty_file_fails_the_checker(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelError, match="invalid ONNX model") as exc:
        load_model(path)
    _one_line(exc, path)


def test_checker_failure(tmp_path: Path) -> None:
    model = single_op_model("Relu", {"x": (3,)})
    model.graph.node[0].input[0] = "undefined"
    path = _save(model, tmp_path)
    with pytest.raises(ModelError, match="invalid ONNX model") as exc:
        load_model(path)
    _one_line(exc, path)


def test_opset8_model_that_cannot_convert(tmp_path: Path) -> None:
    consts = {k: np.ones(3, np.float32) for k in ("s", "b", "m", "v")}
    model = single_op_model("BatchNormalization", {"x": (3, 4)}, consts, opset=8, spatial=0)
    path = _save(model, tmp_path)
    with pytest.raises(ModelError, match=r"opset 8 is not supported.*opset 17") as exc:
        load_model(path)
    _one_line(exc, path)


def test_max_params(small_model_path: Path) -> None:
    assert load_onnx(small_model_path, max_params=4 * 3 * 9 + 4)
    with pytest.raises(ModelError, match="112 parameters, more than the limit of 111") as exc:
        load_model(small_model_path, max_params=111)
    _one_line(exc, small_model_path)


def test_external_data_truncated(tmp_path: Path) -> None:
    model, _ = OP_CASES["conv2d_basic"]()
    path = tmp_path / "model.onnx"
    onnx.save(
        model, str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0
    )
    data = tmp_path / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(ModelError, match="too short") as exc:
        load_model(path)
    _one_line(exc, path)


def test_model_sha256_covers_external_data(tmp_path: Path) -> None:
    model, _ = OP_CASES["conv2d_basic"]()
    path = tmp_path / "model.onnx"
    onnx.save(
        model, str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0
    )
    first = model_sha256(path)
    assert first == model_sha256(path) and len(first) == 64
    data = tmp_path / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 1
    data.write_bytes(bytes(raw))
    assert model_sha256(path) != first
    graph = load_model(path)
    assert graph.initializers["w"].shape == (4, 3, 3, 3)


def test_graph_tensors_describe_every_tensor(small_model_path: Path) -> None:
    graph = load_model(small_model_path)
    assert set(graph.tensors) == {"x", "w", "b", "y"}
    assert graph.tensors["w"].dtype == "float32"
    assert graph.name == small_model_path.stem
    assert os.fspath(small_model_path).endswith(".onnx")
