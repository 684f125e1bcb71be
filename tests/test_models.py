"""The shipped reference models and their data files meet the contract in models/README.md."""

from __future__ import annotations

import itertools
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

MODELS = Path(__file__).resolve().parents[1] / "models"
DATA = MODELS / "data"
SPLITS = ("train", "calib", "test")  # every model has these; some also have "val"


@dataclass(frozen=True)
class Shipped:
    name: str
    dataset: str
    sample_shape: tuple[int, ...]
    ops: tuple[str, ...]
    test_accuracy: float  # as stated in models/README.md
    split_sizes: dict[str, int]


SHIPPED = (
    Shipped(
        "digits_mlp",
        "digits",
        (64,),
        ("Gemm", "Relu", "Gemm"),
        0.9778,
        {"train": 1309, "calib": 128, "test": 360},
    ),
    Shipped(
        "digits_cnn",
        "digits_img",
        (1, 8, 8),
        (
            "Conv",
            "BatchNormalization",
            "Relu",
            "Conv",
            "BatchNormalization",
            "Relu",
            "MaxPool",
            "Flatten",
            "Gemm",
        ),
        0.9944,
        {"train": 1309, "calib": 128, "test": 360},
    ),
    Shipped(
        "mnist1d_mlp",
        "mnist1d",
        (40,),
        ("Gemm", "BatchNormalization", "Relu", "Gemm", "BatchNormalization", "Relu", "Gemm"),
        0.8600,
        {"train": 11744, "calib": 256, "test": 2000},
    ),
    Shipped(
        "bss2_mnist",
        "mnist",
        (1, 28, 28),
        ("Conv", "Relu", "Flatten", "Gemm", "Relu", "Gemm"),
        0.9720,
        {"train": 3244, "val": 500, "calib": 256, "test": 1000},
    ),
    Shipped(
        "kws_lstm",
        "kws",
        (40, 16),
        (
            # zero initial states shaped from the batch size
            "Shape",
            "Constant",
            "Gather",
            "Constant",
            "Constant",
            "Unsqueeze",
            "Constant",
            "Concat",
            "ConstantOfShape",
            # batch first -> time first, the LSTM, the last time step, the classifier
            "Transpose",
            "LSTM",
            "Constant",
            "Squeeze",
            "Transpose",
            "Constant",
            "Gather",
            "Gemm",
        ),
        0.9450,
        {"train": 3744, "val": 500, "calib": 256, "test": 1000},
    ),
)
IDS = [s.name for s in SHIPPED]


def load_split(dataset: str, split: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{dataset}_{split}.npz") as f:
        return {key: f[key] for key in f.files}


def logits(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


@pytest.mark.parametrize("model", SHIPPED, ids=IDS)
def test_onnx_file_is_single_opset17_with_dynamic_batch_input(model: Shipped) -> None:
    path = MODELS / f"{model.name}.onnx"
    assert path.stat().st_size < 1_000_000
    proto = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in proto.graph.initializer)
    assert tuple(node.op_type for node in proto.graph.node) == model.ops

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    assert (inp.name, inp.type, out.name, out.type) == (
        "input",
        "tensor(float)",
        "logits",
        "tensor(float)",
    )
    assert isinstance(inp.shape[0], str)
    assert tuple(inp.shape[1:]) == model.sample_shape
    assert out.shape[1] == 10


@pytest.mark.parametrize("model", SHIPPED, ids=IDS)
def test_batch_size_does_not_change_logits(model: Shipped) -> None:
    path = MODELS / f"{model.name}.onnx"
    x = load_split(model.dataset, "calib")["input"][:9]
    together = logits(path, x)
    one_by_one = np.concatenate([logits(path, x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(one_by_one, together, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", SHIPPED, ids=IDS)
def test_test_accuracy_is_the_documented_one(model: Shipped) -> None:
    test = load_split(model.dataset, "test")
    predicted = logits(MODELS / f"{model.name}.onnx", test["input"]).argmax(axis=1)
    assert abs(np.mean(predicted == test["labels"]) - model.test_accuracy) <= 0.005


@pytest.mark.parametrize("model", SHIPPED, ids=IDS)
def test_npz_splits_hold_float32_input_and_int64_labels(model: Shipped) -> None:
    assert set(SPLITS) <= set(model.split_sizes) <= {*SPLITS, "val"}
    for split, size in model.split_sizes.items():
        assert (DATA / f"{model.dataset}_{split}.npz").stat().st_size < 2_000_000
        arrays = load_split(model.dataset, split)
        assert sorted(arrays) == ["input", "labels"]
        assert arrays["input"].dtype == np.float32
        assert arrays["input"].shape == (size, *model.sample_shape)
        assert arrays["labels"].dtype == np.int64
        assert arrays["labels"].shape == (size,)
        assert set(np.unique(arrays["labels"])) <= set(range(10))


@pytest.mark.parametrize("model", SHIPPED, ids=IDS)
def test_splits_share_no_sample(model: Shipped) -> None:
    rows = {
        split: {row.tobytes() for row in load_split(model.dataset, split)["input"]}
        for split in model.split_sizes
    }
    for split, size in model.split_sizes.items():
        assert len(rows[split]) == size
    for a, b in itertools.combinations(model.split_sizes, 2):
        assert not rows[a] & rows[b], (a, b)


def test_digits_inputs_are_pixels_over_16_and_mnist1d_inputs_are_signed() -> None:
    for split in SPLITS:
        flat = load_split("digits", split)
        image = load_split("digits_img", split)
        np.testing.assert_array_equal(
            image["input"].reshape(len(image["input"]), -1), flat["input"]
        )
        np.testing.assert_array_equal(image["labels"], flat["labels"])
        assert flat["input"].min() >= 0.0 and flat["input"].max() <= 1.0
        np.testing.assert_array_equal(flat["input"] * 16, np.round(flat["input"] * 16))
    assert load_split("mnist1d", "train")["input"].min() < 0.0


def test_mnist_inputs_are_pixels_over_255_and_kws_inputs_a_signed_sixteenth_grid() -> None:
    for split in ("train", "val", "calib", "test"):
        pixels = load_split("mnist", split)["input"].astype(np.float64) * 255
        assert pixels.min() == 0.0 and pixels.max() == 255.0
        np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-4)
        features = load_split("kws", split)["input"]
        np.testing.assert_array_equal(features * 16, np.round(features * 16))
        assert features.min() < 0.0 < features.max()


def test_digits_mlp_matches_a_float64_numpy_forward_pass() -> None:
    path = MODELS / "digits_mlp.onnx"
    weights = [
        numpy_helper.to_array(t).astype(np.float64) for t in onnx.load(str(path)).graph.initializer
    ]
    w1, b1, w2, b2 = weights
    x = load_split("digits", "test")["input"]
    expected = np.maximum(x.astype(np.float64) @ w1.T + b1, 0.0) @ w2.T + b2
    np.testing.assert_allclose(logits(path, x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_digits_mlp_script_reproduces_the_shipped_model(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    subprocess.run(
        [sys.executable, str(MODELS / "train_digits_mlp.py"), "--out-dir", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for split in SPLITS:
        with np.load(tmp_path / "data" / f"digits_{split}.npz") as fresh:
            shipped = load_split("digits", split)
            np.testing.assert_array_equal(fresh["input"], shipped["input"])
            np.testing.assert_array_equal(fresh["labels"], shipped["labels"])
    x = load_split("digits", "test")["input"]
    np.testing.assert_array_equal(
        logits(tmp_path / "digits_mlp.onnx", x).argmax(axis=1),
        logits(MODELS / "digits_mlp.onnx", x).argmax(axis=1),
    )
