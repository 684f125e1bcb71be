"""The program file: everything needed to run a compiled model, in one zip.

Members:
- ``manifest.json``: format name and version, anacc version, the chip description (embedded, so
  the program runs without the chip file), profile, compile options, the source model's hash,
  inputs and outputs, the step list, the analog layers with their tile tables, and the name,
  dtype and shape of every array;
- ``arrays.npz``: the numeric arrays (float and integer weights, scales, biases, row slots,
  digital constants), read with ``allow_pickle=False``;
- ``checksums.json``: SHA-256 of the two members above, verified on load.

Loading checks the zip's member names and declared sizes before reading anything, then the
checksums, the format version and the schema: types and ranges of every field, arrays that fit
the layers, tiles that fit the chip, and steps that read only tensors defined before them. A
checksum is no signature, so a program edited by hand must pass all of that too. Nothing is
ever unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from anacc.compiler.chip import ChipSpec
from anacc.compiler.datafile import ZIP_COMPRESSIONS, ZIP_ERRORS, InputSpec, read_npz_file
from anacc.compiler.ir import Node, Shape
from anacc.compiler.mapping import AnalogLayer, Tile
from anacc.compiler.opset import SUPPORTED_OPS
from anacc.compiler.shapes import format_shape, infer_output_shapes

from anacc import __version__
from anacc.errors import AnaccError, ChipError, OptionError, ProgramError

FORMAT = "anacc-program"
FORMAT_VERSION = 1
MANIFEST, ARRAYS, CHECKSUMS = "manifest.json", "arrays.npz", "checksums.json"
MEMBERS = (MANIFEST, ARRAYS, CHECKSUMS)
MAX_MEMBER_BYTES = 4 << 30  # refuse zip members that claim more than this when unpacked
MAX_MANIFEST_BYTES = 256 << 20
MAX_FILE_BYTES = MAX_MEMBER_BYTES + 2 * MAX_MANIFEST_BYTES
SIGNED_MODES = ("none", "shift", "split")
_CONV_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "group")
# The type of every attribute of the IR ops (docs/ir.md); the same name has one type in all.
_ATTR_KINDS = {
    **dict.fromkeys(
        ("axis", "group", "ceil_mode", "count_include_pad", "keepdims", "allowzero", "size"), "int"
    ),
    **dict.fromkeys(("transA", "transB"), "int"),
    **dict.fromkeys(
        ("kernel_shape", "strides", "pads", "dilations", "perm", "axes", "shape"), "ints"
    ),
    **dict.fromkeys(("alpha", "beta", "epsilon", "bias", "value"), "float"),
    **dict.fromkeys(("min", "max"), "float?"),
    "coerce_2d": "bool",
    "mode": "str",
}


@dataclass(frozen=True)
class Step:
    """One operation of the program: an analog ``Linear`` or a digital IR op."""

    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def analog(self) -> bool:
        return self.op == "Linear"


@dataclass
class ProgramLayer:
    """An analog layer: the chip mapping plus the digital pre- and post-processing."""

    analog: AnalogLayer
    signed: str
    signed_reason: str
    input_scale: float | None
    input_offset: float
    weight_scale: np.ndarray  # float32 (out_features,)
    bias: np.ndarray | None  # float32 (out_features,)
    row_order: str
    gain_reason: str = ""
    conv: dict | None = None

    @property
    def name(self) -> str:
        return self.analog.name


@dataclass(frozen=True)
class OutputSpec:
    name: str
    sample_shape: tuple[int | str, ...]


@dataclass
class Program:
    """A compiled model. ``Program.load(path)`` / ``program.save(path)`` round-trip exactly."""

    chip: ChipSpec
    profile: str
    options: dict[str, Any]
    source: dict[str, Any]
    inputs: list[InputSpec]
    outputs: list[OutputSpec]
    steps: list[Step]
    layers: dict[str, ProgramLayer]
    constants: dict[str, np.ndarray]
    warnings: list[str] = field(default_factory=list)
    explain: str = ""

    # -- writing ------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"const/{k}": v for k, v in self.constants.items()}
        for name, layer in self.layers.items():
            a = layer.analog
            arrays[f"layer/{name}/weight"] = np.asarray(a.weight, dtype=np.float32)
            arrays[f"layer/{name}/weight_q"] = np.asarray(a.weight_q, dtype=np.int16)
            arrays[f"layer/{name}/row_slot"] = np.asarray(a.row_slot, dtype=np.int32)
            arrays[f"layer/{name}/weight_scale"] = np.asarray(layer.weight_scale, np.float32)
            if layer.bias is not None:
                arrays[f"layer/{name}/bias"] = np.asarray(layer.bias, dtype=np.float32)
        return arrays

    def manifest(self) -> dict[str, Any]:
        layers = []
        for layer in self.layers.values():
            a = layer.analog
            layers.append(
                {
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
                    "conv": layer.conv,
                    "has_bias": layer.bias is not None,
                    "tiles": [
                        {
                            "index": t.index,
                            "rows": list(t.rows),
                            "cols": list(t.cols),
                            "half": t.half,
                            "col_offset": t.col_offset,
                            "load": t.load,
                        }
                        for t in a.tiles
                    ],
                }
            )
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "anacc_version": __version__,
            "chip": self.chip.to_dict(),
            "profile": self.profile,
            "options": self.options,
            "source": self.source,
            "inputs": [
                {"name": i.name, "shape": list(i.sample_shape), "dtype": i.dtype}
                for i in self.inputs
            ],
            "outputs": [{"name": o.name, "shape": list(o.sample_shape)} for o in self.outputs],
            "steps": [
                {
                    "op": s.op,
                    "name": s.name,
                    "inputs": list(s.inputs),
                    "outputs": list(s.outputs),
                    "attrs": s.attrs,
                }
                for s in self.steps
            ],
            "layers": layers,
            "constants": sorted(self.constants),
            "warnings": list(self.warnings),
        }

    def to_bytes(self) -> bytes:
        arrays = self._arrays()
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        arrays_bytes = buf.getvalue()
        manifest = self.manifest()
        manifest["arrays"] = {
            k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in arrays.items()
        }
        manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True).encode()
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

    def save(self, path: str | Path, *, protect: tuple[str | Path, ...] = ()) -> Path:
        """Write atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        atomic_write(path, self.to_bytes(), protect=protect)
        return path

    # -- reading ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Program:
        p = Path(path)
        if not p.is_file():
            raise ProgramError(f"{p}: no such program file")
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ProgramError(f"{p}: {size} bytes is too large for a program file")
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ProgramError(f"{p}: cannot read ({exc.strerror})") from None
        return cls.from_bytes(data, str(p))

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "<program>") -> Program:
        members = _read_members(data, where)
        sums = _json(members[CHECKSUMS], where, CHECKSUMS)
        for name in (MANIFEST, ARRAYS):
            if (
                not isinstance(sums, dict)
                or sums.get(name) != hashlib.sha256(members[name]).hexdigest()
            ):
                raise ProgramError(f"{where}: checksum mismatch for {name}; the file is corrupt")
        m = _json(members[MANIFEST], where, MANIFEST)
        try:
            return cls._from_manifest(m, members[ARRAYS], where)
        except AnaccError as exc:
            if isinstance(exc, ProgramError):
                raise
            raise ProgramError(f"{where}: {exc}") from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ProgramError(
                f"{where}: malformed manifest ({type(exc).__name__}: {exc}); recompile the model"
            ) from None

    @classmethod
    def _from_manifest(cls, m: dict, arrays_bytes: bytes, where: str) -> Program:
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
        arrays = _read_arrays(arrays_bytes, m.get("arrays", {}), where)
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
        inputs = [
            InputSpec(_text(i["name"]), _dims(i["shape"]), _text(i["dtype"])) for i in m["inputs"]
        ]
        outputs = [OutputSpec(_text(o["name"]), tuple(o["shape"])) for o in m["outputs"]]
        steps = [
            Step(
                _text(s["op"]),
                _text(s["name"]),
                tuple(map(_text, s["inputs"])),
                tuple(map(_text, s["outputs"])),
                _attrs(s["attrs"]),
            )
            for s in m["steps"]
        ]
        constants = {_text(k): arrays[f"const/{k}"] for k in m["constants"]}
        _check_dataflow(inputs, outputs, steps, layers, constants, where)
        _check_shapes(inputs, outputs, steps, layers, constants, where)
        return cls(
            chip=chip,
            profile=m["profile"],
            options=_mapping(m["options"]),
            source=_mapping(m["source"]),
            inputs=inputs,
            outputs=outputs,
            steps=steps,
            layers=layers,
            constants=constants,
            warnings=list(map(_text, m.get("warnings", []))),
        )


