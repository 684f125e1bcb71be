"""Writing outputs: atomically, never over an input, nothing left behind when interrupted."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from anacc.compiler.files import atomic_write
from robustness_util import ANACC, CLI_TIMEOUT_S, DATA, MODELS, assert_cli_error, run_cli

from anacc.api import Program
from anacc.errors import AnaccError


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- atomic_write ------------------------------------------------------------------------------


def test_new_files_get_the_usual_permissions(tmp_path: Path, tally) -> None:
    path = tmp_path / "out.bin"
    atomic_write(path, b"data")
    tally.count("write")
    assert path.read_bytes() == b"data"
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


class _FailingFile:
    """An open file whose ``write`` is interrupted."""

    def __init__(self, f) -> None:
        self.f = f

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()

    def write(self, data: bytes) -> int:
        raise KeyboardInterrupt


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_an_interrupted_write_leaves_nothing_behind(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally
) -> None:
    """Ctrl-C at any point of the write: the target keeps its old content (or stays absent),
    and no temp file is left in the folder."""
    old = tmp_path / "existing.anacc"
    old.write_bytes(b"old program")
    if where == "write":
        fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda fd, mode: _FailingFile(fdopen(fd, mode)))
    else:
        monkeypatch.setattr(os, where, _interrupt)
    for path in (old, tmp_path / "new.anacc"):
        tally.count("write")
        with pytest.raises(KeyboardInterrupt):
            atomic_write(path, b"new program")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.anacc"]
    assert old.read_bytes() == b"old program"


def test_a_failed_save_of_a_program_leaves_nothing_behind(
    programs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally
) -> None:
    program = Program.load(programs["digits_mlp"])
    monkeypatch.setattr(os, "fsync", _interrupt)
    tally.count("write")
    with pytest.raises(KeyboardInterrupt):
        program.save(tmp_path / "p.anacc")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink", "dotdot"])
def test_protected_inputs_are_never_overwritten(link: str, tmp_path: Path, tally) -> None:
    source = tmp_path / "input.npz"
    source.write_bytes(b"precious")
    path = {
        "same": source,
        "symlink": tmp_path / "alias.npz",
        "hardlink": tmp_path / "hard.npz",
        "dotdot": tmp_path / "sub" / ".." / "input.npz",
    }[link]
    if link == "symlink":
        path.symlink_to(source)
    elif link == "hardlink":
        os.link(source, path)
    elif link == "dotdot":
        (tmp_path / "sub").mkdir()
    tally.count("write")
    with pytest.raises(AnaccError, match="refusing to overwrite an input file"):
        atomic_write(path, b"garbage", protect=(source,))
    assert source.read_bytes() == b"precious"
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


@pytest.mark.parametrize("case", ["folder", "missing-folder", "file-as-folder"])
def test_unwritable_targets_give_one_error_line(case: str, tmp_path: Path, tally) -> None:
    (tmp_path / "plain").write_bytes(b"")
    path = {
        "folder": tmp_path,
        "missing-folder": tmp_path / "nope" / "out.anacc",
        "file-as-folder": tmp_path / "plain" / "out.anacc",
    }[case]
    tally.count("write")
    with pytest.raises(AnaccError) as exc:
        atomic_write(path, b"data")
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_folder(tmp_path: Path, tally) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        tally.count("write")
        with pytest.raises(AnaccError, match="cannot write"):
            atomic_write(folder / "out.anacc", b"data")
    finally:
        folder.chmod(0o700)


# -- the commands ------------------------------------------------------------------------------


def test_cli_refuses_output_equal_to_an_input(programs, tmp_path: Path, tally) -> None:
    """compile, run, finetune and export with ``-o`` naming one of their inputs."""
    program = tmp_path / "mlp.anacc"
    program.write_bytes(programs["digits_mlp"].read_bytes())
    calib = tmp_path / "calib.npz"
    calib.write_bytes((DATA / "digits_calib.npz").read_bytes())
    data = tmp_path / "test.npz"
    data.write_bytes((DATA / "digits_test.npz").read_bytes())
    before = {p: _digest(p) for p in (program, calib, data)}
    commands = [
        ["compile", MODELS / "digits_mlp.onnx", "--calib", calib, "-o", calib],
        ["run", program, "--data", data, "-o", data],
        ["finetune", program, "--data", data, "-o", program],
        ["export", program, "-o", program],
    ]
    for args in commands:
        assert_cli_error(run_cli(tally, args), "refusing to overwrite")
    assert {p: _digest(p) for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npz", "mlp.anacc", "test.npz"]


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_cli_sigint_during_finetune_leaves_no_file(programs, tmp_path: Path, tally) -> None:
    out = tmp_path / "tuned.anacc"
    args = [
        ANACC,
        "finetune",
        programs["digits_cnn"],
        "--data",
        DATA / "digits_img_train.npz",
        "--epochs",
        "50",
        "-o",
        out,
    ]
    tally.count("cli")
    proc = subprocess.Popen(
        list(map(str, args)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        # a job started in the background inherits SIGINT ignored, and Python then installs
        # no Ctrl-C handler: give the command the default disposition a terminal gives it
        preexec_fn=default_sigint,
    )
    # A process that never prints or never stops is killed, and counted as a hang.
    watchdog = threading.Timer(2 * CLI_TIMEOUT_S, proc.kill)
    watchdog.start()
    try:
        # Interrupt once the first epoch is done: the fine-tuning is surely under way (the
        # lines before it say what the chip-in-the-loop set-up chose).
        seen = []
        while not (line := proc.stdout.readline()).startswith("epoch 1"):
            assert line, f"the output ended before the first epoch: {seen}"
            seen.append(line)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        watchdog.cancel()
        if proc.poll() is None or proc.returncode == -signal.SIGKILL:
            proc.kill()
            proc.wait()
            tally.hangs += 1
    assert proc.returncode != 0
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted")
    assert list(tmp_path.iterdir()) == []
