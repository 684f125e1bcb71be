"""Accuracy over emulated chip instances: the statistics, the local loop, the commands, the
report, and the same instances as tasks on a Ray cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from anacc.compiler.datafile import match_inputs
from anacc.runtime.instances import InstanceStats, evaluate_instances
from anacc.runtime.report import build_report
from anacc.runtime.report_html import render_html
from anacc.runtime.session import DEFAULT_BATCH_SIZE, Session
from click.testing import CliRunner

import anacc
from anacc.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
TEST = MODELS / "data" / "digits_test.npz"


def split(name: str) -> dict[str, np.ndarray]:
    with np.load(MODELS / "data" / f"digits_{name}.npz") as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def program_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prog") / "digits_mlp.anacc"
    anacc.compile(MODELS / "digits_mlp.onnx", calib=split("calib")).save(path)
    return path


def reference_accuracy(program, data: dict[str, np.ndarray], seed: int) -> float:
    """Top-1 accuracy of one session's logits on chip ``seed``, counted in numpy (in the
    batches evaluate_instances uses: the noise is drawn per batch)."""
    session = Session(program, "emulator", seed)
    logits = session.run({"input": data["input"]}, batch_size=DEFAULT_BATCH_SIZE)["logits"]
    return float(np.mean(np.argmax(logits, axis=1) == data["labels"]))


def test_statistics_of_the_instances_against_numpy():
    accs = (0.91, 0.875, 0.9, 0.93, 0.875)
    stats = InstanceStats((4, 5, 6, 7, 8), accs, 200, 1.0, "local")
    ref = np.array(accs, dtype=np.float64)
    assert stats.mean == pytest.approx(ref.mean(), abs=1e-12)
    assert stats.std == pytest.approx(np.sqrt(((ref - ref.mean()) ** 2).sum() / 4), abs=1e-12)
    assert stats.worst == (5, 0.875) and stats.best == (7, 0.93)
    edges, counts = stats.histogram(bins=4)
    np.testing.assert_allclose(edges, [0.875, 0.88875, 0.9025, 0.91625, 0.93])
    assert counts == [2, 1, 1, 1]
    one = InstanceStats((3,), (0.5,), 10, 0.1, "local")
    assert one.std == 0.0 and sum(one.histogram()[1]) == 1
    text = stats.render_text()
    assert "mean 89.80 %" in text and "worst 87.50 % (seed 5)" in text and "seeds 4..8" in text


def test_local_instances_equal_one_session_per_seed(program_path):
    program = anacc.Program.load(program_path)
    data = split("test")
    stats = evaluate_instances(program, data, [2, 3, 4])
    assert stats.seeds == (2, 3, 4) and stats.samples == len(data["labels"])
    assert list(stats.accuracies) == [reference_accuracy(program, data, s) for s in (2, 3, 4)]
    assert program.evaluate_instances(data, 3, seed=2).accuracies == stats.accuracies
    # the instances differ: the fixed pattern and the noise are the chip's own
    assert len(set(evaluate_instances(program, data, range(8)).accuracies)) > 1


def test_run_command_prints_the_distribution_over_instances(program_path):
    runner = CliRunner()
    r = runner.invoke(main, ["run", str(program_path), "--data", str(TEST), "--instances", "20"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("accuracy over 20 chip instances (seeds 0..19)")
    assert "mean" in lines[0] and "std" in lines[0] and "worst" in lines[0]
    bins = [line for line in lines if " .. " in line and "%" in line]
    assert len(bins) == 10 and sum(int(b.split("%")[1].split()[0]) for b in bins) == 20
    r = runner.invoke(
        main,
        ["run", str(program_path), "--data", str(TEST), "--instances", "3", "--seed", "5"]
        + ["--json"],
    )
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    program = anacc.Program.load(program_path)
    ref = [reference_accuracy(program, split("test"), s) for s in (5, 6, 7)]
    assert got["seeds"] == [5, 6, 7] and got["accuracies"] == pytest.approx(ref, abs=1e-6)
    assert got["mean"] == pytest.approx(np.mean(ref), abs=1e-6)
    assert got["worst"]["accuracy"] == pytest.approx(min(ref), abs=1e-6)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--address", "auto"], "give --instances K too"),
        (["--instances", "2", "--backend", "ideal"], "needs the emulator backend"),
        (["--instances", "2", "-o", "out.npz"], "leave it out with --instances"),
        (["--instances", "0"], "0 is not in the range"),
        (["--instances", "2", "--profile"], "--profile times one run"),
    ],
)
def test_bad_instance_options_are_one_error_line(program_path, extra, message):
    r = CliRunner().invoke(main, ["run", str(program_path), "--data", str(TEST), *extra])
    assert r.exit_code == 2
    assert message in r.output
    assert "Traceback" not in r.output


def test_report_shows_the_instances_in_text_json_and_html(program_path):
    program = anacc.Program.load(program_path)
    data = match_inputs(split("test"), program.inputs, "test")
    report = build_report(program, data, seed=1, max_samples=120, instances=4)
    assert report.instances is not None and report.instances.seeds == (1, 2, 3, 4)
    j = report.to_json()["instances"]
    assert j["instances"] == 4 and sum(j["histogram"]["counts"]) == 4
    html = render_html(report)
    assert 'id="instances"' in html and "Accuracy across chip instances" in html
    r = CliRunner().invoke(
        main, ["report", str(program_path), "--data", str(TEST), "--instances", "2"]
    )
    assert r.exit_code == 0 and "accuracy over 2 chip instances" in r.output
    r = CliRunner().invoke(main, ["report", str(program_path), "--instances", "2"])
    assert r.exit_code == 2 and "needs data" in r.output


@pytest.mark.slow
@pytest.mark.xdist_group("ray-cluster")
def test_instances_run_as_tasks_on_a_ray_cluster(ray_cluster, program_path):
    port, env, ray_tmp = ray_cluster
    code = "from anacc.cli import main; main(prog_name='anacc')"
    args = ["run", str(program_path), "--data", str(TEST), "--instances", "4", "--json"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args, "--address", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    got = json.loads(out)
    assert got["where"] == f"127.0.0.1:{port}"
    program = anacc.Program.load(program_path)
    local = evaluate_instances(program, split("test"), range(4))
    assert got["accuracies"] == pytest.approx(list(local.accuracies), abs=1e-6)
    # the tasks ran on the cluster's workers, the command was one of its drivers
    logs = ray_tmp / "session_latest" / "logs"
    assert list(logs.glob(f"python-core-driver-*_{proc.pid}.log")), sorted(os.listdir(logs))
    assert list(logs.glob("worker-*.out")) or list(logs.glob("python-core-worker-*.log"))
