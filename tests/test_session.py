"""The inference path users call: ``program.run`` keeps one session per backend and seed and
stays deterministic, a kept ``Session`` draws fresh noise per call, blocks of samples give
the outputs of whole-batch calls where nothing is random, and the profiler's figures add up."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from anacc.runtime.analog import analog_forward
from anacc.runtime.backends import get_backend
from anacc.runtime.profiler import KINDS, OTHER, Profiler
from anacc.runtime.session import run_program
from click.testing import CliRunner

import anacc
from anacc.cli import main

MODELS = Path(__file__).resolve().parents[1] / "models"


def split(dataset: str, name: str) -> dict[str, np.ndarray]:
    with np.load(MODELS / "data" / f"{dataset}_{name}.npz") as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def cnn() -> anacc.Program:
    return anacc.compile(MODELS / "digits_cnn.onnx", calib=split("digits_img", "calib"))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return split("digits_img", "test")["input"][:64]


def test_program_run_repeats_itself_and_equals_a_new_session(cnn, images):
    first = cnn.run({"input": images}, seed=3)["logits"]
    again = cnn.run({"input": images}, seed=3)["logits"]
    fresh = anacc.Session(cnn, backend="emulator", seed=3).run({"input": images})["logits"]
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, fresh)
    other = cnn.run({"input": images}, seed=4)["logits"]
    assert not np.array_equal(first, other)
    # one kept session per (backend, seed, threads)
    assert len({id(s) for s in cnn.__dict__["_sessions"].values()}) == 2


def test_a_kept_session_draws_fresh_noise_until_reset(cnn, images):
    session = anacc.Session(cnn, backend="emulator", seed=5)
    a = session.run({"input": images})["logits"]
    b = session.run({"input": images})["logits"]
    assert not np.array_equal(a, b)
    session.reset_noise()
    np.testing.assert_array_equal(session.run({"input": images})["logits"], a)


def test_a_program_with_kept_sessions_pickles_and_copies_run_on_their_own(cnn, images):
    import copy

    cnn.run({"input": images[:2]})
    clone = pickle.loads(pickle.dumps(cnn))
    assert "_sessions" not in clone.__dict__
    twin = copy.copy(cnn)
    np.testing.assert_array_equal(
        twin.run({"input": images})["logits"], cnn.run({"input": images})["logits"]
    )
    assert all(s.program is twin for s in twin.__dict__["_sessions"].values())


@pytest.mark.parametrize("backend", ["quantized", "ideal"])
def test_blocks_of_samples_give_the_whole_batch_outputs(cnn, images, backend):
    be = get_backend(backend, cnn.chip, cnn.profile)
    for layer in cnn.layers.values():
        shape = (64, 1, 8, 8) if layer.conv is not None and layer.conv.in_channels == 1 else None
        if shape is None:
            continue
        x = torch.from_numpy(images)
        whole = analog_forward(layer, x, be, block_bytes=2**40)
        blocks = analog_forward(layer, x, be, block_bytes=1)  # one sample per block
        torch.testing.assert_close(blocks, whole, rtol=0, atol=0)


def test_dense_layers_in_blocks_equal_whole_batch_calls():
    prog = anacc.compile(MODELS / "mnist1d_mlp.onnx", calib=split("mnist1d", "calib"))
    x = torch.from_numpy(split("mnist1d", "test")["input"][:50])
    be = get_backend("quantized", prog.chip, prog.profile)
    layer = next(iter(prog.layers.values()))
    assert layer.signed in ("shift", "split")
    whole = analog_forward(layer, x, be, block_bytes=2**40)
    blocks = analog_forward(layer, x, be, block_bytes=1)
    torch.testing.assert_close(blocks, whole, rtol=0, atol=0)


def test_profiler_accounts_for_every_step_and_kind(cnn, images):
    profiler = Profiler()
    result = run_program(cnn, {"input": images}, profiler=profiler)
    steps = {s.name for s in cnn.steps}
    assert steps <= set(profiler.steps)
    assert all(profiler.steps[name].calls == 1 for name in steps)
    totals = profiler.kind_totals()
    assert set(totals) == {*KINDS, OTHER}
    for kind in ("encode/im2col", "noise", "analog kernel", "rescale", "digital ops"):
        assert totals[kind] > 0, kind
    # the kinds split the steps' time: no time counts twice
    step_sum = sum(s.seconds for s in profiler.steps.values())
    assert sum(totals.values()) == pytest.approx(step_sum, rel=1e-6)
    assert step_sum <= profiler.seconds * 1.001 and profiler.seconds <= result.seconds * 1.5
    table = profiler.table()
    for name in steps:
        assert name in table
    assert "peak memory" in table or profiler.peak_mb is None


def test_run_profile_prints_steps_kinds_and_memory(cnn, tmp_path):
    path = cnn.save(tmp_path / "cnn.anacc")
    data = tmp_path / "data.npz"
    test = split("digits_img", "test")
    np.savez(data, input=test["input"][:32], labels=test["labels"][:32])
    runner = CliRunner()
    res = runner.invoke(main, ["run", str(path), "--data", str(data), "--profile"])
    assert res.exit_code == 0, res.output
    assert "profile (program load excluded)" in res.output
    for step in cnn.steps:
        assert step.name in res.output
    for kind in ("noise", "analog kernel", "digital ops"):
        assert kind in res.output
    res = runner.invoke(main, ["run", str(path), "--data", str(data), "--profile", "--json"])
    assert res.exit_code == 0, res.output
    profile = json.loads(res.output.strip().splitlines()[-1])["profile"]
    assert {s["name"] for s in profile["steps"]} >= {s.name for s in cnn.steps}
    assert set(profile["kinds"]) == {*KINDS, OTHER}


def test_digital_sessions_do_not_busy_wait(cnn):
    """Every digital step's onnxruntime session runs without spinning workers: a spinning
    pool holds a core that torch's threads need for the next analog step (with two threads
    the emulator ran several times slower)."""
    from anacc.runtime.digital import OrtRegions

    regions = OrtRegions(cnn, threads=2)
    assert regions._sessions
    for session in regions._sessions.values():
        options = session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert options.intra_op_num_threads == 2
