"""The ideal and quantized backends against independent numpy references; the interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anacc.compiler.chip import load_chip
from anacc.runtime.backends import BACKEND_NAMES, get_backend
from anacc.runtime.backends.base import build_chunk_layout
from layer_builders import tiled_layer

from anacc.errors import ChipError, OptionError

CHIP = load_chip("bss2")


def random_layer(rng, n_in, n_out, num_sends=1, **kwargs):
    weight_q = rng.integers(-CHIP.weight_max, CHIP.weight_max + 1, (n_in, n_out))
    return tiled_layer(CHIP, weight_q, num_sends, **kwargs)


def shuffled_slots(rng, row_bounds):
    return np.concatenate([rng.permutation(b - a) for a, b in row_bounds])


def reference_reads(x_q: np.ndarray, weight_q: np.ndarray, row_bounds, scale: float):
    """Per run: exact integer sum, rounded half-to-even at the gain, int8 clamp."""
    reads = []
    for a, b in row_bounds:
        acc = x_q[:, a:b].astype(np.int64) @ weight_q[a:b].astype(np.int64)
        reads.append(np.clip(np.round(acc * scale), CHIP.adc_min, CHIP.adc_max))
    return np.stack(reads, axis=1)


def test_backend_names_and_flags():
    assert BACKEND_NAMES == ("ideal", "quantized", "emulator")
    for name in BACKEND_NAMES:
        backend = get_backend(name, CHIP, "default", seed=3)
        assert backend.name == name
        assert backend.quantizes == (name != "ideal")
        assert backend.gain_per_send == CHIP.profile("default").gain_per_send
        assert backend.profile is CHIP.profile("default")


def test_get_backend_rejects_unknown_names():
    with pytest.raises(OptionError, match="unknown backend 'analog'; choose one of"):
        get_backend("analog", CHIP, "default")
    with pytest.raises(ChipError, match="no profile 'fast'"):
        get_backend("emulator", CHIP, "fast")
    with pytest.raises(OptionError, match="non-negative"):
        get_backend("emulator", CHIP, "default", seed=-1)


def test_ideal_equals_float64_matmul():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(300, 520)).astype(np.float32)
    layer = tiled_layer(CHIP, np.zeros((300, 520)), weight=weight)
    x = rng.normal(size=(17, 300)).astype(np.float32)
    y = get_backend("ideal", CHIP, "default").linear(layer, torch.from_numpy(x))
    assert y.dtype == torch.float32 and y.shape == (17, 520)
    expected = x.astype(np.float64) @ weight.astype(np.float64)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-4)


def test_each_backend_has_one_entry_point():
    layer = tiled_layer(CHIP, np.ones((4, 3)))
    x = torch.ones(2, 4)
    with pytest.raises(NotImplementedError, match="linear"):
        get_backend("ideal", CHIP, "default").mac(layer, x)
    for name in ("quantized", "emulator"):
        with pytest.raises(NotImplementedError, match="mac"):
            get_backend(name, CHIP, "default").linear(layer, x)


@pytest.mark.parametrize("num_sends", [1, 3, 12])
def test_quantized_equals_integer_reference_with_unequal_chunks(num_sends):
    rng = np.random.default_rng(num_sends)
    row_bounds = [(0, 128), (128, 250), (250, 300)]
    col_bounds = [(0, 256), (256, 512), (512, 600)]
    layer = random_layer(
        rng,
        300,
        600,
        num_sends,
        row_bounds=row_bounds,
        col_bounds=col_bounds,
        row_slot=shuffled_slots(rng, row_bounds),
    )
    x_q = rng.integers(0, CHIP.input_max + 1, (9, 300))
    backend = get_backend("quantized", CHIP, "default")
    reads = backend.mac(layer, torch.from_numpy(x_q.astype(np.float32)))
    assert reads.dtype == torch.float32 and reads.shape == (9, 3, 600)
    scale = CHIP.profile("default").gain_per_send * num_sends
    expected = reference_reads(x_q, layer.weight_q, row_bounds, scale)
    np.testing.assert_array_equal(reads.numpy(), expected)
    np.testing.assert_array_equal(reads.sum(1).numpy(), expected.sum(1))
    if num_sends == 12:  # the per-run clamp is exercised
        assert (np.abs(expected) >= CHIP.adc_max).any()


def test_quantized_rounds_half_to_even_at_exact_ties():
    # gain 0.002: sums of 250, 750 and 1250 are the exact ties 0.5, 1.5 and 2.5
    layer = tiled_layer(CHIP, np.array([[10, 30, 50]]))
    reads = get_backend("quantized", CHIP, "default").mac(layer, torch.tensor([[25.0]]))
    assert reads[0, 0].tolist() == [0.0, 2.0, 2.0]


def test_quantized_is_the_same_for_any_row_order_and_placement():
    rng = np.random.default_rng(5)
    weight_q = rng.integers(-63, 64, (200, 300))
    x = torch.from_numpy(rng.integers(0, 32, (4, 200)).astype(np.float32))
    backend = get_backend("quantized", CHIP, "default")
    plain = backend.mac(tiled_layer(CHIP, weight_q, 2), x)
    bounds = [(0, 100), (100, 200)]
    moved = tiled_layer(
        CHIP,
        weight_q,
        2,
        row_slot=shuffled_slots(rng, bounds),
        halves=[1, 1, 0, 0],
        col_offsets=[0, 100, 0, 100],
    )
    torch.testing.assert_close(backend.mac(moved, x), plain, rtol=0, atol=0)


def test_mac_checks_its_inputs():
    layer = tiled_layer(CHIP, np.ones((4, 3)))
    backend = get_backend("quantized", CHIP, "default")
    with pytest.raises(AssertionError, match="0..31"):
        backend.mac(layer, torch.full((2, 4), 32.0))
    with pytest.raises(AssertionError, match="0..31"):
        backend.mac(layer, torch.full((2, 4), -1.0))
    with pytest.raises(AssertionError, match=r"\(B, 4\)"):
        backend.mac(layer, torch.ones(2, 5))
    assert backend.mac(layer, torch.zeros(0, 4)).shape == (0, 1, 3)


def test_chunk_layout_places_every_column_on_its_tile():
    layer = tiled_layer(
        CHIP,
        np.ones((130, 300)),
        row_bounds=[(0, 65), (65, 130)],
        col_bounds=[(0, 200), (200, 300)],
        halves=[0, 1, 1, 0],
        col_offsets=[10, 0, 50, 150],
    )
    layout = build_chunk_layout(layer, CHIP)
    assert layout.row_chunks == ((0, 65), (65, 130))
    assert layout.half[0, :200].unique().tolist() == [0]
    assert layout.half[1, 200:].unique().tolist() == [0]
    assert layout.neuron[0, 0] == 10 and layout.neuron[0, 199] == 209
    assert layout.neuron[1, 0] == 50 and layout.neuron[1, 299] == 249
    assert layout.chunk_rows.tolist() == [65, 65]


def test_chunk_layout_rejects_a_tile_beyond_the_half():
    layer = tiled_layer(CHIP, np.ones((10, 200)), col_offsets=[100])
    with pytest.raises(AssertionError, match="outside the half"):
        build_chunk_layout(layer, CHIP)


def test_mac_takes_other_float_dtypes_and_strided_inputs():
    rng = np.random.default_rng(7)
    layer = random_layer(rng, 256, 40)
    x = torch.from_numpy(rng.integers(0, 32, (6, 256)).astype(np.float32))
    backend = get_backend("quantized", CHIP, "default")
    expected = backend.mac(layer, x)
    strided = x.t().contiguous().t()
    assert not strided.is_contiguous()
    torch.testing.assert_close(backend.mac(layer, strided), expected, rtol=0, atol=0)
    torch.testing.assert_close(backend.mac(layer, x.double()), expected, rtol=0, atol=0)


def test_chunk_inputs_pad_unequal_chunks_and_split_the_batch_over_copies():
    """Unit ``k * R + r`` gets chunk ``r`` of vectors ``k, k + copies, ...``, zero-padded to
    the longest chunk, and zero vectors where the copies do not divide the batch."""
    import dataclasses

    layer = tiled_layer(CHIP, np.ones((150, 40)), row_bounds=[(0, 70), (70, 150)])
    copy = [dataclasses.replace(t, index=t.index + 2, copy=1, col_offset=100) for t in layer.tiles]
    layer.tiles = type(layer.tiles)([*layer.tiles, *copy])
    layout = build_chunk_layout(layer, CHIP)
    assert layout.copies == 2 and layout.n_max == 80
    rng = np.random.default_rng(5)
    x = rng.integers(0, 32, (7, 150)).astype(np.float32)
    got = layout.chunk_inputs(torch.from_numpy(x)).numpy()
    expected = np.zeros((4, 4, 80), np.float32)
    for k in range(2):
        for r, (a, b) in enumerate([(0, 70), (70, 150)]):
            vectors = x[k::2, a:b]
            expected[k * 2 + r, : len(vectors), : b - a] = vectors
    assert np.array_equal(got, expected)
