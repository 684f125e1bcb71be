"""``anacc tune``: chip writer round trip, search space, trial function, and searches on a
local Ray Tune engine (one Ray session shared by the module's engine tests)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from anacc.compiler.chip import Profile, load_chip
from anacc.compiler.chip_writer import chip_to_toml, toml_dumps, write_chip
from anacc.compiler.cost import program_cost
from anacc.compiler.datafile import match_inputs
from anacc.runtime.report import vectors_per_sample
from anacc.runtime.session import run_program
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import anacc
from anacc.api import Program
from anacc.cli import main
from anacc.cli_tune import tune_cmd
from anacc.errors import OptionError
from anacc.tune.config import (
    baseline_points,
    compile_options,
    default_config,
    same_params,
    tuned_chip,
)
from anacc.tune.engine import is_this_machine, ray_session
from anacc.tune.pareto import best_record, pareto_front
from anacc.tune.records import TRIALS_FILE, TrialRecord, read_records
from anacc.tune.report import TuneReport
from anacc.tune.report_html import render_html
from anacc.tune.settings import TuneSettings, settings_difference
from anacc.tune.space import search_space
from anacc.tune.trial import evaluate_config, trial_context

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "mnist1d_mlp.onnx"
CALIB = ROOT / "models" / "data" / "mnist1d_calib.npz"
VAL_SAMPLES = 300
SEEDS = 2

HAVE_ENGINE = all(importlib.util.find_spec(m) is not None for m in ("ray", "optuna"))
needs_engine = pytest.mark.skipif(not HAVE_ENGINE, reason="needs the tune extra (ray, optuna)")
# One xdist worker runs every engine test, so the module's Ray session starts once.
one_ray_session = pytest.mark.xdist_group("ray-tune")


@pytest.fixture(scope="module")
def chip():
    return load_chip("bss2")


@pytest.fixture(scope="module")
def val_path(tmp_path_factory) -> Path:
    """A held-out slice of the training split (never the test split)."""
    with np.load(ROOT / "models" / "data" / "mnist1d_train.npz") as d:
        arrays = {k: d[k][-VAL_SAMPLES:] for k in d.files}
    path = tmp_path_factory.mktemp("data") / "val.npz"
    np.savez(path, **arrays)
    return path


def plain_accuracies(program, val_path: Path) -> list[float]:
    with np.load(val_path) as d:
        data = match_inputs({k: d[k] for k in d.files}, program.inputs, "val")
    return [run_program(program, data, backend="emulator", seed=s).accuracy for s in range(SEEDS)]


# -- chip writer ------------------------------------------------------------------------------


def test_written_chip_with_a_tuned_profile_loads_back_equal(chip, tmp_path):
    config = {"ota_bias": 123, "tau_syn_us": 1.2345678901234567, "wait_cycles": 7}
    spec = tuned_chip(chip, config)
    path = write_chip(spec, tmp_path / "c.toml", header="line one\nline two")
    back = load_chip(path)
    assert back == spec
    assert set(back.profiles) == {"default", "custom", "tuned"}
    # gain per send from the published reference (0.002 at OTA 450, tau 0.32 us), in float64
    assert back.profile("tuned").gain_per_send == pytest.approx(
        0.002 * (123 / 450) * (1.2345678901234567 / 0.32), rel=1e-12
    )
    assert path.read_text().startswith("# line one\n# line two\n")


@settings(max_examples=40, deadline=None)
@given(
    name=st.text(min_size=1, max_size=12),
    description=st.text(max_size=30),
    tau=st.floats(min_value=0.3, max_value=20.0),
    ota=st.integers(min_value=30, max_value=600),
)
def test_chip_toml_round_trips_odd_names_descriptions_and_floats(name, description, tau, ota):
    base = load_chip("bss2")
    profile = Profile(name, description, ota, tau, 5, base.analog)
    spec = dataclasses.replace(base, description=description, profiles={name: profile})
    assert load_chip_text(chip_to_toml(spec)) == spec


def load_chip_text(text: str):
    from anacc.compiler.chip import ChipSpec

    return ChipSpec.from_dict(tomllib.loads(text))


def test_toml_values_match_the_toml_reader():
    data = {
        "s": 'quote " backslash \\ tab \t nl \n bell \x07 del \x7f é',
        "i": -3,
        "b": True,
        "f": [1e-300, -0.0, 1.5e20, 0.1],
        "t": {"odd key": {"x": 1}, "empty": {}},
    }
    assert tomllib.loads(toml_dumps(data)) == data


# -- search space -----------------------------------------------------------------------------


def test_search_space_follows_the_chip_description(chip):
    analog = dataclasses.replace(
        chip.analog, ota_bias_range=(100, 200), tau_syn_us_range=(0.5, 2.0)
    )
    other = dataclasses.replace(chip, analog=analog, num_sends_max=2)
    space = search_space(other)
    ota = space.dimension("ota_bias")
    assert (ota.kind, ota.low, ota.high, ota.log) == ("int", 100, 200, True)
    assert (space.dimension("tau_syn_us").low, space.dimension("tau_syn_us").high) == (0.5, 2.0)
    gain = space.dimension("gain_factor")
    assert (gain.low, gain.high) == (0.5, 2.0)
    one_send = search_space(dataclasses.replace(chip, num_sends_max=1))
    assert one_send.dimension("gain_factor").fixed
    assert "gain_factor" not in {d.name for d in one_send.searched}
    # the baselines are the named profiles where the space holds them
    assert set(baseline_points(chip, search_space(chip))) == {"default", "custom"}
    assert set(baseline_points(other, space)) == {"custom"}  # default: OTA 450


def test_space_overrides_narrow_and_pin_dimensions(chip):
    space = search_space(
        chip, {"wait_cycles": 5, "row_order": ["interleaved"], "scale_method": ["max", "mse"]}
    )
    assert space.dimension("wait_cycles").fixed_value == 5
    assert space.dimension("row_order").fixed_value == "interleaved"
    # without the percentile method the percentile is not searched either
    assert space.dimension("scale_percentile").fixed
    full = space.full(
        {
            "ota_bias": 40,
            "tau_syn_us": 1.0,
            "gain_factor": 1.0,
            "scale_method": "mse",
            "signed": "shift",
        }
    )
    assert full["wait_cycles"] == 5 and full["weight_scale"] == "column"
    assert compile_options(full).scale == "mse"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"ota_bias": [400, 60]}, "inverted"),
        ({"ota_bias": [10, 60]}, "leaves the allowed 30..600"),
        ({"wait_cycles": [1.5, 4]}, "must be an integer"),
        ({"gain_factor": [0.01, 2]}, "leaves the allowed"),
        ({"row_order": ["sideways"]}, "no choice 'sideways'"),
        ({"row_order": []}, "must be one of"),
        ({"otabias": 3}, "unknown dimension 'otabias'"),
        (
            {
                "ota_bias": 100,
                "tau_syn_us": 1.0,
                "wait_cycles": 5,
                "gain_factor": 1.0,
                "scale_method": "max",
                "row_order": "natural",
                "signed": "auto",
            },
            "every dimension is fixed",
        ),
    ],
)
def test_malformed_space_raises_one_option_error(chip, overrides, message):
    with pytest.raises(OptionError, match=message):
        search_space(chip, overrides, "space.json")


def test_inverted_chip_range_is_a_clear_error(chip):
    analog = dataclasses.replace(chip.analog, wait_cycles_range=(50, 5))
    with pytest.raises(OptionError, match="analog.wait_cycles_range"):
        search_space(dataclasses.replace(chip, analog=analog))


# -- one trial, the Pareto front ----------------------------------------------------------------


def test_trial_of_a_named_profile_matches_compiling_that_profile(chip, val_path):
    settings = TuneSettings(
        model=MODEL,
        val=val_path,
        chip=chip,
        space=search_space(chip),
        calib=CALIB,
        seeds=SEEDS,
    )
    ctx = trial_context(settings)
    result = evaluate_config(default_config(chip.profile("custom")), ctx, MODEL)
    program = anacc.compile(MODEL, calib=CALIB, profile="custom")
    expected = plain_accuracies(program, val_path)
    assert result["accuracies"] == expected
    assert result["accuracy"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert result["num_sends"] == {n: lay.analog.num_sends for n, lay in program.layers.items()}
    # measured active inputs can only shorten the event trains of the all-active bound
    bound = program_cost(program, vectors_per_sample(program)).energy_uj_per_sample
    assert 0 < result["energy_uj"] <= bound
    assert result["gain_per_send"] == chip.profile("custom").gain_per_send


def record(number, accuracy, energy, std=0.0):
    return TrialRecord(
        number=number,
        status="ok",
        params={},
        config={},
        session=1,
        trial_id=str(number),
        accuracy=accuracy,
        accuracy_std=std,
        energy_uj=energy,
    )


def test_pareto_front_and_recommendation():
    records = [
        record(0, 0.90, 10.0),
        record(1, 0.95, 20.0, std=0.02),
        record(2, 0.94, 12.0),
        record(3, 0.93, 15.0),  # dominated by 2
        record(4, 0.95, 25.0),  # dominated by 1
        TrialRecord(5, "error", {}, {}, 1, "5", error="boom"),
    ]
    # brute force: not dominated in (higher accuracy, lower energy)
    assert [r.number for r in pareto_front(records)] == [0, 2, 1]
    assert best_record(records, "accuracy").number == 1
    # within one std (0.02) of the most accurate: the cheapest front member, trial 2
    assert best_record(records, "accuracy-energy").number == 2


def test_torn_last_line_of_the_trial_log_is_dropped(tmp_path):
    good = record(0, 0.9, 1.0)
    (tmp_path / TRIALS_FILE).write_text(json.dumps(good.to_dict()) + '\n{"number": 1, "st')
    assert read_records(tmp_path) == [good]


# -- the engine -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_engine():
    """One local Ray session for the module; anacc's searches use it instead of their own."""
    if not HAVE_ENGINE:
        pytest.skip("needs the tune extra (ray, optuna)")
    with ray_session(None, cpus=2) as ray:
        yield ray


