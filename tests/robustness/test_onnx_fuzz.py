"""The ONNX frontend on broken models: every one gives an AnaccError line, never a traceback.

Byte-level fuzzing (corruption, truncation, insertion) of the bundled models, structural
mutations of small and bundled models (wild dimensions, cycles, dangling inputs, duplicate
names, wrong data sizes and types, opsets, attributes, external data), hand-written cases for
each of them, and a few of them through the real ``anacc`` command.
"""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from anacc.compiler.frontend import external_data_files, load_model, model_sha256
from anacc.compiler.ir import Graph
from anacc.compiler.ops import torch_ops
from anacc.compiler.pipeline import compile_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from robustness_util import (
    MODELS,
    assert_cli_error,
    expect_user_error,
    fuzz_settings,
    run_cli,
    tiny_cnn,
    tiny_mlp,
)

from anacc.errors import ModelError

FUZZ = fuzz_settings(HealthCheck.data_too_large)

BUNDLED = sorted(MODELS.glob("*.onnx"))


def _bases() -> dict[str, onnx.ModelProto]:
    bases = {"tiny_mlp": tiny_mlp(), "tiny_cnn": tiny_cnn(), "tiny_mlp_opset9": tiny_mlp(9)}
    for path in BUNDLED:
        bases[path.stem] = onnx.load(str(path))
    return bases


BASES = _bases()
BASE_BYTES = {name: m.SerializeToString() for name, m in BASES.items()}


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the case files, with data files next to it and one level up, so that
    external-data references that escape the folder point at files that exist."""
    root = tmp_path_factory.mktemp("onnx_cases")
    folder = root / "cases"
    folder.mkdir()
    (root / "x.bin").write_bytes(bytes(4096))
    (folder / "data.bin").write_bytes(bytes(range(256)) * 16)
    os.symlink(root / "x.bin", folder / "link.bin")
    return folder


def _write(folder: Path, model: onnx.ModelProto | bytes, name: str = "case.onnx") -> Path:
    path = folder / name
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return path


def _load_or_error(tally, path: Path, **kwargs) -> Graph | ModelError | None:
    """The case through ``load_model``: a graph, or an error that names the file."""
    graph: list[Graph] = []
    exc = expect_user_error(tally, "onnx", lambda: graph.append(load_model(path, **kwargs)))
    if exc is not None:
        assert str(path) in str(exc), f"the message does not name the file: {exc}"
        return exc
    return graph[0]


# -- byte-level fuzzing ------------------------------------------------------------------------


@st.composite
def corrupted_bytes(draw: st.DrawFn) -> bytes:
    data = bytearray(BASE_BYTES[draw(st.sampled_from(sorted(BASE_BYTES)), label="base")])
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "splice"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            pos = draw(st.integers(0, len(data) - 1))
            data[pos] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "overwrite":
        # Most of a model's bytes are weights; the structure sits before and after them.
        head = min(len(data), 512)
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.one_of(st.integers(0, head - 1), st.integers(0, len(data) - 1)))
            data[pos] = draw(st.integers(0, 255))
        return bytes(data)
    pos = draw(st.integers(0, len(data)))
    if kind == "insert":
        return bytes(data[:pos] + draw(st.binary(min_size=1, max_size=16)) + data[pos:])
    start = draw(st.integers(0, len(data) - 1))
    return bytes(data[:pos] + data[start : start + draw(st.integers(1, 64))] + data[pos:])


@settings(FUZZ, max_examples=700)
@given(blob=corrupted_bytes())
def test_corrupted_model_bytes_give_one_error_line(blob: bytes, case_dir: Path, tally) -> None:
    _load_or_error(tally, _write(case_dir, blob))


# -- structural mutations ---------------------------------------------------------------------

WILD_INTS = st.one_of(
    st.sampled_from([-(2**63), -(2**31), -1, 0, 1, 2, 3, 2**31, 2**40, 2**62, 2**63 - 1]),
    st.integers(-10, 1000),
)
WILD_DIMS = st.one_of(WILD_INTS, st.sampled_from(["N", "batch", "", "2*N", "?"]))
OP_TYPES = st.sampled_from(torch_ops() + ["Loop", "If", "ImageDecoder", "Foo", "", "Relu "])
ATTR_NAMES = st.sampled_from(
    [
        "axis",
        "axes",
        "perm",
        "pads",
        "strides",
        "kernel_shape",
        "dilations",
        "group",
        "auto_pad",
        "ceil_mode",
        "alpha",
        "transA",
        "transB",
        "keepdims",
        "allowzero",
        "epsilon",
        "training_mode",
        "mode",
        "size",
        "to",
        "value",
    ]
)
LOCATIONS = st.sampled_from(
    ["../x.bin", "data.bin", "missing.bin", "", "link.bin", "/etc/hostname", ".", "sub/../data.bin"]
)


def _pick(draw: st.DrawFn, seq) -> int | None:
    return draw(st.integers(0, len(seq) - 1)) if len(seq) else None


_ATTR_KINDS = {
    onnx.AttributeProto.INT: "int",
    onnx.AttributeProto.INTS: "ints",
    onnx.AttributeProto.FLOAT: "float",
    onnx.AttributeProto.STRING: "string",
    onnx.AttributeProto.TENSOR: "tensor",
}


def _schema_attributes(node: onnx.NodeProto) -> dict[str, str]:
    """The node's attributes by name and kind per its ONNX schema ({} for unknown ops)."""
    try:
        schema = onnx.defs.get_schema(node.op_type)
    except onnx.defs.SchemaError:
        return {}
    return {
        name: _ATTR_KINDS[a.type] for name, a in schema.attributes.items() if a.type in _ATTR_KINDS
    }


