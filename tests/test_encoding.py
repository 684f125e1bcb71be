"""The compiled input side of an analog step (runtime/encoding.py) against the torch form it
replaces (compiler.quant.encode, ConvGeometry.im2col, a numpy clip count), the channel-major
digital sum against float64 numpy, and the NaN check on the analog path."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from anacc.compiler.conv import ConvGeometry
from anacc.compiler.quant import Encoding, encode
from anacc.runtime.analog import encoded_rows, set_aliased
from anacc.runtime.backends import readout

from anacc.errors import DataError

INPUT_MAX = 31


def _encoding(signed: str) -> Encoding:
    return Encoding(0.0731, -0.9 if signed == "shift" else 0.0)


def _inputs(rng: np.random.Generator, shape: tuple[int, ...], enc: Encoding) -> np.ndarray:
    """Normal values with some exactly half-way between two codes (rounding ties), zeros
    and values far outside the range."""
    x = (1.5 * rng.standard_normal(shape)).astype(np.float32)
    flat = x.reshape(-1)
    ties = rng.choice(flat.size, flat.size // 10, replace=False)
    halves = rng.integers(-40, 40, ties.size) + 0.5
    flat[ties] = (halves * np.float32(enc.scale) + np.float32(enc.offset)).astype(np.float32)
    flat[rng.choice(flat.size, 5, replace=False)] = 0.0
    flat[rng.choice(flat.size, 5, replace=False)] = 1e6
    return x


def _layer(signed: str, conv: ConvGeometry | None, in_features: int) -> SimpleNamespace:
    """What encoded_rows reads of a program layer."""
    return SimpleNamespace(
        signed=signed, conv=conv, name="layer", analog=SimpleNamespace(in_features=in_features)
    )


def _clipped(x: np.ndarray, signed: str, enc: Encoding, copies: np.ndarray | None = None) -> int:
    high = enc.offset + enc.scale * INPUT_MAX
    low = -high if signed == "split" else enc.offset
    outside = (x.astype(np.float64) < low) | (x.astype(np.float64) > high)
    if copies is not None:
        return int((outside * copies).sum())
    return int(outside.sum())


@pytest.mark.parametrize("signed", ["none", "shift", "split"])
def test_dense_rows_equal_the_torch_encoding_and_count_the_clipped_inputs(signed):
    rng = np.random.default_rng(1)
    enc = _encoding(signed)
    x = _inputs(rng, (37, 5, 19), enc)  # any leading axes: rows of the last one
    rows, nans, clipped = encoded_rows(_layer(signed, None, 19), torch.from_numpy(x), enc, 31, 0)
    ref = encode(torch.from_numpy(x.reshape(-1, 19)), signed, enc, INPUT_MAX)
    assert torch.equal(rows, ref)
    assert rows.shape == ((2 if signed == "split" else 1) * 185, 19)
    assert nans == 0
    assert clipped == _clipped(x, signed, enc) > 0


@pytest.mark.parametrize("signed", ["none", "shift", "split"])
@pytest.mark.parametrize("channels", [1, 3, 20])
def test_conv_patches_equal_im2col_of_the_torch_encoding(signed, channels):
    """Encoding channels-last inside the padding, then the patches (compiled for several
    channels and taps, torch's for one of either), equal the torch im2col of the torch
    encoding; the clip count weighs each entry by the patches that read it."""
    rng = np.random.default_rng(channels)
    enc = _encoding(signed)
    pad_value = 12.0 if signed == "shift" else 0.0
    for kernel, stride, dilation, pads in itertools.product(
        [(1, 1), (3, 2)], [(1, 1), (2, 1)], [(1, 1), (1, 2)], [(0, 0, 0, 0), (1, 0, 2, 1)]
    ):
        geometry = ConvGeometry(kernel, stride, pads, dilation, 1, channels, 4)
        x = _inputs(rng, (3, channels, 9, 11), enc)
        layer = _layer(signed, geometry, geometry.in_features)
        rows, nans, clipped = encoded_rows(layer, torch.from_numpy(x), enc, INPUT_MAX, pad_value)
        ref = geometry.im2col(encode(torch.from_numpy(x), signed, enc, INPUT_MAX), pad_value)
        case = (kernel, stride, dilation, pads)
        assert torch.equal(rows, ref), case
        copies = geometry.multiplicity((9, 11)).numpy()
        assert nans == 0
        assert clipped == _clipped(x, signed, enc, copies), case


def test_1d_conv_patches_equal_im2col_of_the_torch_encoding():
    rng = np.random.default_rng(0)
    enc = _encoding("split")
    geometry = ConvGeometry((5,), (2,), (2, 1), (2,), 1, 6, 4)
    x = _inputs(rng, (4, 6, 40), enc)
    rows, _, clipped = encoded_rows(
        _layer("split", geometry, geometry.in_features), torch.from_numpy(x), enc, INPUT_MAX, 0
    )
    assert torch.equal(rows, geometry.im2col(encode(torch.from_numpy(x), "split", enc, 31)))
    assert clipped == _clipped(x, "split", enc, geometry.multiplicity((40,)).numpy())


def test_nan_inputs_are_counted_and_stop_the_analog_step():
    from anacc.runtime.analog import nan_message

    enc = _encoding("none")
    x = np.ones((4, 8), np.float32)
    x[1, 2] = x[3, 0] = np.nan
    _, nans, _ = encoded_rows(_layer("none", None, 8), torch.from_numpy(x), enc, INPUT_MAX, 0)
    assert nans == 2
    geometry = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 2, 4)
    images = np.ones((2, 2, 5, 5), np.float32)
    images[1, 1, 4, 4] = np.nan
    layer = _layer("split", geometry, geometry.in_features)
    _, nans, _ = encoded_rows(layer, torch.from_numpy(images), enc, INPUT_MAX, 0)
    assert nans == 1
    layer.name = "conv1"
    assert "conv1 received 1 NaN values" in nan_message(layer, torch.from_numpy(images))


def test_analog_forward_refuses_nan_inputs_with_a_data_error():
    from anacc.runtime.analog import analog_forward
    from anacc.runtime.backends import get_backend

    import anacc

    models = Path(__file__).resolve().parents[1] / "models"
    with np.load(models / "data" / "digits_calib.npz") as d:
        calib = {"input": d["input"]}
    program = anacc.compile(models / "digits_mlp.onnx", calib=calib)
    layer = next(iter(program.layers.values()))
    backend = get_backend("emulator", program.chip, program.chip.profile(program.profile))
    x = torch.zeros(3, layer.analog.in_features)
    x[1, 0] = float("nan")
    with pytest.raises(DataError, match="received 1 NaN values"):
        analog_forward(layer, x, backend)


@pytest.mark.parametrize(("positions", "columns"), [(1024, 96), (256, 64), (25, 33), (49, 5)])
@pytest.mark.parametrize("masked", [False, True])
def test_channel_major_sum_equals_float64(positions, columns, masked):
    """combine_channel_major writes the digital sum of a block of reads into a channel-major
    output (tiles of positions a column at a time): the float64 sum, rescaled."""
    rng = np.random.default_rng(positions)
    samples, runs = 3, 2
    pos = rng.integers(-128, 128, (samples * positions, runs, columns)).astype(np.float32)
    neg = rng.integers(-128, 128, (samples * positions, runs, columns)).astype(np.float32)
    scale = rng.random(columns).astype(np.float32)
    shift = rng.random(columns).astype(np.float32)
    bias = rng.random(columns).astype(np.float32)
    used = (rng.random((runs, columns)) > 0.3).astype(np.float32)
    mask = used if masked else np.ones_like(used)
    out = np.full((samples, columns, positions), np.nan, np.float32)
    readout.combine_channel_major(
        pos, neg, scale, shift, bias, used if masked else np.zeros((0, 0), np.float32), out
    )
    total = ((pos.astype(np.float64) - neg) * mask).sum(axis=1) * scale + shift + bias
    ref = total.reshape(samples, positions, columns).transpose(0, 2, 1)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-4)
    # the same values as the row-at-a-time form
    rows = np.empty_like(out)
    terms = (scale, shift, bias, used if masked else np.zeros((0, 0), np.float32))
    readout.combine(pos, neg, *terms[:3], terms[3], rows.transpose(0, 2, 1))
    assert np.array_equal(out, rows)


def test_cache_set_aliasing_picks_the_column_at_a_time_sum_for_power_of_two_strides():
    assert set_aliased(1024, 16)  # 4 KiB apart: every column in one set
    assert set_aliased(256, 64)  # 1 KiB apart: 4 sets, 16 lines each
    assert not set_aliased(256, 16)
    assert not set_aliased(784, 128)  # 28 x 28: spread over many sets
    assert not set_aliased(25, 512)
