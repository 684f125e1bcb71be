"""The emulator backend: measured gain and noise, the noise factors, dynamic saturation,
fixed patterns, determinism; and the ``anacc chip`` commands."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from anacc.compiler.chip import ChipSpec, load_chip
from anacc.runtime.backends import get_backend, readout
from anacc.runtime.backends.base import build_chunk_layout
from anacc.runtime.backends.emulator import EmulatorBackend, _peak_window_load, window_plan
from anacc.runtime.characterize import (
    characterization_num_sends,
    characterize,
    measure_gain,
    measure_noise,
)
from click.testing import CliRunner
from layer_builders import tiled_layer

from anacc.cli import main

CHIP = load_chip("bss2")
QUIET = {
    "reference_noise_sigma_lsb": 0.0,
    "neuron_gain_sigma": 0.0,
    "neuron_offset_sigma_lsb": 0.0,
    "synapse_gain_sigma": 0.0,
    "spatial_gain_gradient": 0.0,
    "saturation_point_sigma": 0.0,
}


def chip_with(**analog) -> ChipSpec:
    data = CHIP.to_dict()
    data["analog"].update(analog)
    return ChipSpec.from_dict(data)


def emulator(profile, seed=0, chip=CHIP, **knobs) -> EmulatorBackend:
    if isinstance(profile, str):
        profile = chip.profile(profile)
    return EmulatorBackend(chip, dataclasses.replace(profile, **knobs), seed=seed)


@pytest.mark.parametrize("profile", ["default", "custom"])
def test_measured_gain_and_noise_match_the_profile(profile):
    backend = emulator(profile, seed=1)
    nominal = CHIP.profile(profile)
    assert measure_gain(backend) == pytest.approx(nominal.gain_per_send, rel=0.05)
    assert measure_gain(backend, num_sends=4) == pytest.approx(nominal.gain_per_send, rel=0.05)
    assert measure_noise(backend) == pytest.approx(nominal.noise_sigma_lsb, rel=0.10)


def test_custom_has_less_noise_than_default_at_equal_gain():
    default, custom = emulator("default", seed=2), emulator("custom", seed=2)
    assert measure_gain(custom) == pytest.approx(measure_gain(default), rel=0.05)
    assert measure_noise(custom) < 0.9 * measure_noise(default)


def increasing(values: list[float]) -> bool:
    return all(a < b for a, b in zip(values, values[1:], strict=False))


# Small inputs keep the reads inside the linear range, where noise is not compressed.
def test_noise_grows_with_num_sends():
    backend = emulator("default")
    sigmas = [measure_noise(backend, num_sends=n, input_value=1) for n in (1, 4, 16)]
    assert increasing(sigmas), sigmas


def test_noise_grows_with_active_inputs():
    backend = emulator("default")
    sigmas = [measure_noise(backend, active_inputs=n, input_value=1) for n in (10, 50, 128)]
    assert increasing(sigmas), sigmas


def test_noise_grows_with_weight_magnitude():
    backend = emulator("default")
    sigmas = [measure_noise(backend, weight=w, input_value=1) for w in (5, 30, 63)]
    assert increasing(sigmas), sigmas
    assert measure_noise(backend, weight=-63, input_value=1) == pytest.approx(sigmas[-1], rel=0.1)


def test_noise_grows_with_ota_bias():
    sigmas = [measure_noise(emulator("default", ota_bias=b), input_value=1) for b in (60, 300, 600)]
    assert increasing(sigmas), sigmas


def test_noise_grows_with_wait_cycles():
    sigmas = [measure_noise(emulator("default", wait_cycles=w), input_value=1) for w in (2, 5, 20)]
    assert increasing(sigmas), sigmas


def test_noise_matches_the_documented_formula():
    backend = emulator("default")
    expected = CHIP.profile("default").noise_sigma_lsb_at(4, 64, 40)
    measured = measure_noise(backend, num_sends=4, active_inputs=64, weight=40, input_value=1)
    # ADC rounding adds a uniform error of variance 1/12
    assert measured == pytest.approx((expected**2 + 1 / 12) ** 0.5, rel=0.1)


def strong_rows_layer(slots: np.ndarray) -> tuple:
    """Full-scale positive weights on the rows at ``slots`` of 128 rows, zero elsewhere."""
    weight_q = np.zeros((128, 8), dtype=np.int64)
    weight_q[: len(slots)] = CHIP.weight_max
    row_slot = np.empty(128, dtype=np.int64)
    row_slot[: len(slots)] = slots
    row_slot[len(slots) :] = np.setdiff1d(np.arange(128), slots)
    return tiled_layer(CHIP, weight_q, row_slot=row_slot), weight_q


def compression(layer, weight_q, tau_syn_us: float) -> float:
    """1 - read / nominal read on a chip without noise and mismatch.

    The gain is lowered and kept independent of tau_syn so that only the synaptic input
    can saturate and the reads stay comparable.
    """
    chip = chip_with(reference_gain_per_send=0.0005, gain_tau_exponent=0.0, **QUIET)
    backend = emulator("default", chip=chip, tau_syn_us=tau_syn_us)
    x = np.full((1, 128), CHIP.input_max)
    read = backend.mac(layer, torch.from_numpy(x.astype(np.float32))).sum(1)
    nominal = backend.gain_per_send * layer.num_sends * (x @ weight_q)
    assert nominal.max() < CHIP.linear_max  # no output saturation in the way
    return float(1 - read.mean() / nominal.mean())


def brute_force_peak(seq: torch.Tensor, window: float, num_sends: int) -> torch.Tensor:
    """Slide a (fractional) box window over the whole event train, one end slot at a time."""
    train = seq.repeat(num_sends, 1)
    best = torch.zeros(seq.shape[1])
    for end in range(len(train)):
        total, left, j = torch.zeros(seq.shape[1]), window, end
        while left > 0 and j >= 0:
            total += min(1.0, left) * train[j]
            left, j = left - 1.0, j - 1
        best = torch.maximum(best, total)
    return best


@pytest.mark.parametrize("num_sends", [1, 2, 3])
def test_peak_window_load_matches_a_brute_force_event_train(num_sends):
    rng = np.random.default_rng(num_sends)
    bounds = [(0, 5), (5, 12), (12, 19)]
    slots = np.concatenate([rng.permutation(b - a) for a, b in bounds])
    layer = tiled_layer(CHIP, np.ones((19, 3)), row_bounds=bounds, row_slot=slots)
    layout = build_chunk_layout(layer, CHIP)
    charges = torch.rand(2, 3, layout.n_max, 3) * layout.valid.view(1, 3, -1, 1)
    for window in (1.0, 2.5, 4.0, 7.0, 9.5, 30.0):
        plan = window_plan(layout, window, num_sends)[0]
        peak = torch.from_numpy(_peak_window_load(charges.numpy(), layout, plan))
        for r, (a, b) in enumerate(bounds):
            in_time = np.argsort(slots[a:b])
            for part in range(2):
                expected = brute_force_peak(charges[part, r, in_time], window, num_sends)
                torch.testing.assert_close(peak[part, r], expected, rtol=1e-5, atol=1e-5)


def test_weight_updates_give_the_reads_of_a_fresh_derivation():
    """A layer whose weights change (fine-tuning) reuses bounds on its peak window loads;
    its reads equal those of a new layer object with the same weights, derived afresh, as
    the weights ramp through the onset of dynamic saturation and back."""
    x = torch.full((3, 128), float(CHIP.input_max))
    x[1, ::2] = 0.0
    updated, fresh = emulator("default", seed=4), emulator("default", seed=4)
    layer, _ = strong_rows_layer(np.arange(32))
    saturated = []
    for weight in (30, 31, 33, 36, 40, 48, 56, 63, 50, 38, 30):
        weight_q = np.zeros((128, 8), dtype=np.int64)
        weight_q[:32] = weight
        weight_q[32:40] = -weight
        layer.weight_q = weight_q
        layer.version += 1
        reads = updated.mac(layer, x)
        copy = dataclasses.replace(layer, weight_q=weight_q.copy())
        torch.testing.assert_close(reads, fresh.mac(copy, x), rtol=0, atol=0)
        saturated.append(updated._derived.peek(layer).saturation is not None)
    assert saturated[0] is False and saturated[7] is True and saturated[-1] is False


def block_diagonal_weights(groups: int, rows: int, cols: int, seed: int) -> np.ndarray:
    """Integer weights of a grouped convolution's matrix: ``groups`` blocks of ``rows x
    cols`` on the diagonal, zero elsewhere."""
    rng = np.random.default_rng(seed)
    w = np.zeros((groups * rows, groups * cols), dtype=np.int64)
    for g in range(groups):
        w[g * rows : (g + 1) * rows, g * cols : (g + 1) * cols] = rng.integers(
            -CHIP.weight_max, CHIP.weight_max + 1, (rows, cols)
        )
    return w


@pytest.mark.parametrize("batch", [1, 40, 300])
def test_block_diagonal_layers_multiply_only_their_blocks_with_the_same_reads(batch):
    """A grouped convolution's runs hold mostly zero weights: the emulator multiplies only
    the nonzero blocks (when that pays for the batch), and its charges are those of the
    whole matmul in float64, its reads those of the whole matmul bit for bit."""
    layer = tiled_layer(CHIP, block_diagonal_weights(12, 72, 16, seed=3))  # 864 x 192
    dense = tiled_layer(CHIP, np.ones((300, 20), dtype=np.int64))
    backend = emulator("default", seed=2)
    x = torch.from_numpy(
        np.random.default_rng(4).integers(0, CHIP.input_max + 1, (batch, 864)).astype(np.float32)
    )
    reads = backend.mac(layer, x)
    derived = backend._derived.peek(layer)
    blocks = derived.blocks
    assert blocks is not None and len(blocks.spans) >= 12 and 4 * blocks.area < blocks.full
    backend.mac(dense, x[:, :300])
    assert backend._derived.peek(dense).blocks is None

    layout = backend.layout(layer)
    xc = layout.chunk_inputs(x)
    charge = torch.empty(xc.shape[0], batch, derived.weight.shape[2])
    blocks.matmul(charge, xc, derived.weight)
    want = np.einsum("rbk,rkc->rbc", xc.double().numpy(), derived.weight.double().numpy())
    np.testing.assert_allclose(charge.numpy(), want, rtol=1e-6, atol=1e-3)

    whole = emulator("default", seed=2)  # the same chip instance and noise sequence
    original = type(blocks).pays
    type(blocks).pays = lambda self, b: False
    try:
        torch.testing.assert_close(whole.mac(layer, x), reads, rtol=0, atol=0)
    finally:
        type(blocks).pays = original
    assert blocks.pays(batch) == (batch > 1)


def test_dynamic_saturation_grows_with_tau_syn():
    # 32 strong rows in consecutive slots; windows of 8, 16, 25 and 50 event slots
    clustered = strong_rows_layer(np.arange(32))
    errors = [compression(*clustered, tau) for tau in (0.32, 0.64, 1.0, 2.0)]
    assert increasing(errors), errors
    assert errors[0] > 0.01 and errors[-1] > 0.3


def test_interleaving_strong_rows_reduces_dynamic_saturation():
    # a window of 16 event slots holds 16 clustered strong rows but only 4 interleaved ones
    clustered = compression(*strong_rows_layer(np.arange(32)), 0.64)
    interleaved = compression(*strong_rows_layer(np.arange(32) * 4), 0.64)
    assert clustered > 0.2
    assert interleaved < 0.02


def test_typical_layers_are_not_dynamically_saturated():
    rng = np.random.default_rng(0)
    weight_q = np.clip(np.round(rng.normal(0, 21, (256, 300))), -63, 63)
    x = torch.from_numpy(rng.integers(0, 16, (20, 256)).astype(np.float32))
    quiet = chip_with(**QUIET)
    layer = tiled_layer(quiet, weight_q)
    for profile in ("default", "custom"):
        reads = emulator(profile, chip=quiet).mac(layer, x)
        exact = get_backend("quantized", quiet, profile).mac(layer, x)
        # without noise and mismatch the emulator is the integer model, up to float rounding
        assert (reads - exact).abs().max() <= 1
        assert (reads == exact).float().mean() > 0.99


def test_soft_saturation_bends_beyond_the_linear_range_and_clamps():
    backend = emulator("default", chip=chip_with(**QUIET))
    layer = tiled_layer(CHIP, np.full((128, 4), 63) * np.array([1, -1, 1, -1]))
    x = torch.arange(0, 32, dtype=torch.float32).unsqueeze(1).repeat(1, 128)
    reads = backend.mac(layer, x).sum(1)
    nominal = backend.gain_per_send * 128 * 63 * torch.arange(32.0)
    linear = nominal <= CHIP.linear_max
    torch.testing.assert_close(reads[linear, 0], nominal[linear].round(), atol=1.0, rtol=0)
    assert (reads[~linear, 0] <= nominal[~linear].round()).all()
    far = nominal > CHIP.linear_max + 20
    assert (reads[far, 0] < nominal[far] - 10).all()
    assert (reads[:, 0].diff() >= 0).all() and (reads[:, 1].diff() <= 0).all()
    assert reads.max() <= CHIP.adc_max and reads.min() >= CHIP.adc_min
    assert reads[-1, 0] > CHIP.linear_max  # soft, not a hard stop at the limit


def test_soft_saturation_is_the_same_for_few_and_many_reads_beyond_the_limit():
    # few reads beyond the limit take the indexed path, many the whole-tensor path
    backend = emulator("default", chip=chip_with(**QUIET))
    weight_q = np.ones((128, 64), dtype=np.int64)
    weight_q[:, [5, 40]] = [63, -63]
    x = torch.full((3, 128), 7.0)
    few = backend.mac(tiled_layer(CHIP, weight_q), x)
    many = backend.mac(tiled_layer(CHIP, weight_q[:, [5, 40]]), x)
    assert (few[..., [5, 40]].abs() > CHIP.linear_max).all()
    torch.testing.assert_close(few[..., [5, 40]], many, rtol=0, atol=0)


def test_same_seed_same_outputs_other_seed_other_fixed_pattern():
    rng = np.random.default_rng(1)
    layer = tiled_layer(CHIP, rng.integers(-63, 64, (200, 300)), 2)
    x = torch.from_numpy(rng.integers(0, 8, (64, 200)).astype(np.float32))
    first, again = emulator("default", seed=7), emulator("default", seed=7)
    runs = [first.mac(layer, x) for _ in range(2)]
    assert torch.equal(runs[0], again.mac(layer, x))
    assert torch.equal(runs[1], again.mac(layer, x))
    assert not torch.equal(runs[0], runs[1])  # fresh noise on every call

    # the fixed pattern shows in the trial mean; chip 7 twice agrees, chip 8 does not
    x_many = x[:1].repeat(256, 1)

    def mean_read(seed):
        return emulator("default", seed=seed).mac(layer, x_many).mean(0)

    same = (mean_read(7) - first.mac(layer, x_many).mean(0)).abs().mean()
    other = (mean_read(8) - mean_read(7)).abs().mean()
    assert other > 3 * same


def test_fixed_pattern_follows_the_physical_placement():
    quiet_noise = chip_with(reference_noise_sigma_lsb=0.0, neuron_offset_sigma_lsb=0.0)
    backend = emulator("default", chip=quiet_noise, seed=3)
    weight_q = np.full((128, 4), 40)
    x = torch.full((1, 128), 10.0)

    def reads(**placement):
        return backend.mac(tiled_layer(quiet_noise, weight_q, **placement), x)[0, 0]

    here = reads(halves=[0], col_offsets=[0])
    assert torch.equal(here, reads(halves=[0], col_offsets=[0]))
    assert not torch.equal(here, reads(halves=[1], col_offsets=[0]))
    assert not torch.equal(here, reads(halves=[0], col_offsets=[100]))
    # a negative weight uses the other row of the pair: other synapses, other mismatch
    negative = backend.mac(tiled_layer(quiet_noise, -weight_q), x)[0, 0]
    assert not torch.equal(-negative, here)


def test_a_batch_is_the_concatenation_of_its_parts_without_noise():
    rng = np.random.default_rng(2)
    backend = emulator("custom", chip=chip_with(reference_noise_sigma_lsb=0.0), seed=4)
    layer = tiled_layer(CHIP, rng.integers(-63, 64, (300, 520)), 3)
    x = torch.from_numpy(rng.integers(0, 32, (12, 300)).astype(np.float32))
    whole = backend.mac(layer, x)
    parts = torch.cat([backend.mac(layer, x[:5]), backend.mac(layer, x[5:])])
    torch.testing.assert_close(whole, parts, rtol=0, atol=0)


def test_reads_are_int8_and_the_fast_normals_give_the_statistics_of_torch_randn():
    layer = tiled_layer(CHIP, np.full((100, 512), 21))
    x = torch.full((400, 100), 15.0)
    fast = emulator("default", seed=5).mac(layer, x)
    fresh = EmulatorBackend(CHIP, CHIP.profile("default"), seed=5, fast_noise=False).mac(layer, x)
    for reads in (fast, fresh):
        assert reads.dtype == torch.float32
        assert torch.equal(reads, reads.round())
        assert reads.min() >= CHIP.adc_min and reads.max() <= CHIP.adc_max
    assert float(fast.std(0).median()) == pytest.approx(float(fresh.std(0).median()), rel=0.05)
    torch.testing.assert_close(fast.mean(0), fresh.mean(0), atol=0.6, rtol=0)


def test_reset_noise_repeats_the_sequence_of_outputs():
    rng = np.random.default_rng(3)
    layer = tiled_layer(CHIP, rng.integers(-63, 64, (200, 300)), 2)
    x = torch.from_numpy(rng.integers(0, 8, (16, 200)).astype(np.float32))
    backend = emulator("default", seed=2)
    first = [backend.mac(layer, x) for _ in range(3)]
    backend.reset_noise()
    again = [backend.mac(layer, x) for _ in range(3)]
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], first[1])


def test_readout_equals_the_documented_formula_on_every_read():
    """The compiled readout (noise, offset, knee, ADC) against the formulas in float64."""
    backend = emulator("default", seed=4)
    rng = np.random.default_rng(4)
    layer = tiled_layer(CHIP, rng.integers(-63, 64, (256, 300)))
    layout = backend.layout(layer)
    fixed = backend._fixed_pattern(layout)
    offset, high, low = fixed.tables  # (runs, width): the run buffers' width (maybe padded)
    runs, width = offset.shape
    # a sample-major buffer (samples, runs, columns) of charges, the runs' inputs and normals
    values = rng.normal(0, 90, (50, runs, width)).astype(np.float32)
    xs = rng.integers(0, 2, (50, runs, layout.n_max)).astype(np.float32)  # sample-major
    normals = rng.standard_normal(values.shape).astype(np.float32)
    # the noise variance per active input of the real columns (the padded ones get none)
    columns = layer.out_features
    variance = rng.uniform(0, 0.5, (runs, columns)).astype(np.float32)
    # the dynamic saturation's loss on two columns
    cols = np.array([1, 5])
    lost = rng.uniform(0, 30, (50, runs, 2)).astype(np.float32)
    out = values.copy()
    tables = (variance, offset, high, low, backend._limits)
    readout.readout_normals(out, xs, normals, cols, lost, *tables)

    active = (xs != 0).sum(2)  # (samples, runs)
    floor = float(backend._limits[3])  # the readout's own variance
    s = np.zeros((50, runs, width))
    s[..., :columns] = np.sqrt(floor + active[..., None] * variance[None].astype(np.float64))
    v = values + offset + normals.astype(np.float64) * s
    v[..., cols] -= lost
    headroom = CHIP.analog.saturation_headroom_lsb
    e_hi = np.clip(v - high, 0, None)
    e_lo = np.clip(low - v, 0, None)
    bent = np.where(v > high, high + headroom * e_hi / (headroom + e_hi), v)
    bent = np.where(v < low, low - headroom * e_lo / (headroom + e_lo), bent)
    expected = np.clip(bent, CHIP.adc_min, CHIP.adc_max)
    assert ((v > high) | (v < low)).mean() > 0.2  # many reads beyond the limits
    # the padded columns are not read: their charges stay
    assert width > columns
    np.testing.assert_array_equal(out[..., columns:], values[..., columns:])
    out, expected = out[..., :columns], expected[..., :columns]
    assert np.array_equal(out, np.round(out))
    # equal to the rounded float64 value, but for float32 rounding next to a half
    near_half = np.abs(expected - np.floor(expected) - 0.5) < 1e-3
    assert np.array_equal(out[~near_half], np.round(expected)[~near_half])
    assert np.abs(out - expected).max() <= 0.5 + 1e-3


def test_cache_follows_the_layer_version():
    backend = emulator("default", chip=chip_with(**QUIET))
    layer = tiled_layer(CHIP, np.full((10, 3), 10))
    x = torch.full((1, 10), 10.0)
    before = backend.mac(layer, x)
    layer.weight_q = -layer.weight_q
    layer.version += 1
    torch.testing.assert_close(backend.mac(layer, x), -before)


def test_characterization_reproduces_the_published_shape():
    backend = emulator("default")
    assert characterization_num_sends(backend, (0, 3, 7)) == 1
    result = characterize(backend, runs=10)
    weights = result.weights
    assert weights[0] == -CHIP.weight_max and weights[-1] == CHIP.weight_max
    zero, three, seven = result.mean
    assert np.abs(zero).max() < 5  # input 0 sends nothing: flat at zero
    for curve, value in ((three, 3), (seven, 7)):
        slope = np.polyfit(weights[40:-40], curve[40:-40], 1)[0]
        assert slope == pytest.approx(0.002 * 128 * value, rel=0.1)
    assert seven[-1] > CHIP.linear_max and seven[0] < CHIP.linear_min  # near saturation
    assert (result.std[1:] > 0.5).all()  # visible error bars


def test_chip_characterize_command_writes_a_png(tmp_path):
    out = tmp_path / "char.png"
    result = CliRunner().invoke(main, ["chip", "characterize", "--runs", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "input 7" in result.output and str(out) in result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chip_measure_command_prints_every_profile():
    result = CliRunner().invoke(main, ["chip", "measure"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["profile", "ota_bias"]
    assert [line.split()[0] for line in lines[1:]] == ["custom", "default"]
    default = lines[2].split()
    assert float(default[4]) == pytest.approx(0.002)
    assert float(default[5]) == pytest.approx(0.002, rel=0.05)
    assert float(default[7]) == pytest.approx(2.0, rel=0.1)


def test_chip_commands_report_user_errors_in_one_line():
    result = CliRunner().invoke(main, ["chip", "measure", "--profile", "fast"])
    assert result.exit_code == 2
    assert "no profile 'fast'" in result.output


def test_compiled_loops_refuse_arrays_that_do_not_fit():
    """The compiled loops do not check bounds per element; they check the shapes up front."""
    reads = np.zeros((4, 2, 3), np.float32)
    none = np.zeros((0, 1, 1), np.float32)
    terms = [np.ones(3, np.float32)] * 3
    with pytest.raises(ValueError, match="do not match"):
        readout.combine(
            reads, none, *terms, np.zeros((0, 0), np.float32), np.zeros((3, 1, 3), np.float32)
        )
    with pytest.raises(ValueError, match="differ in shape"):
        readout.combine(
            reads, reads[:3], *terms, np.zeros((0, 0), np.float32), np.zeros((4, 1, 3), np.float32)
        )
    with pytest.raises(ValueError, match="used reads do not match"):
        readout.combine(
            reads, none, *terms, np.ones((3, 3), np.float32), np.zeros((4, 1, 3), np.float32)
        )
    xs = np.zeros((4, 2, 5), np.float32)  # sample-major, like the reads
    table = np.zeros(2**16, np.float32)
    variance = np.zeros((2, 3), np.float32)
    tables = (np.zeros((2, 3), np.float32),) * 3
    limits = np.array([1.0, -128.0, 127.0, 0.5], np.float32)
    empty = np.zeros(0, np.int64), np.zeros(0, np.float32)  # no tail values
    no_loss = np.zeros(0, np.int64), np.zeros((4, 2, 0), np.float32)
    short = np.zeros(23, np.uint16)
    with pytest.raises(ValueError, match="bits"):
        args = (variance, *tables, limits)
        readout.readout_table(reads, xs, short, table, *empty, *no_loss, *args)
    bits = np.zeros(24, np.uint16)
    with pytest.raises(ValueError, match="noise variances"):
        args = (variance[:1], *tables, limits)
        readout.readout_table(reads, xs, bits, table, *empty, *no_loss, *args)
    with pytest.raises(ValueError, match="inputs do not match"):  # run-major inputs
        args = (variance, *tables, limits)
        readout.readout_table(
            reads, xs.transpose(1, 0, 2).copy(), bits, table, *empty, *no_loss, *args
        )
    with pytest.raises(ValueError, match="saturating column"):
        loss = np.array([3]), np.zeros((4, 2, 1), np.float32)
        readout.readout_table(reads, xs, bits, table, *empty, *loss, variance, *tables, limits)
    readout.readout_table(reads, xs, bits, table, *empty, *no_loss, variance, *tables, limits)


def test_derived_charges_equal_the_formulas():
    """The compiled derivation of a layer version against the formulas in float64."""
    rng = np.random.default_rng(6)
    runs, n, width, padded, rows = 3, 20, 7, 16, 55
    weights = rng.integers(-63, 64, (rows, width)).astype(np.int16)
    # each run's positions pick weight rows; the last run has 5 padded positions (row 55)
    gather = rng.permutation(rows + 5)[: runs * n].reshape(runs, n).astype(np.int64)
    gather[2, -5:] = rows
    gather[gather > rows] = rows
    synapse = rng.uniform(0.8, 1.2, (2, runs, n, width)).astype(np.float32)
    neuron_gain = rng.uniform(0.9, 1.1, (runs, width)).astype(np.float32)
    factors = np.array([0.004 * 3, 0.25, 3], np.float32)
    weight2 = rng.uniform(0, 1e-3, runs).astype(np.float32)
    charges = np.empty((2, runs, n, width), np.float32)
    charge = np.empty((runs, n, width), np.float32)
    weight = np.full((runs, n, padded), np.nan, np.float32)
    variance = np.full((runs, width), np.nan, np.float32)
    out = (charges, charge, weight, variance)
    tables = (synapse, neuron_gain, factors, weight2)
    assert readout.derive_charges(weights, gather, *tables, *out, np.zeros((0, 0, 0))) == 0.0

    w = np.concatenate([weights, np.zeros((1, width))])[gather].astype(np.float64)
    plus, minus = np.maximum(w, 0) * synapse[0], np.maximum(-w, 0) * synapse[1]
    np.testing.assert_allclose(charges[0], plus, rtol=1e-6)
    np.testing.assert_allclose(charges[1], minus, rtol=1e-6)
    np.testing.assert_allclose(charge, plus - minus, rtol=1e-6, atol=1e-6)
    gain = neuron_gain[:, None, :] * float(factors[0])
    np.testing.assert_allclose(weight[..., :width], (plus - minus) * gain, rtol=1e-5, atol=1e-6)
    assert np.all(weight[..., width:] == 0)
    expected = ((w * w).sum(1) * weight2[:, None] + 0.25) * 3  # (runs, width)
    np.testing.assert_allclose(variance, expected, rtol=1e-6)
    # against an earlier version's charges: the largest change of one charge
    before = charge + rng.normal(0, 1, charge.shape).astype(np.float32)
    drift = readout.derive_charges(weights, gather, *tables, *out, before)
    assert drift == pytest.approx(np.abs(charge - before).max(), rel=1e-6)
    none = np.zeros((0, 0, 0), np.float32)
    with pytest.raises(ValueError, match="do not match"):
        readout.derive_charges(weights, gather, synapse[:, :2], *tables[1:], *out, none)
    with pytest.raises(ValueError, match="outside the weights"):
        readout.derive_charges(weights, gather + rows, *tables, *out, none)
    with pytest.raises(ValueError, match="earlier charges"):
        readout.derive_charges(weights, gather, *tables, *out, before[:1])


def test_saturation_loss_equals_the_knee_formula():
    """The compiled dynamic-saturation loss against the knee in float64: each part's
    excess ``e`` beyond its linear load loses ``e**2 / (e + headroom) / kappa``."""
    rng = np.random.default_rng(7)
    runs, batch, width, headroom = 2, 5, 9, 0.75
    cols = np.array([1, 4, 8])
    signed = rng.normal(0, 30, (runs, batch, 3)).astype(np.float32)
    total = (np.abs(signed) + rng.uniform(0, 40, signed.shape)).astype(np.float32)
    charge = np.concatenate([signed, total], axis=2)
    kappa = rng.uniform(0.0, 0.06, (2, runs, width)).astype(np.float32)
    kappa[0, 0, 4] = 0.0  # a part that never saturates
    inv_kappa = np.where(kappa > 0, 1.0 / np.maximum(kappa, 1e-30), 0.0).astype(np.float32)
    lost = np.full((batch, runs, 3), np.nan, np.float32)
    readout.saturation_loss(cols, charge, kappa, inv_kappa, headroom, lost)

    parts = [(total + signed) / 2.0, (total - signed) / 2.0]
    expected = 0.0
    for p, sign in ((0, 1.0), (1, -1.0)):
        k = kappa[p][:, None, cols].astype(np.float64)  # (runs, 1, 3)
        excess = np.maximum(parts[p] * k - 1.0, 0.0)
        inv = np.where(k > 0, 1.0 / np.maximum(k, 1e-30), 0.0)
        expected = expected + sign * excess**2 / (excess + headroom) * inv
    assert np.abs(expected).max() > 1.0  # some reads do saturate
    np.testing.assert_allclose(lost, expected.transpose(1, 0, 2), rtol=1e-4, atol=1e-4)
    # the charges padded to the matmul's width: the padding is not read
    padded = np.concatenate([charge, np.full((runs, batch, 10), np.nan, np.float32)], axis=2)
    again = np.full_like(lost, np.nan)
    readout.saturation_loss(cols, padded, kappa, inv_kappa, headroom, again)
    np.testing.assert_array_equal(again, lost)
    with pytest.raises(ValueError, match="do not match the columns"):
        readout.saturation_loss(cols[:2], charge, kappa, inv_kappa, headroom, lost)
    with pytest.raises(ValueError, match="do not match the columns"):
        readout.saturation_loss(cols, charge[..., :5], kappa, inv_kappa, headroom, lost)


def test_saturating_columns_are_those_whose_bound_passes_the_linear_load():
    rng = np.random.default_rng(8)
    xs = rng.integers(0, 32, (6, 3, 10)).astype(np.float32)  # (samples, runs, inputs)
    peak = rng.uniform(0, 1, (2, 3, 12)).astype(np.float32)
    spread = rng.uniform(0, 0.2, (2, 3, 12)).astype(np.float32)
    factors = np.array([31, 20.0], np.float32)
    found = readout.saturating_columns(xs, peak, spread, factors)
    largest = xs.sum(2).max(0).reshape(1, 3, 1)
    bound = np.minimum(31 * peak.astype(np.float64), largest * spread)
    expected = np.nonzero((bound > 20.0).any(axis=(0, 1)))[0]
    assert 0 < expected.size < 12
    np.testing.assert_array_equal(found, expected)


def test_synapse_gains_are_those_of_each_positions_physical_rows():
    """Position ``k`` of column ``c`` in run ``r`` sits on row pair ``row_base + slot``; its
    - part on the pair's first row, its + part on the last (indexing the instance's table
    directly, in float64-free integer arithmetic)."""
    backend = emulator("default", seed=5)
    rng = np.random.default_rng(5)
    bounds = [(0, 70), (70, 128)]
    slots = np.concatenate([rng.permutation(b - a) for a, b in bounds])
    layer = tiled_layer(CHIP, rng.integers(-63, 64, (128, 40)), row_bounds=bounds, row_slot=slots)
    layout = backend.layout(layer)
    gains = backend._synapse_gains(layout)  # (2, R, n, C)
    table = backend.instance.synapse_gain.numpy()
    pair = CHIP.rows_per_signed_weight
    half, neuron = layout.half.numpy(), layout.neuron.numpy()
    base, slot = layout.row_base.numpy(), layout.slot.numpy()
    for r in range(layout.n_chunks):
        for k in range(layout.n_max):
            row = pair * (slot[r, k] + base[r])  # (C,)
            np.testing.assert_array_equal(gains[1, r, k], table[half[r], row, neuron[r]])
            np.testing.assert_array_equal(gains[0, r, k], table[half[r], row + pair - 1, neuron[r]])
    assert not np.array_equal(gains[0], gains[1])
