"""What a program read from a file must satisfy before anything runs it.

A checksum is no signature, so a program edited by hand must pass all of this too: types and
ranges of every manifest field (the small readers below raise TypeError/ValueError, reported
as a malformed manifest), layers whose arrays and tiles fit the chip (:func:`check_layer`),
steps that read only tensors defined before them and ops the digital side runs
(:func:`check_program`), and, as a whole, a graph ONNX accepts: the program written as ONNX
(:func:`anacc.compiler.export.to_onnx`) must pass ``onnx.checker`` with strict shape inference,
so that attributes and shapes agree before any data flows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from anacc.compiler.chip import ChipSpec
from anacc.compiler.conv import ConvGeometry
from anacc.compiler.export import to_onnx
from anacc.compiler.ir import BATCH
from anacc.compiler.mapping import AnalogLayer
from anacc.compiler.onnx_file import one_line
from anacc.compiler.ops import runs_digitally
from anacc.compiler.program import AnalogStep, DigitalStep, Program

from anacc.errors import ProgramError

# -- manifest fields ---------------------------------------------------------------------------


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(value: Any) -> int:
    if not _is_int(value):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def number(value: Any) -> float:
    ok = _is_int(value) or (isinstance(value, float) and math.isfinite(value))
    if not ok:
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def mapping(value: Any) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {value!r}")
    return dict(value)


def dims(value: Any) -> tuple[int, ...]:
    out = tuple(integer(d) for d in value)
    if any(d < 0 for d in out):
        raise ValueError(f"negative dimension in {list(out)}")
    return out


# -- layers ------------------------------------------------------------------------------------


def check_layer(a: AnalogLayer, chip: ChipSpec, where: str) -> None:
    """The layer fits the chip the way the backends rely on (see ``build_chunk_layout``):
    every copy's tiles cover the weights once, on the chip, and the tiles of one run on a
    half take disjoint row pairs unless they hold the same input."""
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
    rows = chip.signed_inputs_per_run
    cols = min(chip.columns_per_half, chip.outputs_per_run)
    if not a.tiles or any(t.copy < 0 or t.run < 0 for t in a.tiles):
        raise ProgramError(f"{where}: layer {a.name}: tiles are missing or misnumbered")
    if a.copies > max(n_in * n_out, 1) * chip.halves * rows:
        raise ProgramError(f"{where}: layer {a.name}: too many copies")
    cover = np.zeros((a.copies, n_in, n_out), dtype=np.int32)
    for t in a.tiles:
        if not (0 <= t.rows[0] < t.rows[1] <= n_in and 0 <= t.cols[0] < t.cols[1] <= n_out):
            raise ProgramError(f"{where}: layer {a.name}: tile {t.index} out of bounds")
        placed = 0 <= t.half < chip.halves and t.col_offset >= 0 and t.load >= 0
        placed = placed and t.row_offset >= 0 and t.row_offset + t.n_rows <= rows
        if not placed or t.col_offset + t.n_cols > cols:
            raise ProgramError(f"{where}: layer {a.name}: tile {t.index} lies outside the chip")
        cover[t.copy, t.rows[0] : t.rows[1], t.cols[0] : t.cols[1]] += 1
    if not (cover == 1).all():
        raise ProgramError(f"{where}: layer {a.name}: tiles do not cover the weights once")
    runs: dict[int, set[int]] = {}
    for t in a.tiles:
        runs.setdefault(t.run, set()).add(t.load)
    if any(len(loads) > 1 for loads in runs.values()):
        raise ProgramError(f"{where}: layer {a.name}: a run spans chip loads")
    _check_run_rows(a, where)
    chunks = a.row_chunks
    contiguous = all(x[1] == y[0] for x, y in zip(chunks, chunks[1:], strict=False))
    if not contiguous or any(stop - start > rows for start, stop in chunks):
        raise ProgramError(f"{where}: layer {a.name}: tile rows do not split into chip runs")
    for start, stop in chunks:
        slots = a.row_slot[start:stop]
        if slots.min() < 0 or slots.max() >= stop - start or np.unique(slots).size != slots.size:
            raise ProgramError(f"{where}: layer {a.name}: row slots are invalid")


def _check_run_rows(a: AnalogLayer, where: str) -> None:
    """Tiles of one run and half whose row pairs overlap hold the same input."""
    held: dict[tuple[int, int], list] = {}
    for t in a.tiles:
        held.setdefault((t.run, t.half), []).append(t)
    for tiles in held.values():
        for i, x in enumerate(tiles):
            for y in tiles[i + 1 :]:
                overlap = x.row_offset < y.row_offset + y.n_rows and (
                    y.row_offset < x.row_offset + x.n_rows
                )
                if overlap and (x.copy, x.rows, x.row_offset) != (y.copy, y.rows, y.row_offset):
                    raise ProgramError(
                        f"{where}: layer {a.name}: tiles {x.index} and {y.index} fire in one "
                        "run on shared row pairs with different inputs"
                    )


def check_columns(program: Program, where: str) -> None:
    """Every tile of a load owns its neurons: no two tiles share a column of a half."""
    owner: dict[tuple[int, int, int], str] = {}
    for layer in program.layers.values():
        for t in layer.analog.tiles:
            for col in range(t.col_offset, t.col_offset + t.n_cols):
                key = (t.load, t.half, col)
                if key in owner:
                    raise ProgramError(
                        f"{where}: layer {layer.name}: tile {t.index} uses neuron {col} of "
                        f"half {t.half}, load {t.load}, which {owner[key]} uses too"
                    )
                owner[key] = f"layer {layer.name}"


def check_conv(conv: dict, a: AnalogLayer, where: str) -> ConvGeometry:
    """The convolution geometry of a layer record, which must fit the layer's weights."""
    kernel = dims(conv["kernel_shape"])
    n = len(kernel)
    strides, dilations, pads = (dims(conv[k]) for k in ("strides", "dilations", "pads"))
    group, c_in, c_out = (integer(conv[k]) for k in ("group", "in_channels", "out_channels"))
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
    return ConvGeometry(kernel, strides, pads, dilations, group, c_in, c_out)


