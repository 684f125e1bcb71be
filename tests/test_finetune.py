"""Hardware-in-the-loop fine-tuning and export back to ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from anacc.compiler.datafile import match_inputs
from anacc.compiler.export import to_onnx
from anacc.compiler.program import Program
from anacc.compiler.program_io import program_to_bytes
from anacc.passes.finetune import FinetuneOptions, finetune
from anacc.passes.finetune_sends import rederive_scales, search_sends
from anacc.passes.surrogate import TrainingGraph
from anacc.runtime.backends import get_backend
from anacc.runtime.characterize import measure_gain
from anacc.runtime.session import run_program
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import anacc
from anacc.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def split(dataset: str, name: str, n: int | None = None) -> dict[str, np.ndarray]:
    with np.load(MODELS / "data" / f"{dataset}_{name}.npz") as d:
        return {k: d[k][:n] for k in d.files}


def one_layer_model(path: Path, n_in: int = 20, n_out: int = 6) -> Path:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((n_out, n_in)).astype(np.float32) * 0.3
    b = rng.standard_normal(n_out).astype(np.float32) * 0.1
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
        "one_layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_surrogate_gradient_matches_finite_differences_of_the_ideal_linear_model(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (32, 20)).astype(np.float32)
    target = rng.standard_normal((32, 6)).astype(np.float32)
    program = anacc.compile(one_layer_model(tmp_path / "m.onnx"), calib={"x": x})
    chip = program.chip
    backend = get_backend("emulator", chip, chip.profile(program.profile), seed=0)
    ratio = measure_gain(backend) / backend.gain_per_send
    model = TrainingGraph(program, backend, ratio, per_column=True)
    out = model({"x": torch.from_numpy(x)})
    loss = torch.nn.functional.mse_loss(out, torch.from_numpy(target), reduction="sum")
    loss.backward()
    layer = next(iter(model.layers.values()))
    grad_w = layer.weight.grad.numpy().astype(np.float64)
    grad_b = layer.bias.grad.numpy().astype(np.float64)

    # the upstream gradient is taken at the chip's (noisy) output; the linear model's own
    # derivative comes from central differences of y(W) = ratio * x @ W + b in float64
    dl_dy = 2.0 * (out.detach().numpy().astype(np.float64) - target)
    w0 = layer.weight.detach().numpy().astype(np.float64)
    x64 = x.astype(np.float64)

    def f(w: np.ndarray) -> float:
        return float((dl_dy * (ratio * x64 @ w)).sum())

    h = 1e-3
    for i, j in [(0, 0), (3, 2), (19, 5), (7, 1)]:
        dw = np.zeros_like(w0)
        dw[i, j] = h
        numeric = (f(w0 + dw) - f(w0 - dw)) / (2 * h)
        assert grad_w[i, j] == pytest.approx(numeric, rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(grad_b, dl_dy.sum(axis=0), rtol=1e-4)
    assert 0.9 < ratio < 1.1  # the emulator's measured gain is close to its nominal gain


def grouped_conv_model(path: Path) -> Path:
    """Conv (2 groups, stride 2, asymmetric pads) -> Relu -> Conv 1-D-like (1 x 3 kernel)."""
    rng = np.random.default_rng(4)
    w1 = (rng.standard_normal((6, 2, 3, 3)) * 0.4).astype(np.float32)
    b1 = (rng.standard_normal(6) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((3, 6, 1, 3)) * 0.4).astype(np.float32)
    nodes = [
        helper.make_node(
            "Conv", ["x", "w1", "b1"], ["h"], group=2, strides=[2, 2], pads=[1, 0, 0, 1]
        ),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], pads=[0, 1, 0, 1], dilations=[1, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "grouped",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 2])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_conv_surrogate_gradients_equal_the_linear_surrogate_on_im2col_rows(tmp_path):
    """The conv layers' backward (convolutions of the padded input) against autograd through
    ratio * im2col(x) @ W_q + b, the linear surrogate of the dense layers, in float64."""
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (8, 4, 9, 9)).astype(np.float32)
    program = anacc.compile(grouped_conv_model(tmp_path / "g.onnx"), calib={"x": x})
    chip = program.chip
    backend = get_backend("emulator", chip, chip.profile(program.profile), seed=0)
    model = TrainingGraph(program, backend, 0.9, per_column=True)
    step = program.analog_steps[0]
    first = model.layers[step.layer]
    xt = torch.from_numpy(x).requires_grad_(True)
    model.requantize()
    h = model.analog(step, first.layer, xt)
    upstream = torch.from_numpy(rng.standard_normal(h.shape))
    (h * upstream.float()).sum().backward()

    conv = first.layer.conv
    w_q = first.layer.analog.weight_q * first.layer.weight_scale
    x64 = torch.from_numpy(x).double().requires_grad_(True)
    w64 = torch.from_numpy(w_q).double().requires_grad_(True)
    b64 = first.bias.detach().double().requires_grad_(True)
    rows = 0.9 * conv.im2col(x64) @ w64 + b64
    y = conv.col2im(rows, 8, conv.output_shape((9, 9)))
    assert y.shape == h.shape
    (y * upstream).sum().backward()
    # two groups: input rows 0-17 feed output columns 0-2, rows 18-35 columns 3-5; the
    # reference's gradient off those blocks belongs to weights that do not exist
    blocks = np.zeros((36, 6), dtype=bool)
    blocks[:18, :3] = blocks[18:, 3:] = True
    np.testing.assert_array_equal(first.layer.analog.weight != 0, blocks)
    grad_w = first.weight.grad.numpy()
    np.testing.assert_allclose(grad_w[blocks], w64.grad.numpy()[blocks], rtol=1e-4, atol=1e-4)
    assert (grad_w[~blocks] == 0).all()
    for got, ref in ((first.bias.grad, b64.grad), (xt.grad, x64.grad)):
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)


def exact_weights(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Float weights ``(rows, cols)`` that 6-bit quantization per row keeps exactly: integers
    times a power of two, with +-63 in every row (each row is one output column of the chip)."""
    k = rng.integers(-63, 64, (rows, cols))
    k[np.arange(rows), rng.integers(0, cols, rows)] = 63
    return (k * 2.0 ** -rng.integers(5, 8, (rows, 1))).astype(np.float32)


