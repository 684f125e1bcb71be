"""Fixtures of the robustness suite: compiled programs shared by the program, data and write
tests. The case tally and the closing line live in ``tests/conftest.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from anacc.compiler.pipeline import compile_model
from anacc.compiler.program_io import save_program
from robustness_util import DATA, MODELS

from anacc.api import Program

# -- compiled programs, shared by the program, data and write tests -------------------------------


@pytest.fixture(scope="session")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bundled MLP and CNN compiled with their calibration data, as program files."""
    folder = tmp_path_factory.mktemp("programs")
    out = {}
    for name, calib in (("digits_mlp", "digits_calib"), ("digits_cnn", "digits_img_calib")):
        program = compile_model(MODELS / f"{name}.onnx", calib=DATA / f"{calib}.npz")
        out[name] = save_program(program, folder / f"{name}.anacc")
    return out


@pytest.fixture(scope="session")
def mlp_program(programs: dict[str, Path]) -> Program:
    return Program.load(programs["digits_mlp"])