def _attr_value(draw: st.DrawFn, name: str, kind: str | None = None) -> onnx.AttributeProto:
    """An attribute ``name``: of ``kind`` with a wild value, or of any kind."""
    kinds = ["int", "ints", "float", "string", "tensor", "empty"]
    kind = kind or draw(st.sampled_from(kinds))
    if kind == "int":
        return helper.make_attribute(name, draw(WILD_INTS))
    if kind == "ints":
        ints = draw(st.lists(WILD_INTS, max_size=6))
        return helper.make_attribute(name, ints, attr_type=onnx.AttributeProto.INTS)
    if kind == "float":
        value = draw(st.floats(allow_nan=True, allow_infinity=True, width=32))
        return helper.make_attribute(name, value)
    if kind == "string":
        return helper.make_attribute(name, draw(st.sampled_from(["SAME_UPPER", "VALID", "x", ""])))
    if kind == "tensor":
        return helper.make_attribute(name, numpy_helper.from_array(np.zeros(3, np.float32)))
    return helper.make_attribute(name, [], attr_type=onnx.AttributeProto.INTS)


def _mutate(draw: st.DrawFn, m: onnx.ModelProto) -> str:
    """Apply one drawn mutation to ``m`` in place; returns its name."""
    g = m.graph
    kind = draw(
        st.sampled_from(
            [
                "input_dim",
                "input_rank",
                "input_type",
                "init_dim",
                "init_data",
                "init_dtype",
                "init_external",
                "dangling",
                "cycle",
                "dup_output",
                "dup_initializer",
                "swap_nodes",
                "remove_node",
                "opset",
                "op_type",
                "attribute",
                "graph_output",
            ]
        ),
        label="mutation",
    )
    node_i, init_i = _pick(draw, g.node), _pick(draw, g.initializer)
    if (
        kind.startswith("input_")
        and not len(g.input)
        or kind == "graph_output"
        and not len(g.output)
    ):
        return kind
    if kind == "input_dim":
        dims = g.input[0].type.tensor_type.shape.dim
        if len(dims):
            value = draw(WILD_DIMS)
            dim = dims[draw(st.integers(0, len(dims) - 1))]
            if isinstance(value, str):
                dim.dim_param = value
            else:
                dim.dim_value = value
    elif kind == "input_rank":
        shape = g.input[0].type.tensor_type.shape
        if draw(st.booleans()):
            shape.dim.add().dim_value = draw(WILD_INTS)
        elif len(shape.dim):
            del shape.dim[-1]
    elif kind == "input_type":
        g.input[0].type.tensor_type.elem_type = draw(st.integers(0, 30))
    elif kind == "init_dim" and init_i is not None:
        t = g.initializer[init_i]
        if draw(st.booleans()) and len(t.dims):
            t.dims[draw(st.integers(0, len(t.dims) - 1))] = draw(WILD_INTS)
        else:
            t.dims.append(draw(st.sampled_from([1, 2, 0, -1])))
    elif kind == "init_data" and init_i is not None:
        t = g.initializer[init_i]
        raw = t.raw_data or bytes(4 * len(t.float_data))
        t.ClearField("float_data")
        cut = draw(st.integers(-len(raw), 64))
        t.raw_data = raw[:cut] if cut < 0 else raw + bytes(cut)
    elif kind == "init_dtype" and init_i is not None:
        g.initializer[init_i].data_type = draw(st.integers(0, 30))
    elif kind == "init_external" and init_i is not None:
        t = g.initializer[init_i]
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        entries = {"location": draw(LOCATIONS)}
        if draw(st.booleans()):
            entries["offset"] = str(draw(st.integers(-8, 8192)))
        if draw(st.booleans()):
            entries["length"] = str(draw(st.integers(-8, 8192)))
        for key, value in entries.items():
            entry = t.external_data.add()
            entry.key, entry.value = key, value
    elif kind == "dangling" and node_i is not None:
        node = g.node[node_i]
        if len(node.input):
            node.input[draw(st.integers(0, len(node.input) - 1))] = "nobody_makes_this"
    elif kind == "cycle" and node_i is not None:
        node, last = g.node[node_i], g.node[len(g.node) - 1]
        if len(node.input):
            node.input[0] = last.output[0]
    elif kind == "dup_output" and node_i is not None:
        names = [n.output[0] for n in g.node] + [t.name for t in g.initializer]
        g.node[node_i].output[0] = draw(st.sampled_from([*names, "x", "input"]))
    elif kind == "dup_initializer" and init_i is not None:
        copy = g.initializer.add()
        copy.CopyFrom(g.initializer[init_i])
        if draw(st.booleans()):
            copy.dims.append(1)
    elif kind == "swap_nodes" and len(g.node) > 1:
        i, j = draw(st.integers(0, len(g.node) - 1)), draw(st.integers(0, len(g.node) - 1))
        a, b = onnx.NodeProto(), onnx.NodeProto()
        a.CopyFrom(g.node[i])
        b.CopyFrom(g.node[j])
        g.node[i].CopyFrom(b)
        g.node[j].CopyFrom(a)
    elif kind == "remove_node" and node_i is not None:
        del g.node[node_i]
    elif kind == "opset":
        choice = draw(st.sampled_from(["version", "domain", "extra", "remove"]))
        if not len(m.opset_import):
            choice = "extra"
        if choice == "version":
            m.opset_import[0].version = draw(
                st.one_of(st.integers(-3, 30), st.sampled_from([2**31, 2**62]))
            )
        elif choice == "domain":
            m.opset_import[0].domain = draw(
                st.sampled_from(["ai.onnx", "com.example", "ai.onnx.ml"])
            )
        elif choice == "extra":
            m.opset_import.append(helper.make_opsetid("", draw(st.integers(1, 25))))
        else:
            del m.opset_import[:]
    elif kind == "op_type" and node_i is not None:
        g.node[node_i].op_type = draw(OP_TYPES)
    elif kind == "attribute" and node_i is not None:
        # Mostly attributes the op has, of the right type (past onnx.checker), wild values.
        node = g.node[node_i]
        schema = _schema_attributes(node)
        if schema and draw(st.integers(0, 3)):
            name = draw(st.sampled_from(sorted(schema)))
            value = _attr_value(draw, name, schema[name])
        else:
            name = draw(ATTR_NAMES)
            value = _attr_value(draw, name)
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.append(value)
    elif kind == "graph_output":
        choice = draw(st.sampled_from(["rename", "remove", "type", "add"]))
        if choice == "rename":
            g.output[0].name = draw(st.sampled_from(["nobody_makes_this", "x", "input", ""]))
        elif choice == "remove":
            del g.output[:]
        elif choice == "type":
            g.output[0].type.tensor_type.elem_type = draw(st.integers(0, 30))
        elif len(g.node):
            g.output.append(helper.make_tensor_value_info(g.node[0].output[0], 1, None))
    return kind