# -- the program as a whole --------------------------------------------------------------------


def check_program(program: Program, where: str) -> None:
    """Dataflow, ops and the program's ONNX form (see the module docstring)."""
    _check_specs(program, where)
    check_columns(program, where)
    _check_dataflow(program, where)
    try:
        model = to_onnx(program)
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ProgramError(
            f"{where}: the steps do not form a valid model ({one_line(exc)}); recompile the model"
        ) from None


def _check_specs(program: Program, where: str) -> None:
    """Inputs are typed tensors whose only symbol is a leading batch ``N``; each output's
    batch axis holds the batch."""
    for spec in program.inputs:
        if any(isinstance(d, str) and (i or d != BATCH) for i, d in enumerate(spec.shape)):
            raise ProgramError(f"{where}: input {spec.name} has a symbolic dimension past axis 0")
        _dtype(spec.dtype, where)
    for out in program.outputs:
        axis = out.batch_axis
        if axis is not None and not (0 <= axis < len(out.shape) and out.shape[axis] == BATCH):
            raise ProgramError(f"{where}: output {out.name} has no batch at axis {axis}")
        if axis is not None and not program.batched:
            raise ProgramError(f"{where}: output {out.name} has a batch axis, the inputs none")
        _dtype(out.dtype, where)


def _dtype(name: str, where: str) -> None:
    try:
        np.dtype(name)
    except TypeError:
        raise ProgramError(f"{where}: unknown dtype {name!r}") from None


def _check_dataflow(program: Program, where: str) -> None:
    """Every step reads only tensors known at that point and defines new ones."""
    known = {i.name for i in program.inputs} | set(program.constants)
    if len(known) != len(program.inputs) + len(program.constants):
        raise ProgramError(f"{where}: input and constant names collide")
    names = set()
    for s in program.steps:
        if s.name in names:
            raise ProgramError(f"{where}: step {s.name} appears twice")
        names.add(s.name)
        missing = [t for t in s.inputs if not t or t not in known]
        if missing:
            raise ProgramError(f"{where}: step {s.name} reads undefined tensor(s) {missing}")
        if isinstance(s, AnalogStep):
            if s.layer not in program.layers or len(s.inputs) != 1 or len(s.outputs) != 1:
                raise ProgramError(f"{where}: step {s.name} refers to a missing layer")
        else:
            _check_region(program, s, known, where)
        if not s.outputs or any(not t or t in known for t in s.outputs):
            raise ProgramError(f"{where}: step {s.name} redefines or omits its outputs")
        known.update(s.outputs)
    absent = [o.name for o in program.outputs if o.name not in known]
    if absent or not program.outputs:
        raise ProgramError(f"{where}: output(s) {absent} are never computed")


def _check_region(program: Program, step: DigitalStep, known: set[str], where: str) -> None:
    inside = set(step.inputs) | set(program.constants)
    for node in step.nodes:
        opset = program.opsets.get(node.domain)
        if opset is None or not runs_digitally(node.op, node.domain, opset):
            raise ProgramError(f"{where}: step {step.name} has unknown op {node.op!r}")
        missing = [t for t in node.reads if t not in inside]
        if missing:
            raise ProgramError(
                f"{where}: node {node.name} of step {step.name} reads undefined tensor(s) {missing}"
            )
        if any(t in inside for t in node.outputs if t):
            raise ProgramError(f"{where}: node {node.name} redefines a tensor")
        inside.update(t for t in node.outputs if t)
    missing = [t for t in step.outputs if t not in inside]
    if missing:
        raise ProgramError(f"{where}: step {step.name} does not compute {missing}")