def tune_args(val_path: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(MODEL),
        "--calib",
        str(CALIB),
        "--val",
        str(val_path),
        "--seeds",
        str(SEEDS),
        "-o",
        str(out),
        *extra,
    ]


def invoke(args: list[str]):
    return CliRunner().invoke(tune_cmd, args, catch_exceptions=False)


@pytest.mark.slow
@needs_engine
@one_ray_session
def test_four_trial_search_writes_a_chip_the_compiler_accepts(ray_engine, val_path, tmp_path):
    out = tmp_path / "search"
    result = invoke(tune_args(val_path, out, "--trials", "4", "--objective", "accuracy-energy"))
    assert result.exit_code == 0, result.output
    records = read_records(out)
    assert len(records) == 4 and all(r.ok for r in records)
    assert [r.number for r in records] == [0, 1, 2, 3]
    assert len({r.trial_id for r in records}) == 4
    # the named profiles run first and score what compiling them directly scores
    baselines = {r.baseline: r for r in records if r.baseline}
    assert set(baselines) == {"default", "custom"}
    for name, r in baselines.items():
        program = anacc.compile(MODEL, calib=CALIB, profile=name)
        assert list(r.accuracies) == plain_accuracies(program, val_path)
    # the printed command compiles the recommended trial from best_chip.toml
    blob = json.loads((out / "best_options.json").read_text())
    argv = shlex.split(blob["command"])
    assert argv[:2] == ["anacc", "compile"]
    program_path = tmp_path / "again.anacc"
    argv[argv.index("-o") + 1] = str(program_path)
    compiled = CliRunner().invoke(main, argv[1:], catch_exceptions=False)
    assert compiled.exit_code == 0, compiled.output
    program = Program.load(program_path)
    best = best_record(records, "accuracy-energy")
    assert program.profile == "tuned"
    assert program.chip == load_chip(out / "best_chip.toml")
    assert list(best.accuracies) == plain_accuracies(program, val_path)
    assert list(best.accuracies) == plain_accuracies(Program.load(out / "best.anacc"), val_path)
    front = {r.number for r in pareto_front(records)}
    assert best.number in front
    report = json.loads((out / "report.json").read_text())
    assert report["best"] == best.number and sorted(report["pareto"]) == sorted(front)
    html = (out / "report.html").read_text()
    assert "<svg" in html and "src=" not in html and "<link" not in html
    assert f"Recommended: trial {best.number + 1}" in (out / "report.txt").read_text()
    assert (out / "ray" / "search-1").is_dir()