@st.composite
def mutated_models(draw: st.DrawFn, bases: tuple[str, ...] = tuple(BASES)) -> bytes:
    model = onnx.ModelProto()
    model.CopyFrom(BASES[draw(st.sampled_from(bases), label="base")])
    for _ in range(draw(st.integers(1, 3))):
        _mutate(draw, model)
    return model.SerializeToString()


@settings(FUZZ, max_examples=1200)
@given(blob=mutated_models())
def test_mutated_models_give_one_error_line(blob: bytes, case_dir: Path, tally) -> None:
    path = _write(case_dir, blob)
    _load_or_error(tally, path)
    expect_user_error(tally, "onnx", lambda: model_sha256(path))


@settings(FUZZ, max_examples=150)
@given(blob=mutated_models(bases=("tiny_mlp", "tiny_cnn", "tiny_mlp_opset9")))
def test_mutated_models_compile_or_give_one_error_line(blob: bytes, case_dir: Path, tally) -> None:
    path = _write(case_dir, blob)
    expect_user_error(tally, "onnx-compile", lambda: compile_model(path))


# -- named cases ------------------------------------------------------------------------------


def _graph(nodes, inits=(), *, x_dims=("N", 4), y_dims=(None, None), opset=17):
    graph = helper.make_graph(
        nodes,
        "case",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y_dims))],
        initializer=list(inits),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _w(*shape: int, name: str = "w") -> TensorProto:
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def _raw(name: str, dims: list[int], nbytes: int) -> TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
    t.raw_data = bytes(nbytes)
    return t


