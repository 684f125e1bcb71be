"""``anacc report``: mapping and cost figures worked out by hand, the error budget against
backend differences computed here, the JSON schema and the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
import numpy as np
import onnx
import pytest
import torch
from anacc.compiler.chip import load_chip
from anacc.compiler.cost import ACTIVE_ASSUMED, ACTIVE_MEASURED, program_cost
from anacc.runtime.analog import LayerTrace, analog_forward, rows_of
from anacc.runtime.backends import get_backend
from anacc.runtime.error_budget import noise_free_chip, noise_free_emulator
from anacc.runtime.report import build_report, render_text, vectors_per_sample
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import anacc

MODELS = Path(__file__).resolve().parents[1] / "models"


def _save_model(
    node: onnx.NodeProto, x_shape, y_shape, inits: dict[str, np.ndarray], path: Path
) -> Path:
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *y_shape])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def dense_300x600(tmp_path_factory) -> anacc.Program:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((600, 300)).astype(np.float32)
    path = tmp_path_factory.mktemp("dense") / "dense.onnx"
    node = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)
    _save_model(node, (300,), (600,), {"w": w}, path)
    calib = {"x": rng.uniform(0, 1, (64, 300)).astype(np.float32)}
    return anacc.compile(path, calib=calib)


@pytest.fixture(scope="module")
def conv_split(tmp_path_factory) -> tuple[anacc.Program, np.ndarray]:
    """Conv 20 -> 8 channels, 3x3, no padding, on 6x6: 4x4 output positions, 180 features."""
    rng = np.random.default_rng(1)
    w = (0.2 * rng.standard_normal((8, 20, 3, 3))).astype(np.float32)
    path = tmp_path_factory.mktemp("conv") / "conv.onnx"
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])
    _save_model(node, (20, 6, 6), (8, 4, 4), {"w": w}, path)
    x = rng.standard_normal((48, 20, 6, 6)).astype(np.float32)
    return anacc.compile(path, calib={"x": x[:32]}, signed="split"), x


@pytest.fixture(scope="module")
def mlp() -> anacc.Program:
    return anacc.compile(
        MODELS / "digits_mlp.onnx", calib=str(MODELS / "data" / "digits_calib.npz")
    )


@pytest.fixture(scope="module")
def mlp_test() -> dict[str, np.ndarray]:
    with np.load(MODELS / "data" / "digits_test.npz") as npz:
        return {k: npz[k][:96] for k in npz.files}


def test_bss2_geometry_assumed_by_the_hand_worked_numbers() -> None:
    chip = load_chip("bss2")
    assert (chip.signed_inputs_per_run, chip.outputs_per_run, chip.halves) == (128, 256, 2)
    assert (chip.overhead_us_per_run, chip.clock_mhz, chip.chip_power_w) == (35.0, 125.0, 0.3)
    assert chip.weight_write_us_per_load == 1000.0
    assert chip.profile("default").wait_cycles == 5


def test_dense_300x600_tiles_utilization_runs_and_time_by_hand(dense_300x600) -> None:
    prog = dense_300x600
    cost = program_cost(prog, vectors_per_sample(prog), batch_size=10)
    (layer,) = cost.layers
    # ceil(300/128) = 3 row chunks of 100 rows, ceil(600/256) = 3 column chunks of 200.
    assert (layer.row_chunks, layer.col_chunks, layer.tiles, layer.copies) == (3, 3, 9, 1)
    # Every tile owns its 200 neurons: one tile per half, two per load, five loads. A load's
    # two tiles fire in one run (their own halves): five runs for the one input vector.
    assert layer.loads == (0, 1, 2, 3, 4) and cost.loads == 5
    assert (layer.vectors_per_sample, layer.parts, layer.runs_per_cycle) == (1, 1, 5)
    assert layer.runs_per_sample == cost.runs_per_sample == 5
    assert layer.lower_bound_runs == 4  # 3 chunks x 600 neurons over 512; tiles of 200 need 5
    assert (layer.rows_used, layer.columns_used) == (900, 1800)
    assert layer.utilization == pytest.approx(300 * 600 / (1800 * 128), rel=1e-12)
    # A run sends the events of each distinct (copy, row chunk) it holds once, to both halves.
    tiles = prog.layers[layer.name].analog.tiles
    events = {
        run: 100 * len({t.rows for t in tiles if t.run == run}) for run in {t.run for t in tiles}
    }
    sends = layer.num_sends
    time_us = sum(35.0 + e * sends * 5 / 125.0 for e in events.values())
    assert sum(events.values()) == 600  # loads mix chunks: (0,0), (0,1), (1,1), (2,2), (2)
    assert layer.active_inputs_source == ACTIVE_ASSUMED
    assert layer.time_us_per_sample == pytest.approx(time_us, rel=1e-12)
    assert layer.energy_uj_per_sample == pytest.approx(0.3 * time_us, rel=1e-12)
    # Five loads rewritten per batch of 10 samples, 1000 us each.
    assert cost.weight_write_us_per_sample == pytest.approx(5 * 1000.0 / 10)
    assert cost.time_us_per_sample == pytest.approx(time_us + 500.0)
    assert cost.energy_uj_per_sample == pytest.approx(0.3 * (time_us + 500.0))
    assert cost.weight_write_us_once == 0.0
    assert cost.utilization == pytest.approx(300 * 600 / (5 * 2 * 128 * 256))
    # the system adds the host link per run and the system's power over its time
    assert cost.link_us_per_sample == pytest.approx(5 * 10.0)
    system = time_us + 500.0 + 50.0
    assert cost.system_time_us_per_sample == pytest.approx(system)
    assert cost.system_energy_uj_per_sample == pytest.approx(0.3 * (time_us + 500.0) + 5 * system)


def test_single_load_writes_weights_once_not_per_sample(mlp) -> None:
    cost = program_cost(mlp, vectors_per_sample(mlp), batch_size=1)
    assert cost.loads == 1
    assert cost.weight_write_us_per_sample == 0.0
    assert cost.weight_write_us_once == 1000.0
    assert cost.time_us_per_sample == pytest.approx(sum(c.time_us_per_sample for c in cost.layers))


def test_conv_runs_per_sample_and_measured_time_by_hand(conv_split) -> None:
    prog, x = conv_split
    (layer,) = prog.layers.values()
    assert layer.signed == "split"
    report = build_report(prog, {"x": x}, seed=3)
    (c,) = report.cost.layers
    assert (c.op, c.kernel, c.in_features, c.out_features) == ("conv", (3, 3), 180, 8)
    # (6 - 3 + 1)^2 = 16 output positions x ceil(180/128) = 2 row chunks x 2 parts (split):
    # the two chunks of 90 rows fire together, one on each half: 32 runs, the chip's bound.
    assert (c.vectors_per_sample, c.row_chunks, c.parts, c.copies) == (16, 2, 2, 1)
    assert c.runs_per_sample == c.lower_bound_runs == 16 * 2
    # Mean non-zero chip inputs per run, per part and row chunk, computed here.
    rows = rows_of(layer, torch.from_numpy(x))
    scale = layer.input_scale
    parts = [
        np.clip(np.round(np.maximum(s * rows.numpy().astype(np.float64), 0) / scale), 0, 31)
        for s in (1, -1)
    ]
    chunks = layer.analog.row_chunks
    expected = [[float((p[:, a:b] > 0).sum(1).mean()) for a, b in chunks] for p in parts]
    assert c.active_inputs_source == ACTIVE_MEASURED
    assert np.allclose(c.active_inputs, expected, rtol=1e-9)
    sends = layer.analog.num_sends
    # each run sends both chunks' events (the mean over the two parts)
    time_us = 32 * 35.0 + 16 * sum(n * sends * 5 / 125.0 for part in expected for n in part)
    assert c.time_us_per_sample == pytest.approx(time_us, rel=1e-9)


def test_grouped_conv_counts_only_its_diagonal_blocks_as_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)  # 8 -> 8 channels, 2 groups
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], group=2)
    path = _save_model(node, (8, 5, 5), (8, 3, 3), {"w": w}, tmp_path / "grouped.onnx")
    prog = anacc.compile(path, calib={"x": rng.uniform(0, 1, (16, 8, 5, 5)).astype(np.float32)})
    (c,) = program_cost(prog, vectors_per_sample(prog)).layers
    assert (c.in_features, c.out_features, c.vectors_per_sample) == (72, 8, 9)
    # one copy of 72 rows fits a half: two copies per run, 9 positions in 5 runs
    assert (c.copies, c.runs_per_sample) == (2, 5)
    assert c.weights == 2 * 8 * 4 * 3 * 3  # the zero blocks are no weights
    assert c.utilization == pytest.approx(2 * 288 / (2 * 8 * 128), rel=1e-12)


def test_noise_free_emulator_keeps_the_chip_instance_and_drops_all_noise() -> None:
    chip = load_chip("bss2")
    profile = chip.profile("default")
    quiet = noise_free_chip(chip)
    terms = quiet.profile("default").noise_terms
    assert (terms.readout, terms.per_event, terms.per_event_weight2) == (0.0, 0.0, 0.0)
    assert quiet.profile("default").gain_per_send == profile.gain_per_send
    a = noise_free_emulator(chip, profile, seed=5)
    b = get_backend("emulator", chip, profile, seed=5)
    for field in ("neuron_gain", "neuron_offset", "synapse_gain", "saturation_high"):
        assert torch.equal(getattr(a.instance, field), getattr(b.instance, field))


def _relative(a: np.ndarray, b: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(ref))


def test_error_budget_parts_equal_backend_differences_computed_here(mlp, mlp_test) -> None:
    seed = 7
    report = build_report(mlp, mlp_test, seed=seed, batch_size=256)
    chip, profile = mlp.chip, mlp.chip.profile(mlp.profile)
    ideal = get_backend("ideal", chip, profile)
    quant = get_backend("quantized", chip, profile)
    emu = get_backend("emulator", chip, profile, seed=seed)
    quiet = noise_free_emulator(chip, profile, seed)
    # One batch: the report calls the emulator once per layer in step order, as here.
    x = torch.from_numpy(mlp_test["input"])
    for budget, layer in zip(report.budget, mlp.layers.values(), strict=True):
        assert budget.name == layer.name and budget.vectors == x.shape[0]
        y = {}
        reads = {}
        for key, backend in (("i", ideal), ("q", quant), ("f", quiet), ("e", emu)):
            trace = LayerTrace()
            y[key] = analog_forward(layer, x, backend, trace=trace).numpy().astype(np.float64)
            reads[key] = torch.stack(trace.adc).numpy() if trace.adc else None
        e = budget.error
        assert e.quantization == pytest.approx(_relative(y["q"], y["i"], y["i"]), rel=1e-6)
        assert e.fixed_pattern == pytest.approx(_relative(y["f"], y["q"], y["i"]), rel=1e-6)
        assert e.noise == pytest.approx(_relative(y["e"], y["f"], y["i"]), rel=1e-6)
        assert e.total == pytest.approx(_relative(y["e"], y["i"], y["i"]), rel=1e-6)
        r = reads["e"]
        beyond = (r > chip.linear_max) | (r < chip.linear_min)
        mask = beyond.any(axis=(0, 2))
        sat = float(np.linalg.norm((y["e"] - y["i"])[mask]) / np.linalg.norm(y["i"]))
        assert e.saturation == pytest.approx(sat, rel=1e-6, abs=1e-12)
        assert budget.saturated_output_rate == pytest.approx(mask.mean())
        flat = r.reshape(-1)
        for q, got in ((1, budget.adc.p1), (50, budget.adc.p50), (99, budget.adc.p99)):
            assert got == np.percentile(flat, q, method="inverted_cdf")
        assert budget.adc.max_abs == np.abs(flat).max()
        assert budget.adc.beyond_linear_rate == pytest.approx(beyond.mean())
        limits = (flat == chip.adc_min) | (flat == chip.adc_max)
        assert budget.adc.at_limit_rate == pytest.approx(limits.mean())
        noise = ((r - reads["f"]) ** 2).sum()
        assert budget.snr_db == pytest.approx(10 * math.log10((reads["f"] ** 2).sum() / noise))
        x = torch.relu(torch.from_numpy(y["i"].astype(np.float32)))
    assert set(report.accuracy) == {"ideal", "quantized", "emulator"}
    assert all(0.5 < v <= 1.0 for v in report.accuracy.values())


def test_budget_of_a_later_layer_is_fed_the_ideal_activations(mlp, mlp_test) -> None:
    """The second layer's quantization error does not change when the first layer is made
    much worse: it only ever sees the ideal activations."""
    base = build_report(mlp, mlp_test).budget
    first = next(iter(mlp.layers.values()))
    saved = first.analog.num_sends
    try:
        first.analog.num_sends = 1
        first.analog.version += 1
        worse = build_report(mlp, mlp_test).budget
    finally:
        first.analog.num_sends = saved
        first.analog.version += 1
    assert worse[0].error.quantization > 1.2 * base[0].error.quantization
    assert worse[1].error.quantization == base[1].error.quantization


def _check_types(obj: dict, spec: dict) -> None:
    for key, kind in spec.items():
        assert key in obj, key
        assert isinstance(obj[key], kind), (key, obj[key])


def test_json_schema_keys_and_types(mlp, mlp_test) -> None:
    data = build_report(mlp, mlp_test, max_samples=64, seed=1).to_json()
    text = json.dumps(data, allow_nan=False)
    data = json.loads(text)
    _check_types(
        data,
        {
            "format": str,
            "format_version": int,
            "layers": list,
            "totals": dict,
            "error_budget": list,
            "chip": dict,
            "profile": dict,
            "accuracy": dict,
            "data": dict,
            "source": dict,
            "options": dict,
            "seed": int,
        },
    )
    assert data["format"] == "anacc-report"
    assert data["data"]["samples"] == 64 and data["data"]["total_samples"] == 96
    layer_spec = {
        "name": str,
        "op": str,
        "in_features": int,
        "out_features": int,
        "tile_grid": list,
        "tiles": int,
        "loads": list,
        "rows_used": int,
        "columns_used": int,
        "weights": int,
        "utilization": float,
        "vectors_per_sample": int,
        "parts": int,
        "copies": int,
        "runs_per_cycle": int,
        "lower_bound_runs": int,
        "runs_per_sample": int,
        "num_sends": int,
        "input_scale": float,
        "input_offset": float,
        "weight_scale": list,
        "signed": str,
        "signed_reason": str,
        "row_order": str,
        "active_inputs": list,
        "active_inputs_source": str,
        "time_us_per_sample": float,
        "energy_uj_per_sample": float,
        "tile_table": list,
    }
    for layer in data["layers"]:
        _check_types(layer, layer_spec)
        assert layer["op"] in ("dense", "conv")
    assert [lay["in_features"] for lay in data["layers"]] == [64, 128]
    _check_types(
        data["totals"],
        {
            "tiles": int,
            "loads": int,
            "runs_per_sample": int,
            "time_us_per_sample": float,
            "energy_uj_per_sample": float,
            "utilization": float,
            "batch_size": int,
        },
    )
    assert data["totals"]["tiles"] == sum(lay["tiles"] for lay in data["layers"])
    for entry in data["error_budget"]:
        _check_types(
            entry,
            {"name": str, "vectors": int, "adc": dict, "snr_db": float, "relative_error": dict},
        )
        assert set(entry["relative_error"]) == {
            "quantization",
            "fixed_pattern",
            "noise",
            "saturation",
            "total",
        }
        hist = entry["adc"]["histogram"]
        assert hist["low"] == -128 and len(hist["counts"]) == 256
        layer = next(lay for lay in data["layers"] if lay["name"] == entry["name"])
        reads = entry["vectors"] * layer["parts"] * layer["tile_grid"][0] * layer["out_features"]
        assert sum(hist["counts"]) == entry["adc"]["reads"] == reads
    assert set(data["accuracy"]) == {"ideal", "quantized", "emulator"}
    _check_types(data["chip"], {"name": str, "adc_range": list, "linear_range": list})
    _check_types(data["profile"], {"name": str, "wait_cycles": int, "gain_per_send": float})


def test_json_without_data_has_null_measurements(mlp) -> None:
    data = json.loads(json.dumps(build_report(mlp).to_json(), allow_nan=False))
    assert data["error_budget"] is None and data["accuracy"] is None and data["data"] is None
    assert all(lay["active_inputs_source"] == ACTIVE_ASSUMED for lay in data["layers"])


def test_text_report_lists_layers_totals_and_budget(mlp, mlp_test) -> None:
    text = render_text(build_report(mlp, mlp_test, max_samples=32))
    for name in mlp.layers:
        assert text.count(name) >= 3  # mapping, encoding and budget tables
    assert "Totals (time placement): " in text and "on 1 chip load(s)" in text
    assert "System (host link" in text and "Chip only: latency" in text
    assert "Top-1 accuracy: ideal" in text and "SNR dB" in text


def _cli() -> click.Group:
    from anacc.cli_report import report_cmd

    @click.group()
    def group() -> None:
        """Test group."""

    group.add_command(report_cmd)
    return group


@pytest.fixture(scope="module")
def mlp_file(mlp, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prog") / "mlp.anacc"
    mlp.save(path)
    return path


def test_cli_text_and_json(mlp_file: Path, tmp_path: Path) -> None:
    data = str(MODELS / "data" / "digits_test.npz")
    runner = CliRunner()
    result = runner.invoke(_cli(), ["report", str(mlp_file)])
    assert result.exit_code == 0, result.output
    assert "Mapping and cost per sample" in result.stdout
    args = ["report", str(mlp_file), "--data", data, "--json", "--max-samples", "40"]
    result = runner.invoke(_cli(), [*args, "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert parsed["data"]["samples"] == 40 and parsed["error_budget"] is not None
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "{bad}"], "not a readable .npz"),
        (["--data", "{missing}"], "no such data file"),
        (["--html", "{prog}"], "refusing to overwrite"),
    ],
)
def test_cli_user_errors_are_one_line_with_exit_code_2(
    mlp_file: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    before = mlp_file.read_bytes()
    paths = {"bad": bad, "missing": tmp_path / "missing.npz", "prog": mlp_file}
    extra = [a.format(**paths) for a in extra]
    result = CliRunner().invoke(_cli(), ["report", str(mlp_file), *extra])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert mlp_file.read_bytes() == before
