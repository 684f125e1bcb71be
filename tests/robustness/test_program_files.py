"""Program files that are damaged, tampered with or hostile: refused with one clear line.

Byte-level corruption; manifests edited field by field with the checksums recomputed (a
checksum is no signature, so the schema and dataflow checks must hold on their own), and the
programs that still load run on a few samples; checksum and version checks; zip members with
unsafe paths; zip bombs; object arrays. Nothing is ever unpickled.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from anacc.compiler import program_io as program_module
from anacc.compiler.program_io import ARRAYS, CHECKSUMS, FORMAT_VERSION, MANIFEST
from anacc.runtime.session import run_program
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from robustness_util import (
    DATA,
    assert_cli_error,
    expect_user_error,
    fuzz_settings,
    npz_bytes,
    run_cli,
    set_declared_size,
    zip_bytes,
    zip_members,
)

from anacc.api import Program
from anacc.errors import ProgramError

FUZZ = fuzz_settings(HealthCheck.function_scoped_fixture)
DATASETS = {"digits_mlp": "digits_test", "digits_cnn": "digits_img_test"}


class Quiet(dict):
    """A dict that hypothesis does not print in full when it reports a failing case."""

    def __repr__(self) -> str:
        return f"<{len(self)} entries>"


@pytest.fixture(scope="module")
def blobs(programs: dict[str, Path]) -> Quiet:
    return Quiet({name: path.read_bytes() for name, path in programs.items()})


@pytest.fixture(scope="module")
def samples() -> Quiet:
    """A few samples with labels for each program."""
    out = Quiet()
    for name, data in DATASETS.items():
        with np.load(DATA / f"{data}.npz") as npz:
            out[name] = {k: npz[k][:6] for k in npz.files}
    return out


def pack(manifest: Any, arrays: bytes, *, checksums: dict | None = None) -> bytes:
    """A program zip with ``checksums.json`` computed for the members given."""
    manifest_bytes = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    sums = checksums or {
        MANIFEST: hashlib.sha256(manifest_bytes).hexdigest(),
        ARRAYS: hashlib.sha256(arrays).hexdigest(),
    }
    return zip_bytes(
        {MANIFEST: manifest_bytes, ARRAYS: arrays, CHECKSUMS: json.dumps(sums).encode()}
    )


def unpack(blob: bytes) -> tuple[dict, bytes]:
    members = zip_members(blob)
    return json.loads(members[MANIFEST]), members[ARRAYS]


def refused(tally, blob: bytes, *fragments: str) -> ProgramError:
    exc = expect_user_error(
        tally, "program", lambda: Program.from_bytes(blob, "case.anacc"), must_fail=True
    )
    assert isinstance(exc, ProgramError)
    for fragment in fragments:
        assert fragment in str(exc), f"{fragment!r} not in {exc}"
    return exc


@pytest.fixture(autouse=True)
def nothing_is_unpickled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any unpickling (numpy's object arrays go through ``pickle.load``) fails the test, but
    numba's reading of its own cache of compiled loops (an index it wrote itself)."""

    def guarded(name: str):
        original = getattr(pickle, name)

        def forbidden(*args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("numba."):
                return original(*args, **kwargs)
            raise AssertionError("a program or data file was unpickled")

        return forbidden

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, guarded(name))

    def no_np_load(*args, **kwargs):
        raise AssertionError("a program or data file was unpickled")

    monkeypatch.setattr(np, "load", no_np_load)


# -- byte-level corruption ---------------------------------------------------------------------


@st.composite
def corrupted_programs(draw: st.DrawFn, blobs: dict[str, bytes]) -> bytes:
    data = bytearray(blobs[draw(st.sampled_from(sorted(blobs)))])
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "tail"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 6))):
            pos = draw(st.integers(0, len(data) - 1))
            data[pos] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "tail":
        # The central directory: member names, sizes and offsets.
        pos = draw(st.integers(max(0, len(data) - 200), len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
        return bytes(data)
    pos = draw(st.integers(0, len(data)))
    return bytes(data[:pos] + draw(st.binary(min_size=1, max_size=32)) + data[pos:])


@settings(FUZZ, max_examples=400)
@given(data=st.data())
def test_corrupted_program_bytes_are_refused(data: st.DataObject, blobs, tally) -> None:
    blob = data.draw(corrupted_programs(blobs))
    expect_user_error(tally, "program", lambda: Program.from_bytes(blob, "case.anacc"))


# -- tampered manifests with valid checksums --------------------------------------------------


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


_DELETE = object()


def _has(tree: Any, key: Any) -> bool:
    if isinstance(tree, dict):
        return key in tree
    return isinstance(tree, list) and isinstance(key, int) and key < len(tree)


def _edit(tree: Any, path: tuple, value: Any) -> None:
    """Set (or delete, for ``_DELETE``) the entry at ``path`` if the path still exists."""
    for key in path[:-1]:
        if not _has(tree, key):
            return
        tree = tree[key]
    key = path[-1]
    if _has(tree, key):
        if value is _DELETE:
            del tree[key]
        else:
            tree[key] = value


WILD_JSON = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            0,
            -1,
            1,
            2,
            2**40,
            -(2**40),
            10**30,
            0.5,
            1e308,
            "",
            "N",
            "Linear",
            "Relu",
            [],
            {},
        ]
    ),
    st.lists(st.integers(-3, 3), max_size=4),
    st.integers(-1000, 1000),
)