NAMED: dict[str, tuple[Callable[[], onnx.ModelProto], str]] = {
    "cycle": (
        lambda: _graph(
            [
                helper.make_node("Add", ["x", "b"], ["a"]),
                helper.make_node("Relu", ["a"], ["b"]),
                helper.make_node("Relu", ["a"], ["y"]),
            ]
        ),
        "topologically sorted",
    ),
    "self_loop": (lambda: _graph([helper.make_node("Relu", ["y"], ["y"])]), "topologically"),
    "dangling_input": (
        lambda: _graph([helper.make_node("Add", ["x", "ghost"], ["y"])]),
        "ghost",
    ),
    "duplicate_node_output": (
        lambda: _graph(
            [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["x"], ["y"])]
        ),
        "single static assignment",
    ),
    "output_shadows_initializer": (
        lambda: _graph(
            [helper.make_node("MatMul", ["x", "w"], ["w"]), helper.make_node("Relu", ["w"], ["y"])],
            [_w(4, 3)],
        ),
        "'w'",
    ),
    "duplicate_initializer": (
        lambda: _graph([helper.make_node("MatMul", ["x", "w"], ["y"])], [_w(4, 3), _w(4, 5)]),
        "not unique",
    ),
    "raw_data_short": (
        lambda: _graph([helper.make_node("MatMul", ["x", "w"], ["y"])], [_raw("w", [4, 3], 7)]),
        "too small",
    ),
    "raw_data_long": (
        lambda: _graph([helper.make_node("MatMul", ["x", "w"], ["y"])], [_raw("w", [4, 3], 100)]),
        "holds 100 bytes of data but its shape [4, 3] needs 48",
    ),
    "raw_data_odd_length": (
        lambda: _graph([helper.make_node("MatMul", ["x", "w"], ["y"])], [_raw("w", [4, 3], 49)]),
        "holds 49 bytes",
    ),
    "negative_initializer_dim": (
        lambda: _graph([helper.make_node("MatMul", ["x", "w"], ["y"])], [_raw("w", [4, -3], 48)]),
        "Negative dimension",
    ),
    "huge_initializer_dims": (
        lambda: _graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], [_raw("w", [2**31, 2**31], 48)]
        ),
        "too large",
    ),
    "overflowing_initializer_dims": (
        lambda: _graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], [_raw("w", [2**62, 2**62], 48)]
        ),
        "overflow",
    ),
    "negative_input_dim": (
        lambda: _graph([helper.make_node("Relu", ["x"], ["y"])], x_dims=("N", -4)),
        "has dimension -4 at axis 1",
    ),
    "nan_weights": (
        lambda: _graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            [numpy_helper.from_array(np.full((4, 3), np.nan, np.float32), "w")],
        ),
        "12 NaN/Inf values",
    ),
    "huge_input_dim_into_matmul": (
        lambda: _graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], [_w(4, 3)], x_dims=("N", 2**40)
        ),
        "shape inference failed",
    ),
    "no_default_domain": (
        lambda: helper.make_model(
            tiny_mlp().graph, opset_imports=[helper.make_opsetid("com.example", 1)]
        ),
        "",
    ),
    "opset_far_future": (lambda: tiny_mlp(opset=100), "opset 100 is not supported"),
    "opset_zero": (lambda: tiny_mlp(opset=0), "MatMul"),
    "opset_negative": (lambda: tiny_mlp(opset=-1), "MatMul"),
    "opset_huge": (lambda: tiny_mlp(opset=2**62), "out of supported range"),
}


