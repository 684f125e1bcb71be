"""Data files that do not fit the model: refused with one line naming the array; inputs outside
the calibrated range: clipped, counted and reported as a warning with the percentage.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from anacc.compiler.datafile import load_dataset, match_inputs, read_npz
from anacc.compiler.pipeline import compile_model
from anacc.compiler.program import Program
from anacc.compiler.quant import Encoding, encode
from anacc.runtime.session import run_program
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from robustness_util import (
    DATA,
    assert_cli_error,
    expect_user_error,
    fuzz_settings,
    npz_bytes,
    run_cli,
    set_declared_size,
    zip_bytes,
)

from anacc.errors import DataError

FUZZ = fuzz_settings(HealthCheck.function_scoped_fixture)


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory: pytest.TempPathFactory) -> Program:
    """``a (N, 4) + b (N, 4) -> MatMul 4x3 -> y``, compiled without calibration data."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("MatMul", ["s", "w"], ["y"])],
        "two_inputs",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[w],
    )
    path = tmp_path_factory.mktemp("two_inputs") / "two_inputs.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return compile_model(path)


def _digits(n: int = 8) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(DATA / "digits_test.npz") as z:
        arrays = {
            name[: -len(".npy")]: np.lib.format.read_array(z.open(name)) for name in z.namelist()
        }
    return {k: v[:n] for k, v in arrays.items()}


def refused(tally, fn, *fragments: str) -> DataError:
    exc = expect_user_error(tally, "data", fn, must_fail=True)
    assert isinstance(exc, DataError), exc
    for fragment in fragments:
        assert fragment in str(exc), f"{fragment!r} not in {exc}"
    return exc


# -- names, shapes, dtypes, values --------------------------------------------------------------


def test_missing_and_extra_input_names(two_inputs: Program, tally) -> None:
    a = np.ones((5, 4), np.float32)
    refused(tally, lambda: match_inputs({"a": a}, two_inputs.inputs), "missing input array(s) b")
    refused(
        tally,
        lambda: match_inputs({"a": a, "b": a, "c": a}, two_inputs.inputs),
        "unexpected array(s) c",
        "inputs are a, b",
    )
    refused(
        tally,
        lambda: match_inputs({"labels": np.zeros(5)}, two_inputs.inputs),
        "missing input array(s) a, b",
    )
    ds = match_inputs({"b": a, "a": 2 * a}, two_inputs.inputs)
    assert list(ds.inputs) == ["a", "b"] and ds.inputs["a"][0, 0] == 2


def test_single_input_takes_the_one_array_whatever_its_name(mlp_program: Program, tally) -> None:
    x = _digits()["input"]
    ds = match_inputs({"images": x}, mlp_program.inputs)
    np.testing.assert_array_equal(ds.inputs["input"], x)
    refused(
        tally,
        lambda: match_inputs({"x": x, "z": x}, mlp_program.inputs),
        "missing input array(s) input",
    )


@pytest.mark.parametrize(
    ("shape", "got"),
    [
        ((5, 63), "5 x 63"),
        ((5,), "5"),
        ((), "scalar"),
        ((5, 64, 1), "5 x 64 x 1"),
        ((5, 8, 8), "5 x 8 x 8"),
    ],
)
def test_wrong_shapes(shape, got: str, mlp_program: Program, tally) -> None:
    x = np.zeros(shape, np.float32)
    refused(
        tally,
        lambda: match_inputs({"input": x}, mlp_program.inputs),
        f"has shape {got}; expected N x 64",
    )


def test_no_samples_and_mismatched_sample_counts(two_inputs: Program, mlp_program, tally) -> None:
    refused(
        tally,
        lambda: match_inputs({"input": np.zeros((0, 64), np.float32)}, mlp_program.inputs),
        "no samples",
    )
    a, b = np.ones((5, 4), np.float32), np.ones((6, 4), np.float32)
    refused(
        tally, lambda: match_inputs({"a": a, "b": b}, two_inputs.inputs), "different sample counts"
    )


@pytest.mark.parametrize(
    "dtype",
    [np.complex64, np.str_, "datetime64[s]", [("a", "f4"), ("b", "f4")], np.void, object],
    ids=["complex", "str", "datetime", "structured", "void", "object"],
)
def test_non_numeric_dtypes(dtype, mlp_program: Program, tally) -> None:
    x = np.zeros((3, 64), dtype=dtype)
    refused(
        tally,
        lambda: match_inputs({"input": x}, mlp_program.inputs),
        "'input' has dtype",
        "numbers",
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float16, np.float64, np.bool_])
def test_numeric_dtypes_are_read_as_float32(dtype, mlp_program: Program, tally) -> None:
    x = (_digits()["input"] * 16).astype(dtype)
    ds = match_inputs({"input": x}, mlp_program.inputs)
    tally.count("data")
    assert ds.inputs["input"].dtype == np.float32
    np.testing.assert_array_equal(ds.inputs["input"], x.astype(np.float32))