@settings(FUZZ, max_examples=500)
@given(data=st.data())
def test_tampered_manifests_are_refused_or_run(data: st.DataObject, blobs, samples, tally) -> None:
    name = data.draw(st.sampled_from(sorted(blobs)))
    manifest, arrays = unpack(blobs[name])
    tampered = copy.deepcopy(manifest)
    paths = _paths(tampered)
    for _ in range(data.draw(st.integers(1, 2))):
        path = data.draw(st.sampled_from(paths))
        value = _DELETE if data.draw(st.integers(0, 5)) == 0 else data.draw(WILD_JSON)
        _edit(tampered, path, value)
    blob = pack(tampered, arrays)
    loaded: list[Program] = []
    expect_user_error(
        tally, "program", lambda: loaded.append(Program.from_bytes(blob, "case.anacc"))
    )
    if loaded:
        expect_user_error(
            tally, "program-run", lambda: run_program(loaded[0], samples[name], backend="quantized")
        )


def test_untampered_program_runs_as_compiled(blobs, samples, mlp_program, tally) -> None:
    manifest, arrays = unpack(blobs["digits_mlp"])
    program = Program.from_bytes(pack(manifest, arrays))
    a = run_program(program, samples["digits_mlp"], backend="quantized")
    b = run_program(mlp_program, samples["digits_mlp"], backend="quantized")
    tally.count("program")
    np.testing.assert_array_equal(a.outputs["logits"], b.outputs["logits"])


# -- named cases ------------------------------------------------------------------------------


def test_checksum_mismatch(blobs, tally) -> None:
    manifest, arrays = unpack(blobs["digits_mlp"])
    members = zip_members(blobs["digits_mlp"])
    manifest["profile"] = "custom"
    blob = pack(manifest, arrays, checksums=json.loads(members[CHECKSUMS]))
    refused(tally, blob, "checksum mismatch for manifest.json", "corrupt")
    arrays_flipped = bytearray(arrays)
    arrays_flipped[-40] ^= 0xFF
    blob = pack(members[MANIFEST], bytes(arrays_flipped), checksums=json.loads(members[CHECKSUMS]))
    refused(tally, blob, "checksum mismatch for arrays.npz")


@pytest.mark.parametrize(
    ("version", "fragments"),
    [
        (FORMAT_VERSION + 1, ("made by a newer anacc", f"format {FORMAT_VERSION + 1}", "upgrade")),
        (10**9, ("made by a newer anacc", "upgrade anacc")),
        (0, ("unknown format version 0",)),
        (-3, ("unknown format version -3",)),
        ("1", ("format version missing",)),
        (1.0, ("format version missing",)),
        (True, ("format version missing",)),
        (None, ("format version missing",)),
    ],
)
def test_format_versions(version, fragments, blobs, tally) -> None:
    manifest, arrays = unpack(blobs["digits_mlp"])
    manifest["format_version"] = version
    refused(tally, pack(manifest, arrays), *fragments)


def test_missing_version_and_foreign_format(blobs, tally) -> None:
    manifest, arrays = unpack(blobs["digits_mlp"])
    del manifest["format_version"]
    refused(tally, pack(manifest, arrays), "format version missing")
    manifest["format"] = "something-else"
    refused(tally, pack(manifest, arrays), "not an anacc program")
    refused(tally, pack([1, 2, 3], arrays), "not an anacc program")


@pytest.mark.parametrize(
    "blob",
    [b"", b"PK\x05\x06" + bytes(18), b"not a zip at all", bytes(1000), b"PK\x03\x04garbage"],
    ids=["empty", "empty-zip", "text", "zeros", "broken-header"],
)
def test_not_a_zip(blob: bytes, tally) -> None:
    refused(tally, blob, "case.anacc")