def interrupt_after(args: list[str], records: int, out: Path) -> subprocess.CompletedProcess:
    """Run ``anacc tune`` in its own process (and Ray instance) and press Ctrl-C once
    ``records`` trials are finished."""
    code = "from anacc.cli_tune import tune_cmd; tune_cmd(prog_name='anacc tune')"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # the default Ctrl-C disposition, also when the tests run as a background job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    log = out / TRIALS_FILE
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if log.is_file() and log.read_text().count("\n") >= records:
            break
        time.sleep(0.1)
    # like Ctrl-C in a terminal: SIGINT to the whole process group
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, output)


@pytest.mark.slow
@needs_engine
@one_ray_session
def test_interrupted_search_resumes_without_rerunning_finished_trials(
    ray_engine, val_path, tmp_path
):
    out = tmp_path / "search"
    args = [*tune_args(val_path, out, "--trials", "8"), "--val-samples", "100", "--seeds", "1"]
    first = interrupt_after(args, 2, out)
    assert first.returncode == 130, first.stdout
    assert f"continue with: anacc tune --resume {out}" in first.stdout
    before = read_records(out)
    assert 2 <= len(before) < 8
    assert json.loads((out / "report.json").read_text())["finished"] == len(before)
    # a crash while a line was being written leaves a torn last line
    with (out / TRIALS_FILE).open("a") as f:
        f.write('{"number": 2, "status": "o')
    # the same folder without --resume, or --resume with another search, is refused
    again = CliRunner().invoke(tune_cmd, args)
    assert again.exit_code == 2 and "--resume" in again.output
    other = CliRunner().invoke(tune_cmd, [*args[:-6], "--seeds", "3", "--resume", str(out)])
    assert other.exit_code == 2 and "'seeds' differs" in other.output

    # a resumed search may stop after a number of new trials, and be resumed again
    part = invoke(["--resume", str(out), "--max-new-trials", "1"])
    assert part.exit_code == 0, part.output
    assert f"{8 - len(before) - 1} trial(s) left" in part.output
    rest = invoke(["--resume", str(out)])
    assert rest.exit_code == 0, rest.output
    after = read_records(out)
    k = len(before)
    assert len(after) == 8
    assert after[:k] == before
    assert [r.number for r in after] == list(range(8))
    assert [r.session for r in after] == [1] * k + [2] + [3] * (7 - k)
    assert len({r.trial_id for r in after}) == 8
    assert not any(same_params(a.params, b.params) for a in after[k:] for b in before)
    assert sorted(p.name for p in (out / "ray").iterdir()) == ["search-1", "search-2", "search-3"]
    # nothing left: a further resume runs no trial and rewrites the outputs
    done = invoke(["--resume", str(out)])
    assert done.exit_code == 0 and "(0 new)" in done.output
    assert len(read_records(out)) == 8


