"""Shared pieces of the robustness suite: the case tally, the in-process and CLI checks, and
small files to corrupt.

A *case* is one bad input given to anacc. In-process, :func:`expect_user_error` runs it and
accepts a result or an :class:`~anacc.errors.AnaccError` with a one-line message; any other
exception is a *traceback*. Through the CLI, :func:`run_cli` runs ``anacc`` in a subprocess
with a timeout (a *hang* when it runs out) and :func:`assert_cli_error` wants exit code 2 and
exactly one ``error:`` line on stderr.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, settings
from onnx import TensorProto, helper, numpy_helper

from anacc.errors import AnaccError

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
DATA = MODELS / "data"
ANACC = Path(sys.executable).with_name("anacc")
# Wall-clock bound of one CLI call: start-up (torch import) takes 1-3 s on a loaded 2-core CI
# machine; anything near this bound is a hang, not a slow start.
CLI_TIMEOUT_S = 60.0
# Bound of one in-process case (hypothesis ``deadline`` uses it too).
CASE_TIMEOUT_S = 5.0


def fuzz_settings(*health_checks: HealthCheck) -> settings:
    """Reproducible hypothesis settings of the suite: derandomized, no example database, a
    deadline of one case timeout, and ``too_slow`` plus the given health checks suppressed."""
    return settings(
        derandomize=True,
        deadline=CASE_TIMEOUT_S * 1000,
        suppress_health_check=[HealthCheck.too_slow, *health_checks],
        database=None,
    )


@dataclass
class Tally:
    """How many bad inputs the suite tried, and how many escaped as a traceback or a hang."""

    cases: int = 0
    tracebacks: int = 0
    hangs: int = 0
    by_category: dict[str, int] = field(default_factory=dict)

    def count(self, category: str) -> None:
        self.cases += 1
        self.by_category[category] = self.by_category.get(category, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "tracebacks": self.tracebacks,
            "hangs": self.hangs,
            "by_category": dict(self.by_category),
        }


def expect_user_error(
    tally: Tally, category: str, fn: Callable[[], Any], *, must_fail: bool = False
) -> AnaccError | None:
    """Run ``fn``; its result or an AnaccError with a one-line message is fine. Returns the
    error (None if ``fn`` returned). ``must_fail``: returning is a test failure too."""
    tally.count(category)
    t0 = time.perf_counter()
    try:
        fn()
    except AnaccError as exc:
        message = str(exc)
        assert message and "\n" not in message, f"not a one-line message: {message!r}"
        assert "Traceback" not in message
        return exc
    except Exception:
        tally.tracebacks += 1
        raise
    finally:
        elapsed = time.perf_counter() - t0
        if elapsed > CASE_TIMEOUT_S:
            tally.hangs += 1
            pytest.fail(f"case took {elapsed:.1f} s (bound {CASE_TIMEOUT_S} s)")
    if must_fail:
        pytest.fail("bad input was accepted")
    return None


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(
    tally: Tally,
    args: list[str | os.PathLike],
    *,
    cwd: Path | None = None,
    timeout: float = CLI_TIMEOUT_S,
) -> CliResult:
    """``anacc ARGS`` in a subprocess (counted as a case); a timeout is a hang."""
    tally.count("cli")
    env = dict(os.environ, PYTHONWARNINGS="ignore", COLUMNS="200")
    try:
        proc = subprocess.run(
            [str(ANACC), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        tally.hangs += 1
        pytest.fail(f"anacc {' '.join(map(str, args))} did not finish within {timeout} s")
    if "Traceback" in proc.stderr:
        tally.tracebacks += 1
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_cli_error(result: CliResult, *fragments: str) -> str:
    """Exit code 2, no traceback, stderr exactly one ``error:`` line containing every
    fragment; returns that line."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr)
    errors = [line for line in lines if line.startswith("error:")]
    assert len(lines) == 1 and len(errors) == 1, f"stderr is not one error line: {lines!r}"
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


# -- small inputs to corrupt ---------------------------------------------------------------------


def tiny_mlp(opset: int = 17) -> onnx.ModelProto:
    """``x (N, 4) -> MatMul 4x3 -> Add -> Relu -> y``: small enough to mutate quickly."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "b"], ["z"], name="add"),
        helper.make_node("Relu", ["z"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def tiny_cnn(opset: int = 17) -> onnx.ModelProto:
    """``x (N, 1, 6, 6) -> Conv 2x1x3x3 -> Relu -> MaxPool 2 -> Flatten -> Gemm -> y``."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "w")
    g = numpy_helper.from_array(rng.standard_normal((5, 8)).astype(np.float32), "g")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[3, 3], strides=[3, 3]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
        helper.make_node("Gemm", ["f", "g"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        initializer=[w, g],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def npz_bytes(arrays: dict[str, np.ndarray], *, compressed: bool = False) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {name: z.read(name) for name in z.namelist()}


def set_declared_size(data: bytes, member: str, size: int) -> bytes:
    """``data`` (a zip) with ``member``'s uncompressed size replaced by ``size`` (< 4 GiB) in
    its local header and in the central directory; the stored bytes stay as they are."""
    out = bytearray(data)
    name = member.encode()
    # (signature, offset of the uncompressed size, offset of the name length, of the name)
    for signature, size_at, name_len_at, name_at in (
        (b"PK\x03\x04", 22, 26, 30),
        (b"PK\x01\x02", 24, 28, 46),
    ):
        pos = out.find(signature)
        while pos >= 0:
            n = int.from_bytes(out[pos + name_len_at : pos + name_len_at + 2], "little")
            if out[pos + name_at : pos + name_at + n] == name:
                out[pos + size_at : pos + size_at + 4] = size.to_bytes(4, "little")
            pos = out.find(signature, pos + 4)
    return bytes(out)
