"""The distribution: the wheel holds the mapped packages and the chip files, and the console
script works from any folder."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("anacc-*.whl")
    return path


def test_wheel_maps_the_top_level_folders_into_the_anacc_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "anacc/__init__.py",
        "anacc/cli.py",
        "anacc/errors.py",
        "anacc/compiler/frontend.py",
        "anacc/compiler/ir.py",
        "anacc/compiler/chips/bss2.toml",
        "anacc/passes/tile.py",
        "anacc/runtime/interpreter.py",
        "anacc/runtime/backends/emulator.py",
    ):
        assert expected in names, expected
    # nothing installs generic top-level names such as `runtime` or `compiler`
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"anacc"}
    assert not any(n.startswith(("tests/", "models/", "benchmarks/")) for n in names)


def test_console_script_runs_from_another_folder(tmp_path):
    anacc = Path(sys.executable).parent / "anacc"
    result = subprocess.run(
        [str(anacc), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for command in ("inspect", "compile", "run", "report", "finetune", "export", "chip"):
        assert command in result.stdout
    inspect = subprocess.run(
        [str(anacc), "inspect", str(ROOT / "models" / "digits_mlp.onnx")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert inspect.returncode == 0, inspect.stderr
    assert "analog" in inspect.stdout