@pytest.mark.parametrize("case", sorted(NAMED))
def test_named_broken_models(case: str, case_dir: Path, tally) -> None:
    build, fragment = NAMED[case]
    path = _write(case_dir, build(), f"{case}.onnx")
    result = _load_or_error(tally, path)
    assert isinstance(result, ModelError), f"{case} was accepted"
    assert fragment in str(result)


EMPTY: dict[str, Callable[[], onnx.ModelProto]] = {
    "zero_input_dim": lambda: _graph([helper.make_node("Relu", ["x"], ["y"])], x_dims=("N", 0)),
    "empty_layer_output": lambda: _graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], [_w(4, 0)]
    ),
}


@pytest.mark.parametrize("case", sorted(EMPTY))
def test_empty_tensors_compile_and_run_as_onnxruntime_runs_them(
    case: str, case_dir: Path, tally
) -> None:
    import onnxruntime as ort

    path = _write(case_dir, EMPTY[case](), f"{case}.onnx")
    compiled = []
    assert (
        expect_user_error(tally, "onnx-compile", lambda: compiled.append(compile_model(path)))
        is None
    )
    [program] = compiled
    assert not program.layers  # nothing to map
    shape = (3, *program.inputs[0].shape[1:])
    x = np.ones(shape, np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [want] = sess.run(None, {"x": x})
    from anacc.runtime.session import run_program

    got = run_program(program, {"x": x}, backend="ideal").outputs["y"]
    assert got.shape == want.shape


def test_an_empty_recurrent_input_loads_without_running_onnxruntime(case_dir: Path) -> None:
    """onnxruntime's LSTM kernel aborts the process on a batch of 0 instead of raising; the
    frontend's shape probe must not run a model with an empty input (found by fuzzing)."""
    model = onnx.ModelProto()
    model.CopyFrom(BASES["kws_lstm"])
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 0
    graph = load_model(_write(case_dir, model, "empty_lstm.onnx"))
    assert graph.tensors["logits"].shape == (0, 10)


@pytest.mark.parametrize("opset", [8, 9, 13, 21, 22, 23])
def test_opsets_read_directly_or_converted(opset: int, case_dir: Path, tally) -> None:
    path = _write(case_dir, tiny_mlp(opset=opset), f"opset{opset}.onnx")
    graph = _load_or_error(tally, path)
    assert isinstance(graph, Graph)
    assert [n.op for n in graph.nodes()] == ["MatMul", "Add", "Relu"]


@pytest.mark.parametrize("opset", [1, 5])
def test_opsets_that_do_not_convert_are_named(opset: int, case_dir: Path, tally) -> None:
    path = _write(case_dir, tiny_mlp(opset=opset), f"opset{opset}.onnx")
    exc = _load_or_error(tally, path)
    assert isinstance(exc, ModelError)
    assert f"opset {opset} is not supported" in str(exc) and "re-export" in str(exc)


def _external_model(folder: Path, location: str) -> Path:
    """tiny_mlp saved with its weights in ``folder/w.bin``, then pointed at ``location``."""
    model = tiny_mlp()
    onnx.save(
        model,
        str(folder / "ext.onnx"),
        save_as_external_data=True,
        location="w.bin",
        size_threshold=0,
    )
    saved = onnx.load(str(folder / "ext.onnx"), load_external_data=False)
    for t in saved.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    return _write(folder, saved, "ext.onnx")


@pytest.mark.parametrize(
    ("location", "fragment"),
    [
        ("../x.bin", "not a file name inside the model's folder"),
        ("ABSOLUTE", "not a file name inside the model's folder"),
        ("/etc/hostname", "not a file name inside the model's folder"),
        ("sub/../w.bin", "not a file name inside the model's folder"),
        ("link.bin", "symbolic link"),
        ("missing.bin", "is missing"),
        ("", "not a file name"),
        ("data.bin", "is too short"),
        (".", "is missing"),
    ],
)
def test_external_data_outside_the_folder_or_missing(
    location: str, fragment: str, tmp_path: Path, tally
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    outside = tmp_path / "x.bin"
    outside.write_bytes(bytes(4096))
    (folder / "data.bin").write_bytes(bytes(8))
    os.symlink(outside, folder / "link.bin")
    path = _external_model(folder, str(outside) if location == "ABSOLUTE" else location)
    # model_sha256 reads the data files but does not decode the tensors.
    for fn in (load_model, model_sha256) if location != "data.bin" else (load_model,):
        exc = expect_user_error(tally, "onnx", lambda fn=fn: fn(path), must_fail=True)
        assert fragment in str(exc)


def test_external_data_inside_the_folder_is_read(tmp_path: Path, tally) -> None:
    path = _external_model(tmp_path, "w.bin")
    graph = _load_or_error(tally, path)
    assert isinstance(graph, Graph)
    assert external_data_files(path) == [tmp_path / "w.bin"]
    np.testing.assert_array_equal(
        graph.initializers["w"], numpy_helper.to_array(tiny_mlp().graph.initializer[0])
    )


@pytest.mark.parametrize("limit", [0, 11, 14])
def test_max_params_refuses_larger_models(limit: int, case_dir: Path, tally) -> None:
    path = _write(case_dir, tiny_mlp(), "params.onnx")  # 4 x 3 weights + 3 biases = 15
    exc = expect_user_error(
        tally, "onnx", lambda: load_model(path, max_params=limit), must_fail=True
    )
    assert f"has 15 parameters, more than the limit of {limit}" in str(exc)
    assert isinstance(_load_or_error(tally, path, max_params=15), Graph)


def test_max_params_is_checked_before_the_data_is_validated(case_dir: Path, tally) -> None:
    model = _graph([helper.make_node("MatMul", ["x", "w"], ["y"])], [_raw("w", [2**31, 2**31], 48)])
    path = _write(case_dir, model, "huge_params.onnx")
    exc = expect_user_error(
        tally, "onnx", lambda: load_model(path, max_params=10**6), must_fail=True
    )
    assert "4,611,686,018,427,387,904 parameters, more than the limit of 1,000,000" in str(exc)


def test_a_tiny_model_cannot_make_the_folder_allocate_gigabytes(case_dir: Path, tally) -> None:
    """ConstantOfShape([100000, 100000]) is 40 GB of float32 from a 200-byte file."""
    shape = numpy_helper.from_array(np.array([100_000, 100_000], np.int64), "shape")
    one = numpy_helper.from_array(np.array([1.0], np.float32))
    model = _graph(
        [
            helper.make_node("ConstantOfShape", ["shape"], ["big"], value=one),
            helper.make_node("ReduceMean", ["big"], ["m"], keepdims=0),
            helper.make_node("Add", ["x", "m"], ["y"]),
        ],
        [shape],
    )
    path = _write(case_dir, model, "bomb.onnx")
    assert path.stat().st_size < 300
    tracemalloc.start()
    try:
        exc = _load_or_error(tally, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(exc, ModelError)
    assert "ConstantOfShape" in str(exc) and "10,000,000,000 elements" in str(exc)
    assert peak < 64 << 20


def test_invalid_utf8_name_is_reported_not_decoded(case_dir: Path, tally) -> None:
    blob = bytearray(BASE_BYTES["tiny_mlp"])
    pos = blob.find(b"relu")
    blob[pos] = 0xF0
    exc = _load_or_error(tally, _write(case_dir, bytes(blob)))
    assert isinstance(exc, ModelError) and "not valid UTF-8" in str(exc)


# -- through the command line -----------------------------------------------------------------


def test_cli_truncated_model(tmp_path: Path, tally) -> None:
    path = _write(tmp_path, BASE_BYTES["digits_cnn"][:5000], "cut.onnx")
    for command in ("inspect", "compile"):
        result = run_cli(tally, [command, path])
        assert_cli_error(result, str(path), "truncated")
    assert not (tmp_path / "cut.anacc").exists()


def test_cli_cyclic_model(tmp_path: Path, tally) -> None:
    build, fragment = NAMED["cycle"]
    path = _write(tmp_path, build(), "cycle.onnx")
    assert_cli_error(run_cli(tally, ["compile", path]), str(path), fragment)


def test_cli_external_data_outside_the_folder(tmp_path: Path, tally) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "x.bin").write_bytes(bytes(4096))
    path = _external_model(folder, "../x.bin")
    assert_cli_error(run_cli(tally, ["inspect", path]), "../x.bin", "inside the model's folder")


def test_cli_max_params(tmp_path: Path, tally) -> None:
    model = MODELS / "digits_mlp.onnx"
    out = tmp_path / "out.anacc"
    result = run_cli(tally, ["compile", model, "--max-params", "1000", "-o", out])
    assert_cli_error(result, "parameters, more than the limit of 1,000", "--max-params")
    assert not out.exists()
