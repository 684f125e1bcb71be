"""The executor: walks a program's step list over batches of data.

Digital steps run as torch ops on the host (:mod:`anacc.runtime.digital_ops`). An analog step
encodes its input into the chip's unsigned range (per its signed-input strategy), calls the
backend once with all of the layer's tiles and input parts (stacked along the batch), sums
the per-run ADC reads digitally and rescales them to float. The ``ideal`` backend gets the
float input instead.

Every run counts, per analog layer, the inputs outside the range the layer's input encoding
represents (they are clipped); :attr:`RunResult.warnings` reports them. A step that cannot run
on what it is given (a program edited by hand) is a :class:`~anacc.errors.ProgramError`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from anacc.compiler.datafile import Dataset, match_inputs
from anacc.compiler.program import Program, ProgramLayer, Step
from anacc.compiler.quant import (
    col2im,
    conv_output_shape,
    encode_stacked,
    im2col,
    im2col_multiplicity,
)
from anacc.runtime.backends import Backend, get_backend
from anacc.runtime.digital_ops import run_op

from anacc.errors import DataError, ProgramError


@dataclass
class LayerTrace:
    """What one analog layer saw during a run (collected only when tracing is on)."""

    adc: list[torch.Tensor] = field(default_factory=list)  # per call: (rows, chunks, out)
    clipped_inputs: int = 0
    inputs: int = 0


@dataclass
class ClipCount:
    """Inputs one analog layer received, and how many lay outside its calibrated range."""

    clipped: int = 0
    inputs: int = 0

    @property
    def fraction(self) -> float:
        return self.clipped / self.inputs if self.inputs else 0.0


def count_clipped(
    layer: ProgramLayer,
    rows: torch.Tensor,
    scale: float,
    offset: float,
    input_max: int,
    extremes: tuple[float, float] | None = None,
    copies: torch.Tensor | None = None,
) -> int:
    """Entries of ``rows`` outside the range that ``(scale, offset)`` encodes. With
    ``extremes``, the smallest and largest entry, a side that nothing passes is not counted;
    with ``copies`` (broadcast against ``rows``), each entry counts that many times."""
    hi = offset + scale * input_max
    lo = -hi if layer.signed == "split" else offset

    def count(mask: torch.Tensor) -> int:
        if copies is None:
            return int(torch.count_nonzero(mask))
        return round(float(torch.sum(mask * copies, dtype=torch.float64)))

    if extremes is None or lo > hi:
        return count((rows < lo) | (rows > hi))
    # float32 entries >= a float64 bound also pass the bound rounded to float32
    below = count(rows < lo) if extremes[0] < lo else 0
    above = count(rows > hi) if extremes[1] > hi else 0
    return below + above


def analog_rows(layer: ProgramLayer, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """The layer input as chip input vectors ``(rows, in_features)`` and how to fold back."""
    if layer.conv is not None:
        spatial = tuple(x.shape[2:])
        return im2col(x, layer.conv), ("conv", x.shape[0], conv_output_shape(spatial, layer.conv))
    lead = tuple(x.shape[:-1])
    return x.reshape(-1, x.shape[-1]), ("dense", lead)


def fold_rows(y: torch.Tensor, how: tuple) -> torch.Tensor:
    if how[0] == "conv":
        return col2im(y, how[1], how[2])
    return y.reshape(*how[1], y.shape[-1])


def input_encoding(
    layer: ProgramLayer,
    rows: torch.Tensor,
    input_max: int,
    extremes: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """``(scale, offset)`` of the input LSB: the program's static ones, or, for a program
    compiled without calibration data, the batch's own (``extremes``: its smallest and
    largest entry, where already known)."""
    if layer.input_scale is not None:
        return layer.input_scale, layer.input_offset
    lowest, highest = extremes if extremes is not None else (float(rows.min()), float(rows.max()))
    offset = 0.0
    if layer.signed == "split":
        span = max(-lowest, highest)
    elif layer.signed == "shift":
        offset = min(lowest, 0.0)
        span = highest - offset
    else:
        span = highest
    return (span / input_max if span > 0 else 1.0), offset


def _extremes(layer: ProgramLayer, values: torch.Tensor) -> tuple[float, float] | None:
    """Smallest and largest entry (None if empty); a NaN is a :class:`DataError`."""
    if not values.numel():
        return None
    # one pass for the NaN check, a dynamic scale and the clip count (aminmax gives NaN if any
    # entry is NaN)
    extremes = tuple(float(v) for v in torch.aminmax(values))
    if math.isnan(extremes[0]):
        raise DataError(
            f"analog layer {layer.analog.name} received {int(torch.isnan(values).sum())} NaN "
            "values: an earlier step overflowed float32; scale the input data into a moderate "
            "range"
        )
    return extremes  # type: ignore[return-value]


def _rescale(
    layer: ProgramLayer, backend: Backend, reads: torch.Tensor, scale: float, offset: float
) -> torch.Tensor:
    """ADC reads ``(parts * B, chunks, out)`` -> float ``(B, out)``: the digital sum over the
    row chunks and parts, rescaled, plus the shift correction and the bias."""
    a = layer.analog
    # the sum over row chunks is a new tensor: rescale and correct it in place
    summed = reads.sum(dim=1)
    if layer.signed == "split":  # the digital combination: positive minus negative part
        batch = summed.shape[0] // 2
        y = summed[:batch] - summed[batch:]
    else:
        y = summed
    w_scale = torch.from_numpy(layer.weight_scale)
    gain = backend.gain_per_send * a.num_sends
    y.mul_(w_scale * (scale / gain))
    if layer.signed == "shift" and offset != 0.0:
        w_deq = torch.from_numpy(a.weight_q.astype(np.float32)) * w_scale
        y.add_(offset * w_deq.sum(dim=0))
    if layer.bias is not None:
        y.add_(torch.from_numpy(layer.bias))
    return y


def analog_linear(
    layer: ProgramLayer,
    rows: torch.Tensor,
    backend: Backend,
    trace: LayerTrace | None = None,
    clip: ClipCount | None = None,
) -> torch.Tensor:
    """``rows @ W + b`` computed the way the chip computes it (no autograd); counts clipped
    inputs into ``trace`` and ``clip`` where given."""
    a = layer.analog
    if not backend.quantizes:
        y = backend.linear(a, rows)
        return y + torch.from_numpy(layer.bias) if layer.bias is not None else y
    chip = backend.chip
    extremes = _extremes(layer, rows)
    scale, offset = input_encoding(layer, rows, chip.input_max, extremes)
    # the parts of a split input run in one call, stacked along the batch
    reads = backend.mac(a, encode_stacked(rows, layer.signed, scale, offset, chip.input_max))
    if trace is not None or clip is not None:
        clipped = count_clipped(layer, rows, scale, offset, chip.input_max, extremes)
    if trace is not None:
        batch = rows.shape[0]
        parts = [reads[:batch], reads[batch:]] if layer.signed == "split" else [reads]
        trace.adc.extend(r.detach() for r in parts)
        trace.inputs += rows.numel()
        trace.clipped_inputs += clipped
    if clip is not None:
        clip.inputs += rows.numel()
        clip.clipped += clipped
    return _rescale(layer, backend, reads, scale, offset)


def analog_step(
    layer: ProgramLayer,
    x: torch.Tensor,
    backend: Backend,
    trace: LayerTrace | None = None,
    clip: ClipCount | None = None,
) -> torch.Tensor:
    """One analog step on its input tensor: :func:`analog_linear` of :func:`analog_rows`,
    folded back. A convolution with a static input encoding that maps 0 to 0 (``none``,
    ``split``) encodes its input before the im2col: the same integer rows (the padding is
    0 either way) from a fraction of the work."""
    if (
        layer.conv is None
        or not backend.quantizes
        or trace is not None
        or layer.input_scale is None
        or layer.signed not in ("none", "split")
        or layer.input_offset != 0.0
    ):
        rows, how = analog_rows(layer, x)
        return fold_rows(analog_linear(layer, rows, backend, trace, clip), how)
    chip, conv = backend.chip, layer.conv
    extremes = _extremes(layer, x)
    scale = layer.input_scale
    stacked = encode_stacked(x, layer.signed, scale, 0.0, chip.input_max)
    reads = backend.mac(layer.analog, im2col(stacked, conv))
    spatial = tuple(x.shape[2:])
    out_spatial = conv_output_shape(spatial, conv)
    if clip is not None:
        clip.inputs += x.shape[0] * math.prod(out_spatial) * layer.analog.in_features
        copies = _copies(spatial, conv)
        clip.clipped += count_clipped(layer, x, scale, 0.0, chip.input_max, extremes, copies)
    y = _rescale(layer, backend, reads, scale, 0.0)
    return col2im(y, x.shape[0], out_spatial)


def _copies(spatial: tuple[int, ...], conv: dict) -> torch.Tensor:
    key = (spatial, *(tuple(conv[k]) for k in ("kernel_shape", "strides", "dilations", "pads")))
    copies = _COPIES.get(key)
    if copies is None:
        if len(_COPIES) > 64:
            _COPIES.clear()
        copies = _COPIES[key] = im2col_multiplicity(spatial, conv)
    return copies


_COPIES: dict[tuple, torch.Tensor] = {}


class Executor:
    """Runs a :class:`Program` on one backend."""

    def __init__(self, program: Program, backend: Backend, *, trace: bool = False) -> None:
        self.program = program
        self.backend = backend
        self.constants = {k: torch.from_numpy(np.asarray(v)) for k, v in program.constants.items()}
        self.traces: dict[str, LayerTrace] | None = (
            {name: LayerTrace() for name in program.layers} if trace else None
        )
        self.clipped = {name: ClipCount() for name in program.layers}

    def step(self, step: Step, env: dict[str, torch.Tensor]) -> None:
        # Program.load checks the dataflow, tiles and arrays; the attributes and shapes of a
        # hand-edited program can still disagree with each other, which the ops find out.
        try:
            self._run_step(step, env)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
            detail = (str(exc).strip().splitlines() or [""])[0]
            raise ProgramError(
                f"step {step.name} ({step.op}) cannot run ({type(exc).__name__}: {detail}); "
                "the program is inconsistent, recompile the model"
            ) from exc

    def _run_step(self, step: Step, env: dict[str, torch.Tensor]) -> None:
        if step.analog:
            layer = self.program.layers[step.name]
            trace = self.traces[step.name] if self.traces is not None else None
            env[step.outputs[0]] = analog_step(
                layer, env[step.inputs[0]], self.backend, trace, self.clipped[step.name]
            )
            return
        args = [None if not t else (env[t] if t in env else self.constants[t]) for t in step.inputs]
        for name, value in zip(step.outputs, run_op(step.op, step.attrs, args), strict=False):
            env[name] = value

    @torch.no_grad()
    def run_batch(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        env = dict(feeds)
        for step in self.program.steps:
            self.step(step, env)
        return {o.name: env[o.name] for o in self.program.outputs}


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    backend: str
    samples: int
    seconds: float
    accuracy: float | None
    traces: dict[str, LayerTrace] | None = None
    clipped: dict[str, ClipCount] = field(default_factory=dict)

    @property
    def clipped_fraction(self) -> float:
        """Share of all analog-layer inputs that were clipped (0 on the ``ideal`` backend)."""
        total = sum(c.inputs for c in self.clipped.values())
        return sum(c.clipped for c in self.clipped.values()) / total if total else 0.0

    @property
    def warnings(self) -> list[str]:
        """One line each: inputs that were clipped (how many, the worst layer), outputs that
        are not finite."""
        lines = []
        if any(c.clipped for c in self.clipped.values()):
            name, worst = max(self.clipped.items(), key=lambda kv: kv[1].fraction)
            clipped = sum(c.clipped for c in self.clipped.values())
            inputs = sum(c.inputs for c in self.clipped.values())
            lines.append(
                f"{100 * self.clipped_fraction:.3g} % of the analog layers' inputs ({clipped:,} "
                f"of {inputs:,}) lay outside the calibrated range and were clipped, most in "
                f"layer {name} ({100 * worst.fraction:.3g} %); recompile with calibration data "
                "(--calib) that covers this data"
            )
        bad = sum(int((~np.isfinite(v)).sum()) for v in self.outputs.values())
        if bad:
            lines.append(
                f"{bad:,} output values are NaN/Inf: float32 overflowed (inputs or weights too "
                "large); check the range of the input data"
            )
        return lines


def batches(n: int, batch_size: int) -> Iterator[slice]:
    for b0 in range(0, n, batch_size):
        yield slice(b0, min(n, b0 + batch_size))


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of samples whose largest output is the label's class; labels are class indices
    or, with the output's shape, one-hot or soft targets."""
    pred = logits.reshape(logits.shape[0], -1).argmax(axis=1)
    if labels.ndim > 1:
        labels = labels.reshape(labels.shape[0], -1).argmax(axis=1)
    return float((pred == labels.astype(np.int64)).mean())