def lstm_model(path: Path, steps: int, n_in: int, hidden: int) -> Path:
    rng = np.random.default_rng(4)
    w = exact_weights(rng, 4 * hidden, n_in)[None]
    r = exact_weights(rng, 4 * hidden, hidden)[None]
    b = (rng.standard_normal((1, 8 * hidden)) * 0.1).astype(np.float32)
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], hidden_size=hidden, layout=1)
    graph = helper.make_graph(
        [node],
        "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", steps, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", steps, 1, hidden])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (b, "B"))],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)
    return path


def test_unrolled_lstm_gradients_equal_backpropagation_through_time_in_float64(tmp_path):
    """Fine-tuning's backward through a lowered LSTM (the ideal backend, weights that 6-bit
    quantization keeps) against the LSTM's equations differentiated by autograd in float64;
    each time step's slice of the input projection comes from one unbind (one backward
    node for the whole sequence, not one gradient the size of the sequence per step)."""
    steps, batch, n_in, hidden = 6, 5, 3, 4
    path = lstm_model(tmp_path / "lstm.onnx", steps, n_in, hidden)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((batch, steps, n_in)).astype(np.float32)
    program = anacc.compile(path)
    backend = get_backend("ideal", program.chip, program.chip.profile(program.profile))
    model = TrainingGraph(program, backend, 1.0, per_column=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    y = model({"x": xt})
    upstream = rng.standard_normal(y.shape)
    (y * torch.from_numpy(upstream).float()).sum().backward()
    kinds, todo, seen = set(), [y.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        kinds.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    assert "UnbindBackward0" in kinds and "IndexSelectBackward0" not in kinds

    m = onnx.load(path)
    init = {
        t.name: torch.tensor(numpy_helper.to_array(t), dtype=torch.float64)
        for t in m.graph.initializer
    }
    w = init["W"][0].requires_grad_(True)
    r = init["R"][0].requires_grad_(True)
    bias = init["B"][0, : 4 * hidden] + init["B"][0, 4 * hidden :]
    x64 = torch.from_numpy(x).double().requires_grad_(True)
    h = c = torch.zeros(batch, hidden, dtype=torch.float64)
    outs = []
    for t in range(steps):
        i, o, f, g = (x64[:, t] @ w.T + h @ r.T + bias).split(hidden, dim=1)  # ONNX order: iofc
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    ref = torch.stack(outs, dim=1)[:, :, None]
    np.testing.assert_allclose(y.detach().numpy(), ref.detach().numpy(), atol=1e-5)
    (ref * torch.from_numpy(upstream)).sum().backward()
    layers = {name.rsplit("/", 1)[-1]: tl for name, tl in model.layers.items()}
    assert set(layers) == {"W", "R"}
    for got, want in ((layers["W"].weight.grad, w.grad), (layers["R"].weight.grad, r.grad)):
        np.testing.assert_allclose(got.numpy(), want.T.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(xt.grad.numpy(), x64.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_finetuning_keeps_the_zero_blocks_of_grouped_convolutions(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (96, 4, 9, 9)).astype(np.float32)
    program = anacc.compile(grouped_conv_model(tmp_path / "g.onnx"), calib={"x": x[:32]})
    target = rng.standard_normal((96, 3, 4, 2)).astype(np.float32)
    train = match_inputs({"x": x, "labels": target}, program.inputs)
    tuned = finetune(program, train, None, FinetuneOptions(epochs=2, lr=1e-2, seed=0)).program
    name = next(iter(program.layers))
    before, after = program.layers[name].analog, tuned.layers[name].analog
    assert not np.array_equal(before.weight, after.weight)
    np.testing.assert_array_equal(after.weight[before.weight == 0], 0)
    np.testing.assert_array_equal(after.weight_q[before.weight == 0], 0)
    sess = ort.InferenceSession(
        to_onnx(tuned).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    ref = sess.run(None, {"x": x})[0]
    got = run_program(tuned, {"x": x}, backend="ideal").outputs["y"]
    assert np.abs(ref - got).max() <= 1e-4 * np.abs(ref).max()


def test_a_few_finetuning_steps_lower_the_training_loss():
    program = anacc.compile(MODELS / "mnist1d_mlp.onnx", calib=split("mnist1d", "calib"))
    train = match_inputs(split("mnist1d", "train", 1024), program.inputs)

    def loss(prog: Program) -> float:
        logits = run_program(prog, train, backend="emulator", seed=0).outputs["logits"]
        return float(
            torch.nn.functional.cross_entropy(
                torch.from_numpy(logits), torch.from_numpy(train.labels)
            )
        )

    result = finetune(program, train, None, FinetuneOptions(epochs=2, lr=2e-3, seed=0))
    assert result.best_epoch >= 1
    before = loss(program)
    assert loss(result.program) < before
    # the loss of one epoch against the next varies with the noise draws; both epochs train
    # below the loss the program started from
    assert max(r.train_loss for r in result.history) < before


def test_finetuning_is_deterministic_with_a_seed():
    program = anacc.compile(MODELS / "digits_mlp.onnx", calib=split("digits", "calib"))
    train = match_inputs(split("digits", "train", 256), program.inputs)
    opts = FinetuneOptions(epochs=1, seed=7)
    a = finetune(program, train, None, opts).program
    b = finetune(program, train, None, opts).program
    assert program_to_bytes(a) == program_to_bytes(b)
    assert a.layers.keys() == program.layers.keys()
    for name, layer in a.layers.items():  # the mapping is kept, the weights change
        assert layer.analog.tiles == program.layers[name].analog.tiles
        np.testing.assert_array_equal(layer.analog.row_slot, program.layers[name].analog.row_slot)
    assert any(
        not np.array_equal(layer.analog.weight, program.layers[n].analog.weight)
        for n, layer in a.layers.items()
    )


@pytest.mark.parametrize(
    "name,dataset",
    [("digits_mlp", "digits"), ("digits_cnn", "digits_img"), ("mnist1d_mlp", "mnist1d")],
)
def test_exported_onnx_equals_the_program_on_the_ideal_backend(name, dataset):
    program = anacc.compile(MODELS / f"{name}.onnx", calib=split(dataset, "calib"))
    train = match_inputs(split(dataset, "train", 128), program.inputs)
    tuned = finetune(program, train, None, FinetuneOptions(epochs=1, seed=0)).program
    test = split(dataset, "test")
    sess = ort.InferenceSession(
        to_onnx(tuned).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    ref = sess.run(None, {"input": test["input"]})[0]
    got = run_program(tuned, test, backend="ideal").outputs["logits"]
    assert np.abs(ref - got).max() <= 1e-4 * np.abs(ref).max()


def test_finetune_and_export_commands(tmp_path):
    runner = CliRunner()
    prog = tmp_path / "m.anacc"
    r = runner.invoke(
        main,
        [
            "compile",
            str(MODELS / "digits_mlp.onnx"),
            "--calib",
            str(MODELS / "data" / "digits_calib.npz"),
            "-o",
            str(prog),
        ],
    )
    assert r.exit_code == 0, r.output
    tuned = tmp_path / "tuned.anacc"
    r = runner.invoke(
        main,
        [
            "finetune",
            str(prog),
            "--data",
            str(MODELS / "data" / "digits_calib.npz"),
            "--val",
            str(MODELS / "data" / "digits_test.npz"),
            "--epochs",
            "1",
            "-o",
            str(tuned),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "epoch 1: train loss" in r.output and "validation accuracy" in r.output
    out = tmp_path / "tuned.onnx"
    r = runner.invoke(main, ["export", str(tuned), "-o", str(out)])
    assert r.exit_code == 0, r.output
    onnx.checker.check_model(onnx.load(out))
    r = runner.invoke(
        main,
        [
            "finetune",
            str(prog),
            "--data",
            str(MODELS / "data" / "digits_calib.npz"),
            "-o",
            str(prog),
        ],
    )
    assert r.exit_code == 2 and "refusing to overwrite" in r.output


# -- what fine-tuning adjusts ------------------------------------------------------------------


def shifted_inputs(n: int, seed: int) -> np.ndarray:
    """Inputs mostly positive with a small negative range: the compiler shifts them."""
    return np.random.default_rng(seed).uniform(-0.1, 1.0, (n, 20)).astype(np.float32)


@pytest.mark.parametrize("data", ["shift", "split"])
def test_column_gains_fold_exactly_into_the_program_and_its_export(tmp_path, data):
    x = (
        shifted_inputs(64, 3)
        if data == "shift"
        else np.random.default_rng(3).normal(size=(64, 20)).astype(np.float32)
    )
    program = anacc.compile(one_layer_model(tmp_path / "m.onnx"), calib={"x": x})
    layer = next(iter(program.layers.values()))
    assert layer.signed == data
    chip = program.chip
    backend = get_backend("quantized", chip, chip.profile(program.profile))
    model = TrainingGraph(program, backend, 1.0, per_column=True, column_gain=True)
    tl = next(iter(model.layers.values()))
    with torch.no_grad():
        tl.log_gain.copy_(torch.linspace(-0.3, 0.4, tl.log_gain.numel()))
        expected = model({"x": torch.from_numpy(x)}).numpy().astype(np.float64)
    tuned = model.snapshot()
    got = run_program(tuned, {"x": x}, backend="quantized").outputs["y"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    folded = next(iter(tuned.layers.values()))
    np.testing.assert_array_equal(folded.analog.weight_q, tl.layer.analog.weight_q)
    gain = np.exp(np.linspace(-0.3, 0.4, 6))
    np.testing.assert_allclose(folded.weight_scale, tl.layer.weight_scale * gain, rtol=1e-6)
    # the export carries the gains in its float weights: onnxruntime equals the ideal backend
    sess = ort.InferenceSession(
        to_onnx(tuned).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    ref = sess.run(None, {"x": x})[0]
    ideal = run_program(tuned, {"x": x}, backend="ideal").outputs["y"]
    np.testing.assert_allclose(ideal, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("data", ["none", "shift", "split"])
def test_learned_scale_gradient_is_the_lsq_derivative_in_float64(tmp_path, data):
    """On the noise-free quantized backend, the input-scale gradient is the derivative of
    s * clip(round((x - o) / s)) @ W_q (rounding straight through; autograd in float64) plus
    the measured deviation of the chip's output from that model (here the ADC rounding),
    which is how noise and saturation enter the scale's gradient."""
    rng = np.random.default_rng(7)
    if data == "none":
        x = rng.uniform(0, 1, (48, 20)).astype(np.float32)
    elif data == "shift":
        x = shifted_inputs(48, 7)
    else:
        x = rng.normal(size=(48, 20)).astype(np.float32)
    program = anacc.compile(
        one_layer_model(tmp_path / "m.onnx"), calib={"x": x[:16]}, scale="percentile:90"
    )
    layer = next(iter(program.layers.values()))
    assert layer.signed == data
    chip = program.chip
    backend = get_backend("quantized", chip, chip.profile(program.profile))
    model = TrainingGraph(program, backend, 1.0, per_column=True, learn_scale=True)
    tl = next(iter(model.layers.values()))
    upstream = rng.standard_normal((48, 6))
    xt = torch.from_numpy(x).requires_grad_(True)
    out = model({"x": xt})
    (out * torch.from_numpy(upstream).float()).sum().backward()

    s = torch.tensor(float(tl.log_scale.detach().exp()), dtype=torch.float64, requires_grad=True)
    o = layer.input_offset if data == "shift" else 0.0
    top = chip.input_max
    u = torch.from_numpy(x).double() - o
    lo = -top if data == "split" else 0.0
    v = (u / s).clamp(lo, top)
    x_hat = s * (v + (v.round() - v).detach())
    w_deq = torch.from_numpy(tl.layer.analog.weight_q * tl.layer.weight_scale).double()
    y = x_hat @ w_deq + o * w_deq.sum(0) + torch.from_numpy(tl.layer.bias).double()
    deviation = out.detach().numpy().astype(np.float64) - y.detach().numpy()
    assert np.abs(deviation).max() < 0.05 * np.abs(y.detach().numpy()).max()  # ADC rounding
    (y * torch.from_numpy(upstream)).sum().backward()
    expected = float(s.grad) * float(s.detach()) + float((upstream * deviation).sum())
    assert float(tl.log_scale.grad) == pytest.approx(expected, rel=1e-3, abs=1e-4)
    assert abs(expected) > 1e-2  # the scale gets a real gradient
    # clipped inputs pass no gradient back to the input (PACT)
    if data == "split":
        inside = (u.abs() <= top * s).numpy()
    else:
        inside = ((u >= 0) & (u <= top * s)).numpy()
    assert (~inside).any()
    assert (xt.grad.numpy()[~inside] == 0).all()
    assert (xt.grad.numpy()[inside] != 0).any()


def test_learned_scale_gradient_of_a_convolution_is_the_lsq_derivative(tmp_path):
    """The same derivative for a (grouped, padded) convolution: autograd in float64 through
    the im2col rows of s * clip(round(x / s)), plus the measured deviation."""
    rng = np.random.default_rng(8)
    x = rng.uniform(0, 1, (6, 4, 9, 9)).astype(np.float32)
    program = anacc.compile(
        grouped_conv_model(tmp_path / "g.onnx"), calib={"x": x[:2]}, scale="percentile:95"
    )
    chip = program.chip
    backend = get_backend("quantized", chip, chip.profile(program.profile))
    model = TrainingGraph(program, backend, 1.0, per_column=True, learn_scale=True)
    step = program.analog_steps[0]
    tl = model.layers[step.layer]
    model.requantize()
    h = model.analog(step, tl.layer, torch.from_numpy(x))
    upstream = rng.standard_normal(tuple(h.shape))
    (h * torch.from_numpy(upstream).float()).sum().backward()

    conv = tl.layer.conv
    s = torch.tensor(float(tl.log_scale.detach().exp()), dtype=torch.float64, requires_grad=True)
    v = (torch.from_numpy(x).double() / s).clamp(0, chip.input_max)
    x_hat = s * (v + (v.round() - v).detach())
    w_deq = torch.from_numpy(tl.layer.analog.weight_q * tl.layer.weight_scale).double()
    rows = conv.im2col(x_hat) @ w_deq + torch.from_numpy(tl.layer.bias).double()
    y = conv.col2im(rows, 6, conv.output_shape((9, 9)))
    deviation = h.detach().numpy().astype(np.float64) - y.detach().numpy()
    assert np.abs(deviation).max() < 0.05 * np.abs(y.detach().numpy()).max()
    (y * torch.from_numpy(upstream)).sum().backward()
    expected = float(s.grad) * float(s.detach()) + float((upstream * deviation).sum())
    assert float(tl.log_scale.grad) == pytest.approx(expected, rel=1e-3, abs=1e-4)
    assert abs(expected) > 1e-2


def test_fine_tuning_against_several_instances_is_recorded_in_the_program(tmp_path):
    program = anacc.compile(MODELS / "digits_mlp.onnx", calib=split("digits", "calib"))
    train = match_inputs(split("digits", "train", 256), program.inputs)
    val = match_inputs(split("digits", "calib"), program.inputs)
    opts = FinetuneOptions(epochs=2, seed=3, instances=2, sends="keep")
    result = finetune(program, train, val, opts)
    info = result.program.source["finetune"]
    assert info["instances"] == [3, 4] and info["robust"] is True
    assert result.program.source["fine_tuned"] is True
    # the validation accuracy is the mean over the instances, as anacc run measures each
    per_chip = [run_program(result.program, val, seed=s).accuracy for s in (3, 4)]
    assert result.final_val_accuracy == pytest.approx(np.mean(per_chip), abs=1e-12)
    text = anacc.Program.wrap(result.program).report().to_json()["fine_tuning"]
    assert "robust" in text and "2 chip instances" in text
    one = finetune(program, train, None, FinetuneOptions(epochs=1, seed=3, sends="keep"))
    assert "chip instance 3" in anacc.Program.wrap(one.program).report().to_json()["fine_tuning"]


def cross_entropy(program: Program, data, seed: int) -> float:
    logits = run_program(program, data, seed=seed).outputs["logits"]
    return float(
        torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(data.labels))
    )


def test_the_num_sends_search_finds_more_gain_for_a_starved_program():
    """Compiled with a quarter of the gain, every layer drowns in noise: the search raises
    num_sends and the loss (measured in fresh sessions) falls."""
    program = anacc.compile(
        MODELS / "mnist1d_mlp.onnx", calib=split("mnist1d", "calib"), gain_factor=0.25
    )
    train = match_inputs(split("mnist1d", "train", 1024), program.inputs)
    chip = program.chip
    backend = get_backend("emulator", chip, chip.profile(program.profile), seed=0)
    model = TrainingGraph(program, backend, 1.0, per_column=True)
    labels = torch.from_numpy(train.labels)

    def loss(out, y):
        return torch.nn.functional.cross_entropy(out, y)

    changed = search_sends(model, train, labels, loss, lambda m, i: None, 0, samples=512)
    before = {n: layer.analog.num_sends for n, layer in program.layers.items()}
    assert changed and all(after > before[n] for n, (_, after) in changed.items())
    tuned = model.snapshot()
    assert cross_entropy(tuned, train, 1) < cross_entropy(program, train, 1)


def test_a_search_beyond_its_budget_scales_every_layer_by_one_factor():
    """Layer by layer, the search scores every candidate of every layer (one forward pass
    over the slice each); over ``max_evaluations`` it scores one shared factor per distinct
    assignment instead, and the starved program still gains: every layer moves by the same
    factor and the loss (fresh sessions) falls."""
    program = anacc.compile(
        MODELS / "mnist1d_mlp.onnx", calib=split("mnist1d", "calib"), gain_factor=0.25
    )
    train = match_inputs(split("mnist1d", "train", 1024), program.inputs)
    chip = program.chip
    labels = torch.from_numpy(train.labels)
    before = {n: layer.analog.num_sends for n, layer in program.layers.items()}
    top = chip.num_sends_max

    def search(max_evaluations: int) -> tuple[TrainingGraph, dict, int]:
        backend = get_backend("emulator", chip, chip.profile(program.profile), seed=0)
        model = TrainingGraph(program, backend, 1.0, per_column=True)
        calls = []

        def loss(out, y):
            calls.append(len(y))
            return torch.nn.functional.cross_entropy(out, y)

        changed = search_sends(
            model,
            train,
            labels,
            loss,
            lambda m, i: None,
            0,
            samples=256,
            max_evaluations=max_evaluations,
        )
        return model, changed, len(calls)

    factors = (0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0)

    def scaled(b: int, f: float) -> int:
        return int(np.clip(round(b * f), 1, top))

    _, _, layerwise = search(1000)
    assert layerwise == sum(len({scaled(b, f) for f in factors}) for b in before.values())
    model, changed, shared = search(4)
    assert shared == len({tuple(scaled(b, f) for b in before.values()) for f in factors})
    assert changed and shared < layerwise
    after = {n: tl.layer.analog.num_sends for n, tl in model.layers.items()}
    assert any(all(after[n] == scaled(b, f) for n, b in before.items()) for f in factors)
    assert cross_entropy(model.snapshot(), train, 1) < cross_entropy(program, train, 1)


def test_scales_are_rederived_on_the_training_data_by_the_compile_method():
    program = anacc.compile(MODELS / "mnist1d_mlp.onnx", calib=split("mnist1d", "calib"))
    train = match_inputs(split("mnist1d", "train", 3000), program.inputs)
    chip = program.chip
    backend = get_backend("emulator", chip, chip.profile(program.profile), seed=0)
    new = rederive_scales(program, train, backend, samples=1000)
    first_name, first = next(iter(new.layers.items()))
    assert first.signed == "split"
    # the first layer receives the data itself: the same slice, by numpy in float64
    rows = np.sort(np.random.default_rng(0).choice(3000, size=1000, replace=False))
    x = train.inputs["input"][rows].astype(np.float64)
    expected = np.percentile(np.abs(x), 99.99) / chip.input_max
    assert first.input_scale == pytest.approx(expected, rel=1e-6)
    assert program.layers[first_name].input_scale != pytest.approx(expected, rel=1e-3)
    # the others see the chip's outputs; on the data they came from, few inputs clip
    result = run_program(new, train.subset(rows), seed=0)
    assert all(c.fraction < 5e-4 for c in result.clipped.values())


def test_a_fine_tuned_program_does_not_advise_to_recompile():
    program = anacc.compile(MODELS / "digits_mlp.onnx", calib=split("digits", "calib"))
    train = match_inputs(split("digits", "train", 256), program.inputs)
    tuned = finetune(program, train, None, FinetuneOptions(epochs=1, sends="keep")).program
    test = split("digits", "test")
    test["input"] = test["input"] * 3.0
    [plain] = run_program(program, test).warnings
    [warning] = run_program(tuned, test).warnings
    assert "recompile" in plain and "recompile" not in warning
    assert "fine-tune again" in warning