@pytest.mark.parametrize(("value", "count"), [(np.nan, 3), (np.inf, 3), (-np.inf, 3), (1e300, 3)])
def test_nan_and_inf(value: float, count: int, mlp_program: Program, tally) -> None:
    x = _digits()["input"].astype(np.float64)
    x[0, :3] = value
    refused(
        tally, lambda: match_inputs({"input": x}, mlp_program.inputs), f"{count} NaN/Inf values"
    )


# -- labels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "fragments"),
    [
        (np.zeros(7, np.int64), ("'labels' has shape 7; expected 8 entries",)),
        (np.zeros((8, 1), np.int64), ("integer 'labels' have shape 8 x 1",)),
        (np.int64(3), ("'labels' has shape scalar",)),
        (np.array(["a"] * 8), ("'labels' has dtype <U1",)),
        (np.zeros(8, np.complex64), ("'labels' has dtype complex64",)),
        (np.array([0, 1, -1, 2, 3, 4, 5, 6]), ("1 entries that are not class indices",)),
        (np.full(8, 2**40), ("8 entries that are not class indices",)),
        (np.array([np.nan] + [1.0] * 7), ("'labels' has 1 NaN/Inf values",)),
    ],
    ids=["short", "int-2d", "scalar", "str", "complex", "negative", "huge", "nan"],
)
def test_labels_of_the_wrong_length_or_type(labels, fragments, mlp_program, tally) -> None:
    data = {"input": _digits()["input"], "labels": labels}
    refused(tally, lambda: match_inputs(data, mlp_program.inputs), *fragments)


@pytest.mark.parametrize(
    ("labels", "fragments"),
    [
        (np.arange(8) + 5, ("'labels' go up to 12", "output 'logits' has 10 classes")),
        (np.zeros((8, 3), np.float32), ("per-sample shape (3,)", "has (10,)")),
    ],
    ids=["beyond-classes", "target-shape"],
)
def test_labels_that_do_not_fit_the_model(labels, fragments, mlp_program, tally) -> None:
    data = {"input": _digits()["input"], "labels": labels}
    refused(tally, lambda: run_program(mlp_program, data, backend="ideal"), *fragments)


def test_labels_as_indices_floats_bools_or_one_hot_agree(mlp_program: Program, tally) -> None:
    d = _digits(64)
    one_hot = np.eye(10, dtype=np.float32)[d["labels"]]
    accuracies = {}
    for kind, labels in {
        "int": d["labels"],
        "float": d["labels"].astype(np.float32),
        "one-hot": one_hot,
    }.items():
        result = run_program(mlp_program, {"input": d["input"], "labels": labels}, backend="ideal")
        accuracies[kind] = result.accuracy
        tally.count("data")
    logits = run_program(mlp_program, {"input": d["input"]}, backend="ideal").outputs["logits"]
    expected = float((logits.argmax(axis=1) == d["labels"]).mean())
    assert accuracies == {"int": expected, "float": expected, "one-hot": expected}
    ds = match_inputs({"input": d["input"], "labels": d["labels"] % 2 == 1}, mlp_program.inputs)
    assert ds.labels.dtype == np.int64 and set(ds.labels) == {0, 1}
    targets = {"input": d["input"], "labels": np.full(64, 0.5, np.float32)}
    assert run_program(mlp_program, targets, backend="ideal").accuracy is None


# -- values outside the calibrated range -------------------------------------------------------


def _expected_clipped(program: Program, x: np.ndarray) -> int:
    """Inputs of the first analog layer (the data itself for the MLP) outside the range its
    static encoding represents, counted in float64."""
    layer = next(iter(program.layers.values()))
    hi = layer.input_offset + layer.input_scale * program.chip.input_max
    lo = -hi if layer.signed == "split" else layer.input_offset
    x64 = x.astype(np.float64)
    return int(((x64 < lo) | (x64 > hi)).sum())