@pytest.mark.parametrize(
    "member",
    [
        "/manifest.json",
        "../manifest.json",
        "a/../../manifest.json",
        "..\\manifest.json",
        "../../etc/x",
    ],
)
def test_unsafe_member_paths(member: str, blobs, tally) -> None:
    members = zip_members(blobs["digits_mlp"])
    members[member] = members.pop(MANIFEST)
    refused(tally, zip_bytes(members), "unsafe path", repr(member))


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_missing_and_extra_members(blobs, tally) -> None:
    members = zip_members(blobs["digits_mlp"])
    refused(tally, zip_bytes({**members, "extra.txt": b"x"}), "unexpected members", "extra.txt")
    del members[ARRAYS]
    refused(tally, zip_bytes(members), "unexpected members")
    dup = io.BytesIO()
    with zipfile.ZipFile(dup, "w") as z:
        for name, data in zip_members(blobs["digits_mlp"]).items():
            z.writestr(name, data)
        z.writestr(MANIFEST, b"{}")
    refused(tally, dup.getvalue(), "unexpected members")


@pytest.mark.parametrize("member", [MANIFEST, CHECKSUMS, ARRAYS])
def test_declared_sizes_beyond_the_limit(member: str, blobs, tally) -> None:
    blob = set_declared_size(blobs["digits_mlp"], member, 2**32 - 1)
    if member == ARRAYS:
        # 4 GiB - 1 is within the arrays limit: the real size then disagrees with the claim.
        refused(tally, blob, "member arrays.npz unpacks to", "declares 4294967295")
    else:
        refused(tally, blob, f"member {member} declares 4294967295 bytes", "refusing to unpack")


def test_a_real_run_of_zeros_is_not_unpacked(tmp_path: Path, tally) -> None:
    """A manifest of 260 MiB of zeros compresses to a few hundred KiB; loading refuses it
    from its declared size without inflating it."""
    path = tmp_path / "bomb.anacc"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open(MANIFEST, "w", force_zip64=True) as f:
            chunk = bytes(1 << 20)
            for _ in range(260):
                f.write(chunk)
        z.writestr(ARRAYS, npz_bytes({}))
        z.writestr(CHECKSUMS, b"{}")
    assert path.stat().st_size < 2 << 20
    exc = expect_user_error(tally, "program", lambda: Program.load(path), must_fail=True)
    assert f"declares {260 << 20} bytes" in str(exc)


def test_member_that_unpacks_beyond_its_declared_size(
    blobs, monkeypatch: pytest.MonkeyPatch, tally
) -> None:
    monkeypatch.setattr(program_module, "MAX_MANIFEST_BYTES", 1 << 20)
    manifest, arrays = unpack(blobs["digits_mlp"])
    blob = pack(json.dumps(manifest).encode() + b" " * (2 << 20), arrays)
    refused(tally, blob, "declares", "refusing to unpack")
    refused(tally, set_declared_size(blob, MANIFEST, 1000), "corrupt member manifest.json")


