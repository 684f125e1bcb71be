"""The program file: a :class:`~anacc.compiler.program.Program` in one zip.

Members:
- ``manifest.json``: format name and version, anacc version, the chip description (embedded, so
  the program runs without the chip file), profile, compile options, the source model's hash,
  inputs and outputs, the ONNX opsets, the step list (analog steps naming their layer, digital
  steps with their ONNX-form nodes), the analog layers with their tile tables, the dtypes of
  the tensors steps pass on, and the name, dtype and shape of every array;
- ``arrays.npz``: the numeric arrays (float and integer weights, scales, biases, row slots,
  digital constants, and tensor or subgraph attributes as serialized ONNX attributes),
  read with ``allow_pickle=False``;
- ``checksums.json``: SHA-256 of the two members above, verified on load.

Loading checks the zip's member names and declared sizes before reading anything, then the
checksums, the format version and the schema (:mod:`anacc.compiler.program_checks`). Nothing
is ever unpickled; serialized ONNX attributes are protobuf messages.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np
from anacc.compiler.chip import ChipSpec
from anacc.compiler.datafile import ZIP_COMPRESSIONS, ZIP_ERRORS, InputSpec, read_npz_file
from anacc.compiler.files import atomic_write
from anacc.compiler.ir import Node
from anacc.compiler.mapping import AnalogLayer, Tile
from anacc.compiler.onnx_nodes import decode, encode
from anacc.compiler.partition import ANALOG, DIGITAL, FOLDED, PlacementRecord
from anacc.compiler.program import (
    AnalogStep,
    DigitalStep,
    OutputSpec,
    Program,
    ProgramLayer,
    Step,
)
from anacc.compiler.program_checks import (
    check_conv,
    check_layer,
    check_program,
    integer,
    mapping,
    number,
    text,
)
from onnx import AttributeProto, helper

from anacc import __version__
from anacc.errors import AnaccError, ChipError, ProgramError

FORMAT = "anacc-program"
FORMAT_VERSION = 2
MANIFEST, ARRAYS, CHECKSUMS = "manifest.json", "arrays.npz", "checksums.json"
MEMBERS = (MANIFEST, ARRAYS, CHECKSUMS)
MAX_MEMBER_BYTES = 4 << 30  # refuse zip members that claim more than this when unpacked
MAX_MANIFEST_BYTES = 256 << 20
MAX_FILE_BYTES = MAX_MEMBER_BYTES + 2 * MAX_MANIFEST_BYTES
# members are read in pieces of this size
_READ_CHUNK = 2**24
SIGNED_MODES = ("none", "shift", "split")
# Attribute types written as JSON; the others go to the arrays as serialized attributes.
_JSON_ATTRS = {
    AttributeProto.INT: "INT",
    AttributeProto.FLOAT: "FLOAT",
    AttributeProto.STRING: "STRING",
    AttributeProto.INTS: "INTS",
    AttributeProto.FLOATS: "FLOATS",
    AttributeProto.STRINGS: "STRINGS",
}
_JSON_TYPES = {v: k for k, v in _JSON_ATTRS.items()}


# -- writing ----------------------------------------------------------------------------------


def _float(v: float) -> float | str:
    """JSON has no inf/nan: those are written as strings."""
    return float(v) if math.isfinite(v) else repr(float(v))


def _encode_node(node: Node, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for name, value in sorted(node.attrs.items()):
        kind = node.attr_types.get(name)
        proto = None
        if kind is None:
            proto = helper.make_attribute(name, value)
            kind = proto.type
        if kind in _JSON_ATTRS:
            if kind == AttributeProto.FLOAT:
                value = _float(value)
            elif kind == AttributeProto.FLOATS:
                value = [_float(v) for v in value]
            elif kind == AttributeProto.INTS:
                value = [int(v) for v in value]
            elif kind == AttributeProto.INT:
                value = int(value)
            attrs[name] = {"type": _JSON_ATTRS[kind], "value": value}
            continue
        proto = encode(name, value, kind)
        key = f"attr/{len(arrays)}"
        arrays[key] = np.frombuffer(proto.SerializeToString(), dtype=np.uint8).copy()
        attrs[name] = {"type": AttributeProto.AttributeType.Name(kind), "array": key}
    return {
        "name": node.name,
        "op": node.op,
        "domain": node.domain,
        "inputs": list(node.inputs),
        "outputs": list(node.outputs),
        "attrs": attrs,
        "subgraph_inputs": list(node.subgraph_inputs),
    }


def _encode_step(step: Step, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    if isinstance(step, AnalogStep):
        return {
            "kind": "analog",
            "name": step.name,
            "layer": step.layer,
            "inputs": list(step.inputs),
            "outputs": list(step.outputs),
        }
    return {
        "kind": "digital",
        "name": step.name,
        "inputs": list(step.inputs),
        "outputs": list(step.outputs),
        "nodes": [_encode_node(n, arrays) for n in step.nodes],
    }


def _layer_record(layer: ProgramLayer) -> dict[str, Any]:
    a = layer.analog
    return {
        "name": a.name,
        "in_features": a.in_features,
        "out_features": a.out_features,
        "num_sends": int(a.num_sends),
        "signed": layer.signed,
        "signed_reason": layer.signed_reason,
        "input_scale": layer.input_scale,
        "input_offset": layer.input_offset,
        "row_order": layer.row_order,
        "gain_reason": layer.gain_reason,
        "conv": None if layer.conv is None else layer.conv.to_dict(),
        "source_op": layer.source_op,
        "has_bias": layer.bias is not None,
        "tiles": [t.to_dict() for t in a.tiles],
    }


def _arrays(program: Program) -> dict[str, np.ndarray]:
    arrays = {f"const/{k}": np.asarray(v) for k, v in program.constants.items()}
    for name, layer in program.layers.items():
        a = layer.analog
        arrays[f"layer/{name}/weight"] = np.asarray(a.weight, dtype=np.float32)
        arrays[f"layer/{name}/weight_q"] = np.asarray(a.weight_q, dtype=np.int16)
        arrays[f"layer/{name}/row_slot"] = np.asarray(a.row_slot, dtype=np.int32)
        arrays[f"layer/{name}/weight_scale"] = np.asarray(layer.weight_scale, np.float32)
        if layer.bias is not None:
            arrays[f"layer/{name}/bias"] = np.asarray(layer.bias, dtype=np.float32)
    return arrays


def manifest(program: Program, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The manifest of ``program``; attributes stored as arrays are added to ``arrays``."""
    steps = [_encode_step(s, arrays) for s in program.steps]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "anacc_version": __version__,
        "chip": program.chip.to_dict(),
        "profile": program.profile,
        "options": program.options,
        "source": program.source,
        "opsets": dict(program.opsets),
        "inputs": [
            {"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in program.inputs
        ],
        "outputs": [
            {"name": o.name, "shape": list(o.shape), "dtype": o.dtype, "batch_axis": o.batch_axis}
            for o in program.outputs
        ],
        "steps": steps,
        "layers": [_layer_record(layer) for layer in program.layers.values()],
        "constants": sorted(program.constants),
        "tensor_types": dict(sorted(program.tensor_types.items())),
        "partition": [[r.node, r.op, r.where, r.reason, r.macs] for r in program.partition],
        "warnings": list(program.warnings),
    }


