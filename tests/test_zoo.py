"""The model zoo (models/zoo): seeded builders, published sizes, and exports onnxruntime runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from zoo_util import load_zoo

zoo = load_zoo()
TEST_FAMILY = [name for name, entry in zoo.ZOO.items() if entry.family == "test"]
TOLERANCE = 1e-4
# Parameter counts of the papers' (or their reference implementations') 1000-class models;
# RegNetX-400MF and GoogLeNet as the papers' tables give them, rounded.
PUBLISHED_PARAMS = {
    "resnet18": 11_689_512,
    "mobilenet_v2": 3_504_872,
    "efficientnet_b0": 5_288_548,
    "densenet121": 7_978_856,
    "regnet_x_400mf": 5_200_000,
    "googlenet": 6_800_000,
    "squeezenet1_1": 1_235_496,
    "m5": 500_000,
    "kws_mlp": 115_068,
}
# M5's published count is rounded to one digit; everything else must be within a few percent.
PARAM_TOLERANCE = {"m5": 0.15}


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def max_relative_error(path: Path, model: torch.nn.Module, x: np.ndarray) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {zoo.INPUT_NAME: x})
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_every_entry_names_itself_and_a_known_family():
    for name, entry in zoo.ZOO.items():
        assert entry.name == name
        assert entry.family in ("test", "arch")
        assert entry.description


@pytest.mark.parametrize("name", TEST_FAMILY)
def test_test_family_models_are_small(name):
    assert num_params(zoo.ZOO[name].architecture()) < 1_000_000


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_arch_parameter_count_matches_the_published_one(name):
    count = num_params(zoo.ZOO[name].architecture())
    published = PUBLISHED_PARAMS[name]
    assert abs(count - published) <= PARAM_TOLERANCE.get(name, 0.04) * published, count


def test_weights_are_a_function_of_the_seed():
    entry = zoo.ZOO["fixed_batch_cnn"]
    first, again, other = entry.build(seed=5), entry.build(seed=5), entry.build(seed=6)
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    assert not torch.equal(first[0].weight, other[0].weight)
    assert not first.training


def test_batch_norm_statistics_are_measured():
    model = zoo.ZOO["fixed_batch_cnn"].build()
    norm = model[1]
    assert not torch.allclose(norm.running_mean, torch.zeros_like(norm.running_mean))
    assert not torch.allclose(norm.running_var, torch.ones_like(norm.running_var))


def test_example_input_follows_the_entry_and_the_seed():
    x = zoo.example_input("lstm_classifier", 3, seed=2)
    assert x.shape == (3, *zoo.ZOO["lstm_classifier"].input_shape)
    assert x.dtype == np.float32
    assert np.array_equal(x, zoo.example_input("lstm_classifier", 3, seed=2))


@pytest.mark.parametrize("name", TEST_FAMILY)
def test_legacy_export_matches_torch(name, tmp_path):
    path = zoo.export(name, tmp_path / f"{name}.onnx", exporter="legacy")
    model = zoo.ZOO[name].build()
    batches = (1, 3) if zoo.ZOO[name].fixed_batch is None else (zoo.ZOO[name].fixed_batch,)
    for batch in batches:
        x = zoo.example_input(name, batch, seed=1)
        assert max_relative_error(path, model, x) < TOLERANCE


def test_batch_axis_is_symbolic_unless_fixed(tmp_path):
    dynamic = onnx.load(zoo.export("gru_classifier", tmp_path / "gru.onnx"))
    fixed = onnx.load(zoo.export("fixed_batch_cnn", tmp_path / "cnn.onnx"))
    assert dynamic.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_smaller_input_shape_exports(tmp_path):
    shape = (3, 64, 64)
    path = zoo.export("squeezenet1_1", tmp_path / "squeezenet.onnx", input_shape=shape)
    model = zoo.ZOO["squeezenet1_1"].build(input_shape=shape)
    x = zoo.example_input("squeezenet1_1", 2, seed=1, input_shape=shape)
    assert max_relative_error(path, model, x) < TOLERANCE


@pytest.mark.slow
def test_dynamo_export_matches_torch_with_external_weights(tmp_path):
    path = zoo.export("lstm_classifier", tmp_path / "lstm.onnx", exporter="dynamo")
    assert (tmp_path / "lstm.onnx.data").exists()
    model = zoo.ZOO["lstm_classifier"].build()
    for batch in (1, 3):
        x = zoo.example_input("lstm_classifier", batch, seed=1)
        assert max_relative_error(path, model, x) < TOLERANCE


def test_unknown_name_is_a_value_error():
    with pytest.raises(ValueError, match="resnet18"):
        zoo.example_input("resnet19", 1)