@pytest.mark.parametrize("backend", ["quantized", "emulator"])
def test_out_of_range_inputs_are_clipped_counted_and_reported(
    backend: str, mlp_program: Program, tally
) -> None:
    d = _digits(64)
    x = d["input"].copy()
    x[:10] *= 3.0  # far beyond the calibration data's 0..1
    x[10:12] = -0.5
    result = run_program(mlp_program, {"input": x, "labels": d["labels"]}, backend=backend)
    tally.count("data")
    first = next(iter(mlp_program.layers))
    assert result.clipped[first].inputs == x.size
    assert result.clipped[first].clipped == _expected_clipped(mlp_program, x) > 0
    total = sum(c.clipped for c in result.clipped.values())
    inputs = sum(c.inputs for c in result.clipped.values())
    assert result.clipped_fraction == pytest.approx(total / inputs)
    [warning] = result.warnings
    assert f"{100 * result.clipped_fraction:.3g} %" in warning
    assert f"most in layer {first}" in warning and "--calib" in warning


def test_the_clipped_inputs_are_the_ones_the_encoding_clips(mlp_program: Program, tally) -> None:
    """An independent check of the count: values the encoding maps to its ends although they
    lie beyond them."""
    x = _digits(64)["input"] * 2.5 - 0.25
    result = run_program(mlp_program, {"input": x}, backend="quantized")
    tally.count("data")
    layer = next(iter(mlp_program.layers.values()))
    top = mlp_program.chip.input_max
    xt = torch.from_numpy(x)
    xq = encode(xt, layer.signed, Encoding(layer.input_scale, layer.input_offset), top)
    at_ends = ((xq == 0) & (xt < 0)) | ((xq == top) & (xt > top * layer.input_scale))
    assert layer.signed == "none" and int(at_ends.sum()) > 0
    assert result.clipped[layer.name].clipped == int(at_ends.sum())


def test_in_range_data_gives_no_warning(mlp_program: Program, tally) -> None:
    result = run_program(mlp_program, _digits(64), backend="quantized")
    tally.count("data")
    first = next(iter(mlp_program.layers))
    assert result.clipped[first].clipped == _expected_clipped(mlp_program, _digits(64)["input"])
    ideal = run_program(mlp_program, _digits(64), backend="ideal")
    assert ideal.clipped_fraction == 0.0 and ideal.warnings == []


# -- hypothesis: arbitrary arrays ---------------------------------------------------------------

DTYPES = st.sampled_from(
    [np.float32, np.float64, np.float16, np.int8, np.int64, np.uint8, np.bool_, np.complex64]
)


@st.composite
def data_dicts(draw: st.DrawFn) -> dict[str, np.ndarray]:
    names = draw(
        st.lists(st.sampled_from(["input", "labels", "x", "other"]), max_size=3, unique=True)
    )
    out = {}
    for name in names:
        n = draw(st.integers(0, 6))
        shape = draw(st.sampled_from([(n, 64), (n,), (n, 63), (n, 8, 8), ()]))
        dtype = draw(DTYPES)
        special = draw(st.sampled_from([None, np.nan, np.inf, -1.0, 40.0, 1e30]))
        a = draw(st.sampled_from([0.0, 0.5, 1.0, 3.0])) * np.ones(shape)
        if special is not None and a.size:
            a.flat[draw(st.integers(0, a.size - 1))] = special
        with np.errstate(invalid="ignore", over="ignore"):
            out[name] = a.astype(dtype)
    return out


@settings(FUZZ, max_examples=300)
@given(arrays=data_dicts())
def test_arbitrary_arrays_are_matched_or_refused(arrays, mlp_program: Program, tally) -> None:
    matched = []
    expect_user_error(
        tally, "data", lambda: matched.append(match_inputs(arrays, mlp_program.inputs))
    )
    if matched:
        expect_user_error(
            tally, "data", lambda: run_program(mlp_program, matched[0], backend="quantized")
        )


# -- the .npz container -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_npz() -> bytes:
    return npz_bytes(_digits(40))


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_corrupted_npz_bytes_are_refused(data, digits_npz: bytes, tmp_path: Path, tally) -> None:
    blob = bytearray(digits_npz)
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 6))):
            pos = data.draw(st.integers(0, len(blob) - 1))
            blob[pos] ^= 1 << data.draw(st.integers(0, 7))
    path = tmp_path / "case.npz"
    path.write_bytes(bytes(blob))
    expect_user_error(tally, "data", lambda: read_npz(path))