def program_to_bytes(program: Program) -> bytes:
    arrays = _arrays(program)
    m = manifest(program, arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    arrays_bytes = buf.getvalue()
    m["arrays"] = {k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in arrays.items()}
    manifest_bytes = json.dumps(m, indent=1, sort_keys=True).encode()
    checksums = {
        MANIFEST: hashlib.sha256(manifest_bytes).hexdigest(),
        ARRAYS: hashlib.sha256(arrays_bytes).hexdigest(),
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(MANIFEST, manifest_bytes)
        # float weights barely compress (about 20 %) at a high cost in time: store them
        z.writestr(ARRAYS, arrays_bytes, compress_type=zipfile.ZIP_STORED)
        z.writestr(CHECKSUMS, json.dumps(checksums, indent=1).encode())
    return out.getvalue()


# -- reading ----------------------------------------------------------------------------------


def save_program(
    program: Program, path: str | Path, *, protect: tuple[str | Path, ...] = ()
) -> Path:
    """Write ``program`` to ``path`` atomically, never over a ``protect``ed path."""
    path = Path(path)
    atomic_write(path, program_to_bytes(program), protect=protect)
    return path


def load_program(path: str | Path, cls: type[Program] = Program) -> Program:
    """Read and check the program file at ``path`` (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise ProgramError(f"{p}: no such program file")
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ProgramError(f"{p}: {size} bytes is too large for a program file")
    try:
        # the zip read from the file (not the whole file into memory first)
        with p.open("rb") as f:
            return _program_from(f, str(p), cls)
    except OSError as exc:
        raise ProgramError(f"{p}: cannot read ({exc.strerror})") from None


def program_from_bytes(
    data: bytes, where: str = "<program>", cls: type[Program] = Program
) -> Program:
    return _program_from(io.BytesIO(data), where, cls)


def _program_from(source: IO[bytes], where: str, cls: type[Program]) -> Program:
    members = _read_members(source, where)
    sums = _json(members[CHECKSUMS], where, CHECKSUMS)
    for name in (MANIFEST, ARRAYS):
        if (
            not isinstance(sums, dict)
            or sums.get(name) != hashlib.sha256(members[name]).hexdigest()
        ):
            raise ProgramError(f"{where}: checksum mismatch for {name}; the file is corrupt")
    m = _json(members[MANIFEST], where, MANIFEST)
    blob = members.pop(ARRAYS)  # the arrays take its place (it is freed once they are read)
    try:
        return _from_manifest(m, blob, where, cls)
    except AnaccError as exc:
        if isinstance(exc, ProgramError):
            raise
        raise ProgramError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ProgramError(
            f"{where}: malformed manifest ({type(exc).__name__}: {exc}); recompile the model"
        ) from None


def _from_manifest(m: Any, arrays_bytes: bytearray, where: str, cls: type[Program]) -> Program:
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ProgramError(f"{where}: not an anacc program")
    version = m.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProgramError(f"{where}: format version missing")
    if version > FORMAT_VERSION:
        raise ProgramError(
            f"{where}: made by a newer anacc (format {version}, this anacc reads "
            f"{FORMAT_VERSION}); upgrade anacc"
        )
    if version < 1:
        raise ProgramError(f"{where}: unknown format version {version}")
    if version < FORMAT_VERSION:
        raise ProgramError(
            f"{where}: made by an older anacc (format {version}); recompile the model"
        )
    arrays = _read_arrays(arrays_bytes, m.get("arrays", {}), where)
    arrays_bytes.clear()  # the caller's reference stays; its memory goes
    try:
        chip = ChipSpec.from_dict(m["chip"])
    except ChipError as exc:
        raise ProgramError(f"{where}: embedded chip description: {exc}") from None
    if m["profile"] not in chip.profiles:
        raise ProgramError(f"{where}: the chip has no profile {m['profile']!r}")
    layers: dict[str, ProgramLayer] = {}
    for rec in m["layers"]:
        layer = _read_layer(rec, arrays, chip, where)
        if layer.name in layers:
            raise ProgramError(f"{where}: layer {layer.name} appears twice")
        layers[layer.name] = layer
    program = cls(
        chip=chip,
        profile=m["profile"],
        options=mapping(m["options"]),
        source=mapping(m["source"]),
        inputs=[
            InputSpec(text(i["name"]), _shape(i["shape"]), text(i["dtype"])) for i in m["inputs"]
        ],
        outputs=[
            OutputSpec(
                text(o["name"]),
                _shape(o["shape"]),
                text(o["dtype"]),
                None if o["batch_axis"] is None else integer(o["batch_axis"]),
            )
            for o in m["outputs"]
        ],
        steps=[_read_step(s, arrays) for s in m["steps"]],
        layers=layers,
        constants={text(k): arrays[f"const/{k}"] for k in m["constants"]},
        opsets={text(k): integer(v) for k, v in mapping(m["opsets"]).items()},
        tensor_types={text(k): text(v) for k, v in mapping(m["tensor_types"]).items()},
        partition=tuple(_placement(r) for r in m["partition"]),
        warnings=list(map(text, m.get("warnings", []))),
    )
    check_program(program, where)
    return program


def _placement(rec: Any) -> PlacementRecord:
    node, op, where, reason, macs = rec
    if where not in (ANALOG, DIGITAL, FOLDED) or integer(macs) < 0:
        raise ValueError(f"placement record {rec!r} is malformed")
    return PlacementRecord(text(node), text(op), where, text(reason), macs)


def _shape(value: Any) -> tuple[int | str, ...]:
    out = []
    for d in value:
        if isinstance(d, str):
            out.append(d)
        else:
            out.append(integer(d))
            if d < 0:
                raise ValueError(f"negative dimension in {list(value)}")
    return tuple(out)


def _json_float(v: Any) -> float:
    if isinstance(v, str) and v in ("inf", "-inf", "nan"):
        return float(v)
    return number(v)


def _decode_attr(name: str, rec: Any, arrays: dict[str, np.ndarray]) -> tuple[Any, int]:
    rec = mapping(rec)
    kind_name = text(rec["type"])
    if kind_name in _JSON_TYPES:
        kind = _JSON_TYPES[kind_name]
        v = rec["value"]
        if kind == AttributeProto.INT:
            return integer(v), kind
        if kind == AttributeProto.FLOAT:
            return _json_float(v), kind
        if kind == AttributeProto.STRING:
            return text(v), kind
        if kind == AttributeProto.INTS:
            return [integer(x) for x in v], kind
        if kind == AttributeProto.FLOATS:
            return [_json_float(x) for x in v], kind
        return [text(x) for x in v], kind
    blob = arrays[text(rec["array"])]
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise TypeError(f"attribute {name} is not stored as bytes")
    proto = AttributeProto()
    try:
        proto.ParseFromString(blob.tobytes())
    except Exception as exc:  # protobuf raises its DecodeError and others
        raise ValueError(f"attribute {name} does not parse ({exc})") from None
    if proto.name != name or AttributeProto.AttributeType.Name(proto.type) != kind_name:
        raise ValueError(f"attribute {name} holds another attribute")
    return decode(proto), int(proto.type)


def _read_node(rec: Any, arrays: dict[str, np.ndarray]) -> Node:
    rec = mapping(rec)
    attrs, types = {}, {}
    for name, value in mapping(rec["attrs"]).items():
        attrs[text(name)], types[name] = _decode_attr(name, value, arrays)
    return Node(
        name=text(rec["name"]),
        op=text(rec["op"]),
        inputs=tuple(map(text, rec["inputs"])),
        outputs=tuple(map(text, rec["outputs"])),
        attrs=attrs,
        domain=text(rec["domain"]),
        attr_types=types,
        subgraph_inputs=tuple(map(text, rec["subgraph_inputs"])),
    )


def _read_step(rec: Any, arrays: dict[str, np.ndarray]) -> Step:
    rec = mapping(rec)
    kind = text(rec["kind"])
    name = text(rec["name"])
    inputs = tuple(map(text, rec["inputs"]))
    outputs = tuple(map(text, rec["outputs"]))
    if kind == "analog":
        return AnalogStep(name, text(rec["layer"]), inputs, outputs)
    if kind != "digital":
        raise ValueError(f"step {name} has unknown kind {kind!r}")
    nodes = tuple(_read_node(n, arrays) for n in rec["nodes"])
    return DigitalStep(name, nodes, inputs, outputs)


def _read_layer(
    rec: dict, arrays: dict[str, np.ndarray], chip: ChipSpec, where: str
) -> ProgramLayer:
    name = text(rec["name"])
    tiles = tuple(
        Tile(
            integer(t["index"]),
            (integer(t["rows"][0]), integer(t["rows"][1])),
            (integer(t["cols"][0]), integer(t["cols"][1])),
            integer(t["half"]),
            integer(t["col_offset"]),
            integer(t["load"]),
            integer(t["row_offset"]),
            integer(t["copy"]),
            integer(t["run"]),
        )
        for t in rec["tiles"]
    )
    analog = AnalogLayer(
        name=name,
        weight=arrays[f"layer/{name}/weight"],
        weight_q=arrays[f"layer/{name}/weight_q"],
        num_sends=integer(rec["num_sends"]),
        tiles=tiles,
        row_slot=arrays[f"layer/{name}/row_slot"],
    )
    check_layer(analog, chip, where)
    scale = rec["input_scale"]
    signed = text(rec["signed"])
    if signed not in SIGNED_MODES:
        raise ProgramError(f"{where}: layer {name}: unknown signed-input mode {signed!r}")
    if scale is not None and number(scale) <= 0:
        raise ProgramError(f"{where}: layer {name}: input scale {scale} is not positive")
    if not isinstance(rec["has_bias"], bool):
        raise TypeError(f"has_bias of layer {name} is not true or false")
    weight_scale = arrays[f"layer/{name}/weight_scale"]
    bias = arrays[f"layer/{name}/bias"] if rec["has_bias"] else None
    for what, v in (("weight_scale", weight_scale), ("bias", bias)):
        if v is not None and (v.dtype.kind != "f" or v.shape != (analog.out_features,)):
            raise ProgramError(f"{where}: layer {name}: {what} does not fit the weights")
        if v is not None and not np.isfinite(v).all():
            raise ProgramError(f"{where}: layer {name}: {what} is not finite")
    conv = None
    if rec.get("conv") is not None:
        conv = check_conv(mapping(rec["conv"]), analog, where)
    return ProgramLayer(
        analog=analog,
        signed=signed,
        signed_reason=text(rec.get("signed_reason", "")),
        input_scale=None if scale is None else float(scale),
        input_offset=number(rec["input_offset"]),
        weight_scale=weight_scale,
        bias=bias,
        row_order=text(rec["row_order"]),
        gain_reason=text(rec.get("gain_reason", "")),
        conv=conv,
        source_op=text(rec.get("source_op", "MatMul")),
    )


# -- the zip container ------------------------------------------------------------------------


def _read_members(source: IO[bytes], where: str) -> dict[str, bytearray]:
    try:
        z = zipfile.ZipFile(source)
    except ZIP_ERRORS:
        raise ProgramError(f"{where}: not an anacc program (not a zip file)") from None
    with z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        for n in names:
            if n.startswith("/") or ".." in n.split("/") or "\\" in n:
                raise ProgramError(f"{where}: refusing zip member with unsafe path {n!r}")
        if sorted(names) != sorted(MEMBERS):
            raise ProgramError(
                f"{where}: unexpected members {sorted(names)}; expected {list(MEMBERS)}"
            )
        out = {}
        for info in infos:
            limit = MAX_MANIFEST_BYTES if info.filename != ARRAYS else MAX_MEMBER_BYTES
            if info.file_size > limit:
                raise ProgramError(
                    f"{where}: member {info.filename} declares {info.file_size} bytes "
                    f"(limit {limit}); refusing to unpack"
                )
            if info.flag_bits & 0x1 or info.compress_type not in ZIP_COMPRESSIONS:
                raise ProgramError(
                    f"{where}: member {info.filename} is encrypted or compressed in a way "
                    "anacc does not write; the file is not an anacc program"
                )
            try:
                with z.open(info) as f:
                    blob = _read_exactly(f, info.file_size)
            except ZIP_ERRORS as exc:
                raise ProgramError(f"{where}: corrupt member {info.filename} ({exc})") from None
            if len(blob) != info.file_size:
                raise ProgramError(
                    f"{where}: member {info.filename} unpacks to {len(blob)} bytes but declares "
                    f"{info.file_size}; the file is corrupt"
                )
            out[info.filename] = blob
    return out


def _read_exactly(f: IO[bytes], size: int) -> bytearray:
    """Up to ``size`` bytes of ``f`` into one growing buffer (no whole second copy), and one
    byte more if the member holds more than it declares (the caller compares the length).
    The buffer grows with what arrives, not with what the member declares."""
    blob = bytearray()
    while len(blob) <= size:
        chunk = f.read(min(_READ_CHUNK, size + 1 - len(blob)))
        if not chunk:
            break
        blob += chunk
    return blob


def _json(blob: bytes | bytearray, where: str, member: str) -> Any:
    try:
        return json.loads(blob.decode(), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProgramError(f"{where}: {member} is not valid JSON ({exc})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number anacc writes")


class _BufferReader(io.RawIOBase):
    """A seekable binary reader over a buffer without copying it (``io.BytesIO`` copies
    anything but ``bytes``)."""

    def __init__(self, buffer: bytearray) -> None:
        self._view = memoryview(buffer)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), len(self._view) - self._pos)
        b[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._view.release()
        super().close()


def _read_arrays(blob: bytearray, declared: dict, where: str) -> dict[str, np.ndarray]:
    with _BufferReader(blob) as reader:
        arrays = read_npz_file(
            io.BufferedReader(reader),
            f"{where}: {ARRAYS}",
            max_bytes=MAX_MEMBER_BYTES,
            error=ProgramError,
        )
    if set(arrays) != set(declared):
        raise ProgramError(f"{where}: arrays do not match the manifest")
    for k, a in arrays.items():
        d = declared[k]
        if a.dtype.str != d["dtype"]:
            raise ProgramError(f"{where}: array {k} has dtype {a.dtype}, expected {d['dtype']}")
        if list(a.shape) != list(d["shape"]):
            raise ProgramError(f"{where}: array {k} has the wrong shape")
    return arrays
