"""Compile and run end to end: the ideal backend against onnxruntime, the quantized and
emulated chips against FP32 accuracy, and the program file round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from anacc.compiler.program_io import manifest
from anacc.runtime.session import run_program
from onnx_builders import OP_CASES
from torch import nn

import anacc

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
BUNDLED = {
    "digits_mlp": "digits",
    "digits_cnn": "digits_img",
    "mnist1d_mlp": "mnist1d",
    "bss2_mnist": "mnist",
    "kws_lstm": "kws",
}


def split(dataset: str, name: str) -> dict[str, np.ndarray]:
    with np.load(MODELS / "data" / f"{dataset}_{name}.npz") as d:
        return {k: d[k] for k in d.files}


def ort_run(model: Path | bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    src = str(model) if isinstance(model, Path) else model
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_close_to_reference(got: np.ndarray, ref: np.ndarray, rel: float = 1e-4) -> None:
    scale = max(float(np.abs(ref).max()), 1e-6)
    err = float(np.abs(got - ref).max())
    assert err <= rel * scale, f"max abs error {err:.3g} > {rel} x output scale {scale:.3g}"


@pytest.fixture(scope="module")
def compiled() -> dict[str, anacc.Program]:
    return {
        name: anacc.compile(MODELS / f"{name}.onnx", calib=split(ds, "calib"))
        for name, ds in BUNDLED.items()
    }


@pytest.mark.parametrize("name", list(BUNDLED))
def test_ideal_backend_equals_onnxruntime_on_bundled_models(compiled, name):
    test = split(BUNDLED[name], "test")
    ref = ort_run(MODELS / f"{name}.onnx", {"input": test["input"]})[0]
    got = compiled[name].run({"input": test["input"]}, backend="ideal")["logits"]
    assert_close_to_reference(got, ref)


def fp32_accuracy(name: str) -> float:
    test = split(BUNDLED[name], "test")
    logits = ort_run(MODELS / f"{name}.onnx", {"input": test["input"]})[0]
    return float((logits.argmax(1) == test["labels"]).mean())


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "bss2_mnist", "kws_lstm"])
def test_quantized_backend_is_within_1_5_points_of_fp32(compiled, name):
    result = run_program(compiled[name], split(BUNDLED[name], "test"), backend="quantized")
    assert result.accuracy >= fp32_accuracy(name) - 0.015


@pytest.mark.parametrize("name", list(BUNDLED))
def test_emulator_runs_every_bundled_model_well_above_chance(compiled, name):
    test = split(BUNDLED[name], "test")
    result = run_program(compiled[name], test, backend="emulator", seed=1)
    print(f"{name}: emulator accuracy {result.accuracy:.4f}, FP32 {fp32_accuracy(name):.4f}")
    assert result.accuracy > 0.5 * fp32_accuracy(name)
    again = run_program(compiled[name], test, backend="emulator", seed=1)
    np.testing.assert_array_equal(result.outputs["logits"], again.outputs["logits"])


@pytest.mark.parametrize("signed", ["none", "shift", "split"])
@pytest.mark.parametrize("backend", ["quantized", "emulator"])
def test_conv_inputs_encoded_before_im2col_read_the_same_integers(tmp_path, signed, backend):
    """analog_forward encodes a conv input before the im2col (padding with the code of 0);
    the outputs and clip counts equal those of encoding the im2col rows (same backend
    seed)."""
    from anacc.compiler.quant import encode
    from anacc.runtime.analog import (
        ClipCount,
        analog_forward,
        count_clipped,
        extremes,
        input_encoding,
        rescale,
    )
    from anacc.runtime.backends import get_backend

    torch.manual_seed(0)
    conv = nn.Conv2d(3, 20, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    path = export(nn.Sequential(conv), torch.randn(1, 3, 9, 8), tmp_path / "c.onnx", False)
    calib = torch.randn(64, 3, 9, 8)
    if signed == "none":
        calib = calib.relu()
    options = {"signed": signed} if signed != "none" else {}
    prog = anacc.compile(path, calib={"x": calib.numpy()}, **options)
    layer = next(iter(prog.layers.values()))
    assert layer.signed == signed and layer.input_scale is not None
    x = 1.3 * torch.randn(5, 3, 9, 8)  # beyond the calibrated range: some inputs clip
    profile = prog.chip.profile(prog.profile)
    clip = ClipCount()
    fast = analog_forward(layer, x, get_backend(backend, prog.chip, profile, seed=3), clip)
    chip = prog.chip
    rows = layer.conv.im2col(x)
    enc = input_encoding(layer, chip.input_max, extremes(layer, x))
    slow_backend = get_backend(backend, prog.chip, profile, seed=3)
    reads = slow_backend.mac(layer.analog, encode(rows, signed, enc, chip.input_max))
    slow = rescale(layer, slow_backend.gain_per_send, reads, enc)
    ref = torch.nn.functional.conv2d(x, conv.weight, conv.bias, (2, 1), (1, 0), (1, 2))
    assert fast.shape == ref.shape
    assert torch.equal(fast, slow.reshape(5, -1, 20).transpose(1, 2).reshape(fast.shape))
    row_clips = count_clipped(layer, rows, enc, chip.input_max, None)
    assert clip.clipped == row_clips > 0
    assert clip.inputs == rows.numel()
    if signed != "none":  # with "none" the negative inputs clip to 0
        assert float((fast - ref).abs().max()) < 0.5 * float(ref.abs().max())


def test_a_grouped_convolution_sums_only_the_reads_of_runs_with_its_weights(tmp_path):
    """A grouped convolution maps block-diagonally: most runs hold no weight for a given
    output column, and their reads there are the neuron's offset and noise alone. The digital
    sum leaves them out: the output is the float64 sum of the used reads (same seed), and it
    is closer to the float convolution than the sum of all reads."""
    from anacc.compiler.quant import encode
    from anacc.runtime.analog import analog_forward, digital_terms, extremes, input_encoding
    from anacc.runtime.backends import get_backend

    torch.manual_seed(0)
    conv = nn.Conv2d(96, 192, 3, padding=1, groups=12)  # 864 rows: 12 blocks of 72 x 16
    path = export(nn.Sequential(conv), torch.randn(1, 96, 4, 4), tmp_path / "g.onnx", False)
    calib = torch.randn(64, 96, 4, 4).relu()
    prog = anacc.compile(path, calib={"x": calib.numpy()})
    layer = next(iter(prog.layers.values()))
    chunks = layer.analog.row_chunks
    weight_q = np.asarray(layer.analog.weight_q)
    used = np.stack([(weight_q[a:b] != 0).any(axis=0) for a, b in chunks])
    assert len(chunks) == 7 and used.mean() < 0.3  # 124 rows a run: two or three blocks

    x = torch.randn(16, 96, 4, 4).relu()  # one block: one backend call
    chip, profile = prog.chip, prog.chip.profile(prog.profile)
    y = analog_forward(layer, x, get_backend("emulator", chip, profile, seed=5))
    backend = get_backend("emulator", chip, profile, seed=5)  # the same chip and noise
    enc = input_encoding(layer, chip.input_max, extremes(layer, x))
    rows = layer.conv.im2col(encode(x, layer.signed, enc, chip.input_max))
    reads = backend.mac(layer.analog, rows).double().numpy()  # (rows, chunks, columns)
    assert reads[:, ~used].std() > 0.5  # offset and noise: they would have counted
    scale, shift, bias = digital_terms(layer, backend.gain_per_send, enc)

    def output(mask: np.ndarray) -> np.ndarray:
        total = (reads * mask).sum(axis=1) * scale + shift + bias
        return total.reshape(16, 16, 192).transpose(0, 2, 1).reshape(y.shape)

    np.testing.assert_allclose(y.numpy(), output(used), rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        ref = conv(x).double().numpy()
    err_used = np.linalg.norm(y.numpy() - ref)
    err_all = np.linalg.norm(output(np.ones_like(used)) - ref)
    assert err_used < 0.8 * err_all


def test_program_round_trip_is_exact(compiled, tmp_path):
    prog = compiled["digits_cnn"]
    path = prog.save(tmp_path / "p.anacc")
    loaded = anacc.Program.load(path)
    assert manifest(loaded, {}) == manifest(prog, {})
    for name, layer in prog.layers.items():
        other = loaded.layers[name]
        np.testing.assert_array_equal(layer.analog.weight_q, other.analog.weight_q)
        np.testing.assert_array_equal(layer.analog.weight, other.analog.weight)
        np.testing.assert_array_equal(layer.weight_scale, other.weight_scale)
        assert layer.analog.tiles == other.analog.tiles
    assert loaded.to_bytes() == prog.to_bytes()
    test = split("digits_img", "test")
    a = run_program(prog, test, backend="emulator", seed=3).outputs["logits"]
    b = run_program(loaded, test, backend="emulator", seed=3).outputs["logits"]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_ideal_equals_onnxruntime_on_every_single_op_model(case, tmp_path):
    model, feeds = OP_CASES[case]()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    ref = ort_run(path, feeds)[0]
    rng = np.random.default_rng(1)
    calib = {
        k: rng.standard_normal((16, *v.shape[1:])).astype(np.float32) for k, v in feeds.items()
    }
    program = anacc.compile(path, calib=calib)
    got = program.run(feeds, backend="ideal")
    assert_close_to_reference(next(iter(got.values())), ref)


# -- small graphs built with torch, exported both ways ----------------------------------------


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.c3 = nn.Conv2d(8, 6, 3, stride=2, padding=(0, 1))
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.fc = nn.Linear(12 * 5 * 5, 5)

    def forward(self, x):
        h = torch.relu(self.bn(self.c1(x)))
        h = h + self.c2(h)
        h = self.c3(torch.tanh(h))
        h = torch.cat([self.dw(h), torch.relu(h)], dim=1)
        h = nn.functional.avg_pool2d(h, 2, ceil_mode=True)
        h = nn.functional.max_pool2d(h, 2, stride=1, padding=1)
        return torch.softmax(self.fc(h.flatten(1)), dim=1)


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv1d(2, 4, 5, stride=2, padding=1)
        self.fc = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        return self.fc(torch.relu(self.c(x)).mean(dim=2))


class BatchedMatMul(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 7))

    def forward(self, x):
        return torch.matmul(x, self.w).transpose(1, 2)


def export(module: nn.Module, example: torch.Tensor, path: Path, dynamo: bool) -> Path:
    module.eval()
    with torch.no_grad():
        if dynamo:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=True,
                external_data=True,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )
        else:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
            )
    return path


@pytest.mark.parametrize(
    "module,shape",
    [(Residual, (3, 3, 16, 16)), (Conv1dNet, (3, 2, 20)), (BatchedMatMul, (3, 4, 6))],
    ids=["residual-cnn", "conv1d", "batched-matmul"],
)
def test_ideal_equals_onnxruntime_on_torch_graphs(module, shape, tmp_path):
    torch.manual_seed(0)
    m = module()
    if isinstance(m, Residual):
        with torch.no_grad():  # non-trivial BatchNorm statistics
            m.bn.running_mean.uniform_(-0.5, 0.5)
            m.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(*shape)
    path = export(m, x, tmp_path / "m.onnx", dynamo=False)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
    ref = ort_run(path, feeds)[0]
    prog = anacc.compile(path, calib=feeds)
    got = prog.run(feeds, backend="ideal")["y"]
    assert_close_to_reference(got, ref)


def make_resnet18(num_classes: int = 10) -> nn.Module:
    """A ResNet-18-sized graph (11 M parameters) built from plain torch modules."""

    def block(c_in: int, c_out: int, stride: int) -> nn.Module:
        class Block(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.c1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
                self.b1 = nn.BatchNorm2d(c_out)
                self.c2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
                self.b2 = nn.BatchNorm2d(c_out)
                self.down = (
                    nn.Sequential(
                        nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
                    )
                    if stride != 1 or c_in != c_out
                    else nn.Identity()
                )

            def forward(self, x):
                h = torch.relu(self.b1(self.c1(x)))
                return torch.relu(self.b2(self.c2(h)) + self.down(x))

        return Block()

    layers = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    c = 64
    for c_out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [block(c, c_out, stride), block(c_out, c_out, 1)]
        c = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


@pytest.mark.slow
def test_resnet18_graph_compiles_and_ideal_matches_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = make_resnet18()
    assert sum(p.numel() for p in model.parameters()) > 11_000_000
    path = export(model, torch.randn(2, 3, 64, 64), tmp_path / "resnet18.onnx", dynamo=False)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 3, 64, 64)).astype(np.float32)}
    prog = anacc.compile(path)
    assert len(prog.layers) == 21  # 20 convolutions + the classifier
    ref = ort_run(path, feeds)[0]
    got = prog.run(feeds, backend="ideal")["y"]
    assert_close_to_reference(got, ref)
    quant = prog.run(feeds, backend="quantized")["y"]
    assert quant.shape == ref.shape and np.isfinite(quant).all()