def run_program(
    program: Program,
    data: Dataset | dict[str, np.ndarray],
    *,
    backend: str | Backend = "emulator",
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
    trace: bool = False,
) -> RunResult:
    """Run ``program`` over all samples of ``data`` in batches; accuracy if labels are given."""
    if isinstance(data, dict):
        data = match_inputs(data, program.inputs, "input data")
    check_labels_fit(program, data)
    if isinstance(backend, str):
        backend = get_backend(
            backend, program.chip, program.chip.profile(program.profile), seed=seed
        )
    ex = Executor(program, backend, trace=trace)
    t0 = time.perf_counter()
    collected: dict[str, list[np.ndarray]] = {o.name: [] for o in program.outputs}
    n = data.samples
    it = batches(n, max(1, batch_size))
    if progress:
        from tqdm import tqdm

        it = tqdm(list(it), desc=f"run ({backend.name})", unit="batch", leave=False)
    for sl in it:
        feeds = {k: torch.from_numpy(v[sl]) for k, v in data.inputs.items()}
        for k, v in ex.run_batch(feeds).items():
            collected[k].append(v.numpy())
    outputs = {k: np.concatenate(v) for k, v in collected.items()}
    seconds = time.perf_counter() - t0
    accuracy = None
    if data.labels is not None and program.outputs and _class_labels(data.labels):
        accuracy = top1(outputs[program.outputs[0].name], data.labels)
    return RunResult(outputs, backend.name, n, seconds, accuracy, ex.traces, ex.clipped)