@pytest.mark.parametrize("compression", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_compressions_anacc_does_not_write(compression: int, blobs, tally) -> None:
    members = zip_members(blobs["digits_mlp"])
    refused(tally, zip_bytes(members, compression), "compressed in a way anacc does not write")


def _with_arrays(blob: bytes, change) -> bytes:
    """The program with its arrays.npz rebuilt by ``change(arrays) -> npz bytes`` and the
    manifest's array table and checksums made to agree."""
    manifest, arrays_bytes = unpack(blob)
    with zipfile.ZipFile(io.BytesIO(arrays_bytes)) as z:
        arrays = {
            n[: -len(".npy")]: np.lib.format.read_array(z.open(n), allow_pickle=False)
            for n in z.namelist()
        }
    new = change(arrays)
    table = {}
    with zipfile.ZipFile(io.BytesIO(new)) as z:
        for n in z.namelist():
            with z.open(n) as f:
                version = np.lib.format.read_magic(f)
                header = getattr(np.lib.format, f"read_array_header_{version[0]}_0")(f)
            table[n[: -len(".npy")]] = {"dtype": header[2].str, "shape": list(header[0])}
    manifest["arrays"] = table
    return pack(manifest, new)


def test_object_array_with_valid_checksums_is_refused_unread(blobs, tally) -> None:
    def add_object(arrays):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for k, v in arrays.items():
                with z.open(f"{k}.npy", "w") as f:
                    np.lib.format.write_array(f, v)
            with z.open("const/evil.npy", "w") as f:
                np.lib.format.write_array(f, np.array([{"a": 1}, None], dtype=object))
        return buf.getvalue()

    blob = _with_arrays(blobs["digits_mlp"], add_object)
    refused(tally, blob, "'const/evil'", "dtype object", "nothing is unpickled")
    assert json.loads(zip_members(blob)[MANIFEST])["arrays"]["const/evil"]["dtype"] == "|O"


def test_npz_header_declaring_a_huge_array_is_refused_unallocated(blobs, tally) -> None:
    def huge_header(arrays):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for k, v in arrays.items():
                with z.open(f"{k}.npy", "w") as f:
                    if k.endswith("/weight_scale"):
                        header = {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}
                        np.lib.format.write_array_header_1_0(f, header)
                        f.write(v.tobytes())
                    else:
                        np.lib.format.write_array(f, v)
        return buf.getvalue()

    blob = _with_arrays(blobs["digits_mlp"], huge_header)
    refused(tally, blob, "declares shape (1099511627776,)", "the file is corrupt")


def test_arrays_beyond_the_limit(blobs, monkeypatch: pytest.MonkeyPatch, tally) -> None:
    monkeypatch.setattr(program_module, "MAX_MEMBER_BYTES", 64 << 10)
    refused(tally, blobs["digits_cnn"], "member arrays.npz declares", "(limit 65536)")


def test_compressed_arrays_inside_the_npz_beyond_the_limit(
    blobs, monkeypatch: pytest.MonkeyPatch, tally
) -> None:
    """arrays.npz itself small, its deflated members large: the inner sizes count too."""

    def add_zeros(arrays):
        return npz_bytes({**arrays, "const/zeros": np.zeros(1 << 18, np.float32)}, compressed=True)

    blob = _with_arrays(blobs["digits_mlp"], add_zeros)
    monkeypatch.setattr(program_module, "MAX_MEMBER_BYTES", 512 << 10)
    refused(tally, blob, "the arrays unpack to", "more than 524288")


def test_manifest_with_nan_is_refused(blobs, tally) -> None:
    manifest, arrays = unpack(blobs["digits_mlp"])
    manifest["layers"][0]["input_scale"] = float("nan")
    refused(tally, pack(manifest, arrays), "not valid JSON", "NaN")


def test_step_reading_an_undefined_tensor(blobs, tally) -> None:
    manifest, arrays = unpack(blobs["digits_mlp"])
    manifest["steps"][-1]["inputs"] = ["nobody_makes_this"]
    refused(tally, pack(manifest, arrays), "reads undefined tensor", "nobody_makes_this")


def test_tile_outside_the_chip(blobs, tally) -> None:
    manifest, arrays = unpack(blobs["digits_mlp"])
    manifest["layers"][0]["tiles"][0]["half"] = 7
    refused(tally, pack(manifest, arrays), "lies outside the chip")


# -- through the command line -----------------------------------------------------------------


def _cli_cases(blobs: dict[str, bytes], tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    manifest, arrays = unpack(blobs["digits_mlp"])
    newer = copy.deepcopy(manifest)
    newer["format_version"] = FORMAT_VERSION + 1
    members = zip_members(blobs["digits_mlp"])
    members["../evil.json"] = members.pop(MANIFEST)
    return {
        "truncated": (blobs["digits_mlp"][:3000], "not a zip file"),
        "newer": (pack(newer, arrays), "made by a newer anacc"),
        "zip-slip": (zip_bytes(members), "unsafe path"),
        "bomb": (set_declared_size(blobs["digits_mlp"], MANIFEST, 2**31), "refusing to unpack"),
    }


@pytest.mark.parametrize("case", ["truncated", "newer", "zip-slip", "bomb"])
def test_cli_run_refuses_bad_programs(case: str, blobs, tmp_path: Path, tally) -> None:
    blob, fragment = _cli_cases(blobs, tmp_path)[case]
    path = tmp_path / f"{case}.anacc"
    path.write_bytes(blob)
    result = run_cli(tally, ["run", path, "--data", DATA / "digits_test.npz"])
    assert_cli_error(result, str(path), fragment)


def test_cli_finetune_and_export_refuse_a_tampered_program(blobs, tmp_path: Path, tally) -> None:
    manifest, arrays = unpack(blobs["digits_mlp"])
    manifest["steps"][0]["inputs"] = ["ghost"]
    path = tmp_path / "tampered.anacc"
    path.write_bytes(pack(manifest, arrays))
    out = tmp_path / "out.anacc"
    finetune = ["finetune", path, "--data", DATA / "digits_train.npz", "-o", out]
    assert_cli_error(run_cli(tally, finetune), "reads undefined tensor", "ghost")
    export = ["export", path, "-o", tmp_path / "out.onnx"]
    assert_cli_error(run_cli(tally, export), "reads undefined tensor")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tampered.anacc"]
