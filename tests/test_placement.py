"""Placement on real programs: copies, both halves per run, packing, several chips.

The runs are counted by hand from the layer shapes; copies must reproduce the single-copy
result exactly on a chip without fixed pattern or noise, and differ on a real chip instance
(each copy sits on its own synapses and neurons).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from anacc.compiler.chip import load_chip
from anacc.compiler.cost import program_cost
from anacc.runtime.analog import analog_forward
from anacc.runtime.backends import EmulatorBackend, get_backend
from anacc.runtime.report import vectors_per_sample
from torch import nn

import anacc

MODELS = Path(__file__).resolve().parents[1] / "models"


def _split(name: str) -> dict[str, np.ndarray]:
    with np.load(MODELS / "data" / f"{name}.npz") as d:
        return {k: d[k] for k in d.files}


def bss2_mnist_net() -> nn.Module:
    """The published BSS-2 MNIST network: conv 1->20 (10x10, stride 5, pad 1), 500-128-10."""
    return nn.Sequential(
        nn.Conv2d(1, 20, 10, stride=5, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(500, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def _export(module: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    torch.manual_seed(0)
    module.eval()
    torch.onnx.export(
        module,
        (torch.randn(1, *shape),),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "N"}},
    )
    return path


@pytest.fixture(scope="module")
def mnist_net(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return _export(bss2_mnist_net(), (1, 28, 28), tmp_path_factory.mktemp("mnist") / "m.onnx")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mnist_network_needs_16_runs_per_sample(mnist_net) -> None:
    x = np.random.default_rng(0).uniform(0, 1, (32, 1, 28, 28)).astype(np.float32)
    program = anacc.compile(mnist_net, calib={"input": x})
    cost = program_cost(program, vectors_per_sample(program))
    runs = {c.name: c.runs_per_sample for c in cost.layers}
    # conv: 25 positions, one copy of 100 rows per half -> 13 runs; 500 -> 128 in 4 chunks of
    # 125 rows, two per run -> 2; 128 -> 10 -> 1. anacc 0.1 mapped it in 30 runs.
    assert sorted(runs.values()) == [1, 2, 13]
    assert cost.runs_per_sample == 16 == cost.lower_bound_runs
    naive = anacc.compile(mnist_net, calib={"input": x}, placement="naive")
    assert program_cost(naive, vectors_per_sample(naive)).runs_per_sample == 30


def test_digits_cnn_fits_one_load_near_the_bound_and_keeps_its_accuracy() -> None:
    program = anacc.compile(MODELS / "digits_cnn.onnx", calib=_split("digits_img_calib"))
    cost = program_cost(program, vectors_per_sample(program))
    assert cost.loads == 1 and cost.runs_per_sample <= 85
    assert cost.lower_bound_runs == 69
    first = cost.layers[0]
    assert first.copies > 1  # 9 x 16 blocks side by side: 64 positions in 3 runs
    test = _split("digits_img_test")
    fp32 = program.evaluate(test, backend="ideal").accuracy
    accuracies = [program.evaluate(test, backend="emulator", seed=s).accuracy for s in range(3)]
    assert np.mean(accuracies) >= fp32 - 0.01


def _perfect(chip):
    """The chip without fixed pattern, noise or saturation: only the arithmetic."""
    analog = dataclasses.replace(
        chip.analog,
        reference_noise_sigma_lsb=0.0,
        neuron_gain_sigma=0.0,
        neuron_offset_sigma_lsb=0.0,
        synapse_gain_sigma=0.0,
        spatial_gain_gradient=0.0,
        saturation_point_sigma=0.0,
        synin_linear_load=1e12,
    )
    profiles = {n: dataclasses.replace(p, analog=analog) for n, p in chip.profiles.items()}
    return dataclasses.replace(chip, analog=analog, profiles=profiles)


def test_copies_reproduce_the_single_copy_exactly_and_sit_on_their_own_synapses() -> None:
    calib = _split("digits_img_calib")
    packed = anacc.compile(MODELS / "digits_cnn.onnx", calib=calib)
    single = anacc.compile(MODELS / "digits_cnn.onnx", calib=calib, placement="naive")
    name = next(iter(packed.layers))
    layer, alone = packed.layers[name], single.layers[name]
    assert layer.analog.copies > 1 and alone.analog.copies == 1
    np.testing.assert_array_equal(layer.analog.weight_q, alone.analog.weight_q)
    x = torch.from_numpy(calib["input"][:8])
    chip = load_chip("bss2")
    perfect = _perfect(chip)
    outs = [
        analog_forward(lay, x, EmulatorBackend(perfect, perfect.profile("default"), seed=1))
        for lay in (layer, alone)
    ]
    assert torch.equal(outs[0], outs[1])
    # and equal the integer arithmetic up to the rounding of a tie (one ADC step)
    quantized = get_backend("quantized", chip, chip.profile("default"))
    step = (
        layer.weight_scale
        * layer.input_scale
        / (chip.profile("default").gain_per_send * layer.analog.num_sends)
    )
    diff = (analog_forward(layer, x, quantized) - outs[0]).abs()
    assert (diff <= torch.from_numpy(step).view(1, -1, 1, 1) * 1.001).all()
    assert (diff > 1e-6).float().mean() < 0.01
    # on a real chip instance the copies are other synapses and neurons than the single copy
    real = [
        analog_forward(lay, x, EmulatorBackend(chip, chip.profile("default"), seed=1))
        for lay in (layer, alone)
    ]
    assert not torch.equal(real[0], real[1])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_two_chips_pipeline_the_layers_and_energy_uses_one(mnist_net) -> None:
    x = np.random.default_rng(1).uniform(0, 1, (32, 1, 28, 28)).astype(np.float32)
    one = anacc.compile(mnist_net, calib={"input": x})
    two = anacc.compile(mnist_net, calib={"input": x}, chips=2)
    frugal = anacc.compile(mnist_net, calib={"input": x}, chips=2, placement="energy")
    costs = [program_cost(p, vectors_per_sample(p), batch_size=64) for p in (one, two, frugal)]
    # the model takes two loads: one chip rewrites them every batch, two chips keep one each
    assert costs[0].loads == 2 and costs[0].weight_write_us_per_sample > 0
    assert set(costs[1].load_chip) == {0, 1} and costs[1].weight_write_us_per_sample == 0
    assert costs[1].samples_per_second > costs[0].samples_per_second
    assert costs[1].period_us < costs[1].time_us_per_sample  # pipelined: period < latency
    # on two chips, a chip that waits for the other idles at idle power
    busy = costs[1].chip_busy_us
    chip = one.chip
    expected = sum(
        chip.chip_power_w * b + chip.idle_power_w * (costs[1].period_us - b) for b in busy
    )
    assert costs[1].energy_uj_per_sample == pytest.approx(expected)
    assert costs[2].loads == costs[0].loads


def test_finetuned_copies_share_one_weight_and_export_one(tmp_path: Path) -> None:
    import onnx
    from anacc.compiler.export import to_onnx

    program = anacc.compile(MODELS / "digits_cnn.onnx", calib=_split("digits_img_calib"))
    train = _split("digits_img_train")
    tuned = program.finetune({k: v[:128] for k, v in train.items()}, epochs=1)
    name = next(iter(tuned.layers))
    assert tuned.layers[name].analog.copies == program.layers[name].analog.copies > 1
    model = to_onnx(tuned)
    onnx.checker.check_model(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2  # one weight per layer, however many copies