@pytest.mark.slow
@needs_engine
@one_ray_session
def test_failed_trials_are_kept_and_a_search_without_success_is_an_error(
    ray_engine, val_path, tmp_path
):
    with np.load(val_path) as d:
        arrays = {k: d[k][:50] for k in d.files}
    arrays["labels"] = np.full(50, 42)  # beyond the model's 10 classes: every trial fails
    bad = tmp_path / "bad_val.npz"
    np.savez(bad, **arrays)
    out = tmp_path / "search"
    result = CliRunner().invoke(tune_cmd, [*tune_args(bad, out, "--trials", "2"), "--seeds", "1"])
    assert result.exit_code == 2
    last = error_lines(result)[-1]
    assert last.startswith(f"error: no trial of the search in {out} succeeded; first error: ")
    assert "DataError" in last
    records = read_records(out)
    assert [r.status for r in records] == ["error", "error"]
    assert all("DataError" in r.error and "traceback: " in r.error for r in records)
    assert Path(records[0].error.rsplit("traceback: ", 1)[1].rstrip(")")).is_file()


# -- an existing cluster ------------------------------------------------------------------------


@pytest.mark.slow
@needs_engine
@pytest.mark.xdist_group("ray-cluster")
@pytest.mark.parametrize("address", ["auto", "127.0.0.1:{port}"])
def test_search_joins_an_existing_cluster(ray_cluster, address, val_path, tmp_path):
    port, env, ray_tmp = ray_cluster
    address = address.format(port=port)
    out = tmp_path / "search"
    args = [*tune_args(val_path, out, "--trials", "2"), "--seeds", "1", "--val-samples", "100"]
    code = "from anacc.cli_tune import tune_cmd; tune_cmd(prog_name='anacc tune')"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args, "--address", address],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert "2 of 2 trials finished" in output
    assert [r.status for r in read_records(out)] == ["ok", "ok"]
    # the search ran as a driver of this cluster, not on an instance of its own
    logs = ray_tmp / "session_latest" / "logs"
    assert list(logs.glob(f"python-core-driver-*_{proc.pid}.log")), sorted(os.listdir(logs))