def _npy(header: dict, payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


@pytest.mark.parametrize(
    ("members", "fragments"),
    [
        ({"input.npy": np.lib.format.__name__.encode()}, ("not a readable .npz",)),
        ({"input.npy": b"", "labels": b"12"}, ("'labels' is not an .npy array",)),
        (
            {
                "input.npy": _npy(
                    {"descr": "<f4", "fortran_order": False, "shape": (2**40, 64)}, bytes(64)
                )
            },
            ("declares shape (1099511627776, 64)", "holds 64 bytes"),
        ),
        (
            {
                "input.npy": _npy(
                    {"descr": "|O", "fortran_order": False, "shape": (2,)}, b"\x80\x04"
                )
            },
            ("dtype object", "nothing is unpickled"),
        ),
        (
            {
                "input.npy": _npy(
                    {"descr": [("a", "<f4")], "fortran_order": False, "shape": (2,)}, bytes(8)
                )
            },
            ("dtype [('a', '<f4')]",),
        ),
    ],
    ids=["not-npy", "raw-member", "huge-header", "object", "structured"],
)
def test_crafted_npz_members(members, fragments, tmp_path: Path, tally) -> None:
    path = tmp_path / "crafted.npz"
    path.write_bytes(zip_bytes(members, zipfile.ZIP_STORED))
    refused(tally, lambda: read_npz(path), str(path), *fragments)


def test_npz_deflate_bomb_and_lying_sizes(digits_npz: bytes, tmp_path: Path, tally) -> None:
    path = tmp_path / "bomb.npz"
    path.write_bytes(set_declared_size(digits_npz, "input.npy", 2**31))
    refused(tally, lambda: read_npz(path), "claims 2147483648 bytes", "refusing to unpack")
    zeros = npz_bytes({"input": np.zeros((1 << 16, 64), np.float32)}, compressed=True)
    path.write_bytes(zeros)
    assert len(zeros) < (1 << 16) * 64 * 4 // 500
    assert read_npz(path)["input"].shape == (1 << 16, 64)  # a legitimate, well-compressed file
    tally.count("data")


def test_npz_reader_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally) -> None:
    import pickle

    path = tmp_path / "obj.npz"
    buf = io.BytesIO()
    np.savez(buf, input=np.array([{"x": 1}, None], dtype=object))
    path.write_bytes(buf.getvalue())
    calls = []
    monkeypatch.setattr(pickle, "load", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(a))
    refused(tally, lambda: read_npz(path), "dtype object")
    assert calls == []


def test_a_missing_data_file(tmp_path: Path, mlp_program: Program, tally) -> None:
    refused(
        tally, lambda: load_dataset(tmp_path / "nope.npz", mlp_program.inputs), "no such data file"
    )
    refused(tally, lambda: load_dataset(tmp_path, mlp_program.inputs), "no such data file")


# -- through the command line -----------------------------------------------------------------


def _write_npz(path: Path, **arrays: np.ndarray) -> Path:
    path.write_bytes(npz_bytes(arrays))
    return path


def test_cli_run_with_bad_data(programs, tmp_path: Path, tally) -> None:
    d = _digits(20)
    cases = {
        "shape": (_write_npz(tmp_path / "shape.npz", input=d["input"][:, :60]), "expected N x 64"),
        "nan": (
            _write_npz(tmp_path / "nan.npz", input=np.where(d["input"] > 0.9, np.nan, d["input"])),
            "NaN/Inf values",
        ),
        "labels": (
            _write_npz(tmp_path / "labels.npz", input=d["input"], labels=d["labels"][:5]),
            "'labels' has shape 5",
        ),
    }
    for path, fragment in cases.values():
        result = run_cli(
            tally, ["run", programs["digits_mlp"], "--data", path, "--backend", "ideal"]
        )
        assert_cli_error(result, str(path), fragment)


def test_cli_compile_with_bad_calibration_data(tmp_path: Path, tally) -> None:
    calib = _write_npz(tmp_path / "calib.npz", input=np.ones((4, 8, 8), np.float32))
    out = tmp_path / "out.anacc"
    result = run_cli(
        tally, ["compile", DATA.parent / "digits_mlp.onnx", "--calib", calib, "-o", out]
    )
    assert_cli_error(result, "has shape 4 x 8 x 8; expected N x 64")
    assert not out.exists()


def test_cli_run_out_of_range_data_succeeds_with_a_warning(programs, tmp_path: Path, tally) -> None:
    d = _digits(50)
    path = _write_npz(tmp_path / "bright.npz", input=d["input"] * 4, labels=d["labels"])
    result = run_cli(
        tally, ["run", programs["digits_mlp"], "--data", path, "--backend", "quantized"]
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "samples, top-1 accuracy" in result.stdout