# -- checking what a manifest says ------------------------------------------------------------
# Wrong types raise TypeError/ValueError, which ``from_bytes`` reports as a malformed manifest.


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _int(value: Any) -> int:
    if not _is_int(value):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _number(value: Any) -> float:
    if not _is_number(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def _mapping(value: Any) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {value!r}")
    return dict(value)


def _attrs(value: Any) -> dict[str, Any]:
    """A digital step's attributes, each of the type the IR gives it."""
    attrs = _mapping(value)
    for name, v in attrs.items():
        kind = _ATTR_KINDS.get(name)
        ok = (
            kind is None
            or (kind == "int" and _is_int(v))
            or (kind == "ints" and isinstance(v, list) and all(_is_int(i) for i in v))
            or (kind in ("float", "float?") and _is_number(v))
            or (kind == "float?" and v is None)
            or (kind == "bool" and isinstance(v, bool))
            or (kind == "str" and isinstance(v, str))
        )
        if not ok:
            raise TypeError(f"attribute {name}={v!r} is not of type {kind}")
    return attrs


def _dims(value: Any) -> tuple[int, ...]:
    dims = tuple(_int(d) for d in value)
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimension in {list(dims)}")
    return dims


def _read_layer(
    rec: dict, arrays: dict[str, np.ndarray], chip: ChipSpec, where: str
) -> ProgramLayer:
    name = _text(rec["name"])
    tiles = tuple(
        Tile(
            _int(t["index"]),
            (_int(t["rows"][0]), _int(t["rows"][1])),
            (_int(t["cols"][0]), _int(t["cols"][1])),
            _int(t["half"]),
            _int(t["col_offset"]),
            _int(t["load"]),
        )
        for t in rec["tiles"]
    )
    analog = AnalogLayer(
        name=name,
        weight=arrays[f"layer/{name}/weight"],
        weight_q=arrays[f"layer/{name}/weight_q"],
        num_sends=_int(rec["num_sends"]),
        tiles=tiles,
        row_slot=arrays[f"layer/{name}/row_slot"],
    )
    _check_layer(analog, chip, where)
    scale = rec["input_scale"]
    signed = _text(rec["signed"])
    if signed not in SIGNED_MODES:
        raise ProgramError(f"{where}: layer {name}: unknown signed-input mode {signed!r}")
    if scale is not None and _number(scale) <= 0:
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
    conv = rec.get("conv")
    if conv is not None:
        _check_conv(_mapping(conv), analog, where)
    return ProgramLayer(
        analog=analog,
        signed=signed,
        signed_reason=_text(rec.get("signed_reason", "")),
        input_scale=None if scale is None else float(scale),
        input_offset=_number(rec["input_offset"]),
        weight_scale=weight_scale,
        bias=bias,
        row_order=_text(rec["row_order"]),
        gain_reason=_text(rec.get("gain_reason", "")),
        conv=conv,
    )


def _check_layer(a: AnalogLayer, chip: ChipSpec, where: str) -> None:
    """The layer fits the chip the way the backends rely on (see ``build_chunk_layout``)."""
    ok_kinds = a.weight.dtype.kind == "f" and a.weight_q.dtype.kind in "iu"
    if not ok_kinds or a.row_slot.dtype.kind not in "iu" or a.weight.ndim != 2:
        raise ProgramError(f"{where}: layer {a.name}: arrays have the wrong dtypes or rank")
    n_in, n_out = a.weight.shape
    if a.weight_q.shape != a.weight.shape or a.row_slot.shape != (n_in,):
        raise ProgramError(f"{where}: layer {a.name}: array shapes disagree")
    if not np.isfinite(a.weight).all():
        raise ProgramError(f"{where}: layer {a.name}: weights are not finite")
    if np.abs(a.weight_q.astype(np.int64)).max(initial=0) > chip.weight_max:
        raise ProgramError(f"{where}: layer {a.name}: weights exceed the chip's range")
    if not 1 <= a.num_sends <= chip.num_sends_max:
        raise ProgramError(f"{where}: layer {a.name}: num_sends {a.num_sends} out of range")
    cover = np.zeros((n_in, n_out), dtype=np.int32)
    for t in a.tiles:
        if not (0 <= t.rows[0] < t.rows[1] <= n_in and 0 <= t.cols[0] < t.cols[1] <= n_out):
            raise ProgramError(f"{where}: layer {a.name}: tile {t.index} out of bounds")
        placed = 0 <= t.half < chip.halves and t.col_offset >= 0 and t.load >= 0
        if not placed or t.col_offset + t.n_cols > min(chip.columns_per_half, chip.outputs_per_run):
            raise ProgramError(f"{where}: layer {a.name}: tile {t.index} lies outside the chip")
        cover[t.rows[0] : t.rows[1], t.cols[0] : t.cols[1]] += 1
    if not (cover == 1).all():
        raise ProgramError(f"{where}: layer {a.name}: tiles do not cover the weights once")
    chunks = a.row_chunks
    contiguous = all(x[1] == y[0] for x, y in zip(chunks, chunks[1:], strict=False))
    if not contiguous or any(stop - start > chip.signed_inputs_per_run for start, stop in chunks):
        raise ProgramError(f"{where}: layer {a.name}: tile rows do not split into chip runs")
    for start, stop in chunks:
        slots = a.row_slot[start:stop]
        if (
            slots.min() < 0
            or slots.max() >= chip.signed_inputs_per_run
            or (np.unique(slots).size != slots.size)
        ):
            raise ProgramError(f"{where}: layer {a.name}: row slots are invalid")


def _check_conv(conv: dict, a: AnalogLayer, where: str) -> None:
    kernel = _dims(conv["kernel_shape"])
    n = len(kernel)
    strides, dilations, pads = (_dims(conv[k]) for k in ("strides", "dilations", "pads"))
    group, c_in, c_out = (_int(conv[k]) for k in ("group", "in_channels", "out_channels"))
    shapes_ok = n in (1, 2) and len(strides) == len(dilations) == n and len(pads) == 2 * n
    positive = min((*kernel, *strides, *dilations, group, c_in, c_out), default=0) >= 1
    fits = (
        shapes_ok
        and positive
        and c_in % group == 0
        and c_out % group == 0
        and a.in_features == c_in // group * group * int(np.prod(kernel))
        and a.out_features == c_out
    )
    if not fits:
        raise ProgramError(f"{where}: layer {a.name}: the convolution does not fit its weights")


def _check_dataflow(
    inputs: list[InputSpec],
    outputs: list[OutputSpec],
    steps: list[Step],
    layers: dict[str, ProgramLayer],
    constants: dict[str, np.ndarray],
    where: str,
) -> None:
    """Every step reads only tensors known at that point and defines new ones."""
    known = {i.name for i in inputs} | set(constants)
    if len(known) != len(inputs) + len(constants):
        raise ProgramError(f"{where}: input and constant names collide")
    for s in steps:
        if s.analog:
            if s.name not in layers or len(s.inputs) != 1 or len(s.outputs) != 1:
                raise ProgramError(f"{where}: step {s.name} refers to a missing layer")
        elif s.op not in SUPPORTED_OPS:
            raise ProgramError(f"{where}: step {s.name} has unknown op {s.op!r}")
        missing = [t for t in s.inputs if t and t not in known]
        if missing or not s.inputs:
            raise ProgramError(f"{where}: step {s.name} reads undefined tensor(s) {missing}")
        if not s.outputs or any(not t or t in known for t in s.outputs):
            raise ProgramError(f"{where}: step {s.name} redefines or omits its outputs")
        known.update(s.outputs)
    absent = [o.name for o in outputs if o.name not in known]
    if absent or not outputs:
        raise ProgramError(f"{where}: output(s) {absent} are never computed")


def _check_shapes(
    inputs: list[InputSpec],
    outputs: list[OutputSpec],
    steps: list[Step],
    layers: dict[str, ProgramLayer],
    constants: dict[str, np.ndarray],
    where: str,
) -> None:
    """Every step's attributes fit the shapes it receives, and the outputs come out as
    declared (the compiler's shape rules, with the batch as the symbol ``N``)."""
    shapes: dict[str, Shape] = {"": ()}
    shapes.update({i.name: ("N", *i.sample_shape) for i in inputs})
    shapes.update({k: tuple(int(d) for d in v.shape) for k, v in constants.items()})
    for s in steps:
        in_shapes = [shapes[t] for t in s.inputs]
        if s.analog:
            out = _linear_shape(layers[s.name], in_shapes[0], where)
        else:
            node = Node(s.name, s.op, list(s.inputs), list(s.outputs), s.attrs)
            [out] = infer_output_shapes(node, in_shapes)
        shapes.update({t: out for t in s.outputs})
    for o in outputs:
        got = shapes[o.name]
        if not got or not isinstance(got[0], str) or tuple(got[1:]) != tuple(o.sample_shape):
            raise ProgramError(
                f"{where}: output {o.name} comes out as {format_shape(shapes[o.name])}, not "
                f"as declared; recompile the model"
            )


def _linear_shape(layer: ProgramLayer, x: Shape, where: str) -> Shape:
    a = layer.analog
    if layer.conv is None:
        if not x or x[-1] != a.in_features:
            raise ProgramError(f"{where}: layer {a.name} does not fit its input {format_shape(x)}")
        return (*x[:-1], a.out_features)
    conv = layer.conv
    kernel = conv["kernel_shape"]
    c_in, c_out, group = conv["in_channels"], conv["out_channels"], conv["group"]
    node = Node(a.name, "Conv", ["x", "w"], ["y"], {k: conv[k] for k in _CONV_ATTRS})
    if len(x) != 2 + len(kernel) or x[1] != c_in:
        raise ProgramError(f"{where}: layer {a.name} does not fit its input {format_shape(x)}")
    [out] = infer_output_shapes(node, [x, (c_out, c_in // group, *kernel)])
    return out


# -- the zip container ------------------------------------------------------------------------


def _read_members(data: bytes, where: str) -> dict[str, bytes]:
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
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
                    blob = f.read(limit + 1)
            except ZIP_ERRORS as exc:
                raise ProgramError(f"{where}: corrupt member {info.filename} ({exc})") from None
            if len(blob) > limit:
                raise ProgramError(f"{where}: member {info.filename} unpacks beyond its limit")
            if len(blob) != info.file_size:
                raise ProgramError(
                    f"{where}: member {info.filename} unpacks to {len(blob)} bytes but declares "
                    f"{info.file_size}; the file is corrupt"
                )
            out[info.filename] = blob
    return out


def _json(blob: bytes, where: str, member: str) -> Any:
    try:
        return json.loads(blob.decode(), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProgramError(f"{where}: {member} is not valid JSON ({exc})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number anacc writes")


def _read_arrays(blob: bytes, declared: dict, where: str) -> dict[str, np.ndarray]:
    arrays = read_npz_file(
        io.BytesIO(blob), f"{where}: {ARRAYS}", max_bytes=MAX_MEMBER_BYTES, error=ProgramError
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


# -- writing files ----------------------------------------------------------------------------


def atomic_write(path: Path, data: bytes, *, protect: tuple[str | Path, ...] = ()) -> None:
    """Write ``data`` to ``path`` through a temp file and a rename, so that ``path`` is
    either untouched or complete; refuse ``protect``ed paths (the command's inputs). The file
    gets the usual permissions (``0o666`` less the umask)."""
    path = Path(path)
    target = path.resolve()
    for p in protect:
        if Path(p).resolve() == target or (
            path.exists() and Path(p).exists() and os.path.samefile(p, path)
        ):
            raise ProgramError(f"{path}: refusing to overwrite an input file; choose another -o")
    if path.is_dir():
        raise OptionError(f"{path}: is a folder; give a file name to write")
    if not path.parent.is_dir():
        raise OptionError(f"{path}: folder {path.parent} does not exist")
    umask = os.umask(0)
    os.umask(umask)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OptionError(
            f"{path}: cannot write here ({exc.strerror}); choose another -o"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OptionError(f"{path}: cannot write ({exc.strerror}); choose another -o") from None
        raise