def test_this_machine_is_told_apart_from_others():
    assert is_this_machine("127.0.0.1") and is_this_machine("localhost")
    assert not is_this_machine("198.51.100.7")  # TEST-NET-2: nobody's address
    assert not is_this_machine("no-such-host.invalid")


# -- errors on the command line -----------------------------------------------------------------


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


@needs_engine
def test_unreachable_address_is_one_error_line_and_exit_2(val_path, tmp_path):
    result = CliRunner().invoke(
        tune_cmd, tune_args(val_path, tmp_path / "o", "--address", "127.0.0.1:1")
    )
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: Ray cluster at '127.0.0.1:1'")
    assert not (tmp_path / "o").exists()


@needs_engine
def test_malformed_space_file_is_one_error_line_and_exit_2(val_path, tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"tau_syn_us": [5.0, 1.0]}))
    result = CliRunner().invoke(
        tune_cmd, tune_args(val_path, tmp_path / "o", "--space", str(space))
    )
    assert result.exit_code == 2
    assert error_lines(result) == [
        f"error: {space}: 'tau_syn_us' range [5, 1] is inverted; write [min, max]"
    ]


@needs_engine
def test_chip_file_with_an_inverted_range_is_one_error_line_and_exit_2(val_path, tmp_path):
    data = load_chip("bss2").to_dict()
    data["analog"]["ota_bias_range"] = [600, 30]
    bad = tmp_path / "bad.toml"
    bad.write_text(toml_dumps(data))
    result = CliRunner().invoke(tune_cmd, tune_args(val_path, tmp_path / "o", "--chip", str(bad)))
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "analog.ota_bias_range" in lines[0]


def test_without_the_extra_the_command_says_how_to_install(monkeypatch, val_path, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    result = CliRunner().invoke(tune_cmd, tune_args(val_path, tmp_path / "o"))
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "pip install 'anacc[tune]'" in lines[0]


def test_settings_survive_the_settings_file(chip, val_path):
    s = TuneSettings(
        model=MODEL,
        val=val_path,
        chip=chip,
        space=search_space(chip, {"signed": "split"}),
        calib=CALIB,
        trials=7,
        objective="accuracy-energy",
        val_samples=100,
        seed=3,
    )
    back = TuneSettings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    assert settings_difference(s, dataclasses.replace(s, trials=9)) is None
    assert settings_difference(s, dataclasses.replace(s, seeds=5)) == "seeds"
    assert math.isclose(back.space.dimension("tau_syn_us").high, 20.0)


def test_report_page_plots_every_trial_and_importance(chip):
    records = tuple(
        dataclasses.replace(
            record(n, 0.80 + 0.01 * n, 60.0 + n, std=0.005),
            config=default_config(chip.profile("default")),
            baseline="default" if n == 0 else None,
            time_us=200.0,
            gain_per_send=0.002,
            num_sends={"fc1": 4},
        )
        for n in range(12)
    )
    importances = {
        "accuracy": {"ota_bias": 0.7, "wait_cycles": 0.3},
        "energy": {"wait_cycles": 0.9, "ota_bias": 0.1},
    }
    settings = TuneSettings(model=MODEL, val=MODEL, chip=chip, space=search_space(chip))
    report = TuneReport(
        settings=settings,
        records=records,
        best=records[-1],
        baselines={"default": records[0]},
        pareto=tuple(pareto_front(records)),
        importances=importances,
        importance_note="given",
        command="anacc compile ...",
    )
    page = render_html(report)
    plots = re.findall(r'<svg id="([^"]+)" class="plot"', page)
    assert plots == ["accuracy-energy", "importance-accuracy", "importance-energy"]
    trials = re.findall(r'<g id="trial-(\d+)"><title>trial (\d+): ', page)
    assert [int(a) for a, b in trials if a == b] == list(range(1, 13))
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", page)
    for label in ("validation accuracy, %", "importance for accuracy", "ota_bias", "tuned"):
        assert any(label in t for t in texts), label
    assert not re.search(r'\b(src|href)\s*=\s*"(?!#)', page)