def check_labels_fit(program: Program, data: Dataset) -> None:
    """Integer labels are class indices of the first output, float labels of more than one
    dimension are targets of its shape (1-D float labels may be either, or plain targets)."""
    labels = data.labels
    if labels is None or not program.outputs:
        return
    out = program.outputs[0]
    if not all(isinstance(d, int) for d in out.sample_shape):
        return
    if labels.ndim > 1:
        if tuple(labels.shape[1:]) != tuple(out.sample_shape):
            raise DataError(
                f"{data.path}: 'labels' have per-sample shape {labels.shape[1:]}, but output "
                f"'{out.name}' has {tuple(out.sample_shape)}; give class indices or targets "
                "of the output's shape"
            )
        return
    classes = int(np.prod(out.sample_shape, dtype=np.int64))
    if labels.dtype.kind in "iu" and int(labels.max()) >= classes:
        raise DataError(
            f"{data.path}: 'labels' go up to {int(labels.max())}, but output '{out.name}' has "
            f"{classes} classes; check that the labels belong to this model"
        )


def _class_labels(labels: np.ndarray) -> bool:
    """Labels top-1 accuracy applies to: class indices, or one-hot or soft targets."""
    return labels.ndim > 1 or labels.dtype.kind in "iu" or bool((labels == np.round(labels)).all())
