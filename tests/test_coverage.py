"""Real architectures compile whole: the zoo's small models (a ViT, nn.TransformerEncoder, LSTM,
GRU and RNN classifiers reading the last time step, MobileNetV3-, ConvNeXt- and ShuffleNet-
style blocks, a model exported with a fixed batch of 1), exported with both torch exporters.

Each compiles; the ``ideal`` backend equals onnxruntime within 1e-4 of the output scale; the
emulator runs; the report shows the share of the multiply-accumulates on the array; fine-
tuning runs on the transformer and the LSTM.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from anacc.compiler.cost import program_cost
from anacc.compiler.frontend import load_model
from anacc.compiler.inspect import inspect_graph
from anacc.compiler.partition import summary
from anacc.runtime.report import vectors_per_sample
from zoo_util import load_zoo

import anacc

zoo = load_zoo()
TEST_FAMILY = [name for name, entry in zoo.ZOO.items() if entry.family == "test"]
TOLERANCE = 1e-4
# the models whose weights all map: every MatMul/Gemm/Conv/LSTM/GRU/RNN has a constant weight
FULLY_ANALOG = {"lstm_classifier", "gru_classifier", "rnn_classifier", "fixed_batch_cnn"}
EXPORTERS = [
    "legacy",
    pytest.param("dynamo", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache: dict[tuple[str, str], Path] = {}

    def get(name: str, exporter: str) -> Path:
        key = (name, exporter)
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"{name}_{exporter}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[key] = zoo.export(name, folder / f"{name}.onnx", exporter=exporter)
        return cache[key]

    return get


def _batches(name: str) -> tuple[int, ...]:
    fixed = zoo.ZOO[name].fixed_batch
    return (fixed,) if fixed else (1, 3)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", TEST_FAMILY)
def test_zoo_model_compiles_runs_and_ideal_equals_onnxruntime(exported, name, exporter):
    path = exported(name, exporter)
    calib_batch = zoo.ZOO[name].fixed_batch or 16
    calib = zoo.example_input(name, calib_batch, seed=7)
    program = anacc.compile(path, calib={zoo.INPUT_NAME: calib})
    assert program.layers, "the model's weights map onto the array"
    ort_session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in _batches(name):
        x = zoo.example_input(name, batch, seed=batch)
        [want] = ort_session.run(None, {zoo.INPUT_NAME: x})
        got = program.run({zoo.INPUT_NAME: x}, backend="ideal")
        [value] = got.values()
        assert value.shape == want.shape
        scale = float(np.abs(want).max())
        assert float(np.abs(value - want).max()) <= TOLERANCE * scale
        emulated = next(iter(program.run({zoo.INPUT_NAME: x}, backend="emulator").values()))
        assert emulated.shape == want.shape and np.isfinite(emulated).all()
        # the emulator computes the model, with the chip's errors: far closer than chance
        assert np.corrcoef(emulated.ravel(), want.ravel())[0, 1] > 0.5 or want.size < 4
    part = summary(program.partition)
    assert part["nodes"]["analog"] >= 1 and part["analog_share"] > 0.5  # type: ignore[index]
    if name in FULLY_ANALOG:
        assert part["analog_share"] == 1.0
    cost = program_cost(program, vectors_per_sample(program))
    assert cost.runs_per_sample >= cost.lower_bound_runs >= len(program.layers) > 0


@pytest.mark.parametrize("name", ["vit_tiny", "transformer_encoder"])
def test_attention_products_stay_digital_and_the_projections_map(exported, name):
    report = inspect_graph(load_model(exported(name, "legacy")))
    reasons = {(r.op, r.placement, r.reason) for r in report.rows}
    assert ("MatMul", "digital", "activation x activation") in reasons
    assert any(op in ("MatMul", "Gemm") and where == "analog" for op, where, _ in reasons)
    assert 0.5 < report.totals.analog_share < 1.0


def test_lstm_weights_are_unrolled_onto_the_array(exported):
    program = anacc.compile(exported("lstm_classifier", "legacy"))
    steps = zoo.ZOO["lstm_classifier"].input_shape[0]
    uses: dict[str, int] = {}
    for step in program.analog_steps:
        uses[step.layer] = uses.get(step.layer, 0) + 1
    # per layer and direction: the input product once over all time steps, the recurrent
    # product at every step (the exporter passes the initial states as inputs)
    recurrent = [n for n, k in uses.items() if "/R" in n]
    assert len(recurrent) == 4  # two layers, two directions
    assert all(uses[n] == steps for n in recurrent)
    assert all(uses[n] == 1 for n in uses if "/W" in n)


@pytest.mark.parametrize("name", ["transformer_encoder", "lstm_classifier"])
def test_finetuning_runs_on_the_transformer_and_the_lstm(exported, name):
    path = exported(name, "legacy")
    x = zoo.example_input(name, 96, seed=3)
    program = anacc.compile(path, calib={zoo.INPUT_NAME: x[:32]})
    logits = program.run({zoo.INPUT_NAME: x}, backend="ideal")["logits"]
    labels = logits.argmax(1)
    tuned = program.finetune({zoo.INPUT_NAME: x, "labels": labels}, epochs=1, batch_size=32)
    changed = [
        n
        for n in program.layers
        if not np.array_equal(tuned.layers[n].analog.weight, program.layers[n].analog.weight)
    ]
    assert len(changed) >= len(program.layers) - 2  # layers no gradient reaches keep theirs
    out = next(iter(tuned.run({zoo.INPUT_NAME: x}, backend="ideal").values()))
    assert np.isfinite(out).all()


def test_a_fixed_batch_of_one_runs_as_declared_and_sample_by_sample(exported):
    path = exported("fixed_batch_cnn", "legacy")
    program = anacc.compile(path)
    assert program.inputs[0].shape[0] == 1 and not program.batched
    x = zoo.example_input("fixed_batch_cnn", 5, seed=1)  # five samples, the leading 1 left out
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = np.concatenate([sess.run(None, {zoo.INPUT_NAME: x[i : i + 1]})[0] for i in range(5)])
    got = program.run({zoo.INPUT_NAME: x}, backend="ideal")["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    one = program.run({zoo.INPUT_NAME: x[:1]}, backend="ideal")["logits"]  # exactly as declared
    assert one.shape == want[:1].shape
    stacked = program.run({zoo.INPUT_NAME: x[:, None]}, backend="ideal")["logits"]  # extra axis
    assert stacked.shape == (5, *want[:1].shape)
