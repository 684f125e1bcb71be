"""Running a program: :class:`Session`, like onnxruntime's ``InferenceSession``.

A session builds what a program needs to run once: the backend with its emulated chip
instance (the fixed pattern of chip ``seed``), the onnxruntime sessions of the digital
regions. :meth:`Session.run` takes input arrays and returns output arrays; every call on the
emulator draws fresh trial-to-trial noise, continuing one stream that the seed makes
reproducible (a new session with the same seed repeats the same sequence of outputs).
:meth:`Session.evaluate` runs a whole dataset in batches (or sample by sample, for inputs
declared without a batch axis) and reports accuracy, clipped inputs and time.

``run_program`` is the one-call form the command line uses.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from anacc.compiler.datafile import Dataset, match_inputs
from anacc.compiler.program import AnalogStep, DigitalStep, Program, ProgramLayer
from anacc.runtime.analog import ClipCount, LayerTrace, analog_forward
from anacc.runtime.backends import Backend, get_backend
from anacc.runtime.digital import OrtRegions
from anacc.runtime.interpreter import Interpreter, last_uses
from anacc.runtime.profiler import Profiler

from anacc.errors import DataError

DEFAULT_BATCH_SIZE = 256


class InferenceInterpreter(Interpreter):
    """Analog steps on a backend, digital regions in onnxruntime; counts clipped inputs per
    layer (and keeps the ADC reads when tracing)."""

    def __init__(
        self,
        program: Program,
        backend: Backend,
        regions: OrtRegions,
        *,
        trace: bool = False,
        drop: list[tuple[str, ...]] | None = None,
    ) -> None:
        super().__init__(program, drop)
        self.backend = backend
        self.regions = regions
        self.clipped = {name: ClipCount() for name in program.layers}
        self.traces = {name: LayerTrace() for name in program.layers} if trace else None

    def analog(self, step: AnalogStep, layer: ProgramLayer, x: torch.Tensor) -> torch.Tensor:
        trace = self.traces[step.layer] if self.traces is not None else None
        clip = self.clipped[step.layer]
        return analog_forward(layer, x, self.backend, clip, trace, self.profiler)

    def digital(self, step: DigitalStep, args: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        profiler = self.profiler
        if profiler is None:
            return self.regions.run(step, args)
        args = [a.contiguous() for a in args]
        profiler.lap("data movement")
        outs = self.regions.run(step, args)
        profiler.lap("digital ops")
        return outs


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    backend: str
    samples: int
    seconds: float
    accuracy: float | None
    traces: dict[str, LayerTrace] | None = None
    clipped: dict[str, ClipCount] = field(default_factory=dict)
    fine_tuned: bool = False

    @property
    def clipped_fraction(self) -> float:
        """Share of all analog-layer inputs that were clipped (0 on the ``ideal`` backend)."""
        total = sum(c.inputs for c in self.clipped.values())
        return sum(c.clipped for c in self.clipped.values()) / total if total else 0.0

    @property
    def warnings(self) -> list[str]:
        """One line each: inputs that were clipped (how many, the worst layer, what to do),
        outputs that are not finite."""
        lines = []
        if any(c.clipped for c in self.clipped.values()):
            name, worst = max(self.clipped.items(), key=lambda kv: kv[1].fraction)
            clipped = sum(c.clipped for c in self.clipped.values())
            inputs = sum(c.inputs for c in self.clipped.values())
            advice = (
                "the scales come from the data it was fine-tuned on: fine-tune again on "
                "training data that covers this data"
                if self.fine_tuned
                else "recompile with calibration data (--calib) that covers this data"
            )
            lines.append(
                f"{100 * self.clipped_fraction:.3g} % of the analog layers' inputs ({clipped:,} "
                f"of {inputs:,}) lay outside the calibrated range and were clipped, most in "
                f"layer {name} ({100 * worst.fraction:.3g} %); {advice}"
            )
        bad = sum(
            int((~np.isfinite(v)).sum()) for v in self.outputs.values() if v.dtype.kind == "f"
        )
        if bad:
            lines.append(
                f"{bad:,} output values are NaN/Inf: float32 overflowed (inputs or weights too "
                "large); check the range of the input data"
            )
        return lines


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of samples whose largest output is the label's class; labels are class indices
    or, with the output's shape, one-hot or soft targets."""
    pred = logits.reshape(logits.shape[0], -1).argmax(axis=1)
    if labels.ndim > 1:
        labels = labels.reshape(labels.shape[0], -1).argmax(axis=1)
    return float((pred == labels.astype(np.int64)).mean())


def check_labels_fit(program: Program, data: Dataset) -> None:
    """Integer labels are class indices of the first output, float labels of more than one
    dimension are targets of its shape (1-D float labels may be either, or plain targets)."""
    labels = data.labels
    if labels is None or not program.outputs:
        return
    out = program.outputs[0]
    shape = out.sample_shape
    if not all(isinstance(d, int) for d in shape):
        return
    if labels.ndim > 1:
        if tuple(labels.shape[1:]) != tuple(shape):
            raise DataError(
                f"{data.path}: 'labels' have per-sample shape {labels.shape[1:]}, but output "
                f"'{out.name}' has {tuple(shape)}; give class indices or targets "
                "of the output's shape"
            )
        return
    classes = int(np.prod(shape, dtype=np.int64))
    if labels.dtype.kind in "iu" and int(labels.max()) >= classes:
        raise DataError(
            f"{data.path}: 'labels' go up to {int(labels.max())}, but output '{out.name}' has "
            f"{classes} classes; check that the labels belong to this model"
        )


def class_labels(labels: np.ndarray) -> bool:
    """Labels top-1 accuracy applies to: class indices, or one-hot or soft targets."""
    return labels.ndim > 1 or labels.dtype.kind in "iu" or bool((labels == np.round(labels)).all())


def sample_major(program: Program, name: str, value: np.ndarray) -> np.ndarray:
    """An output with its samples on axis 0 (the batch axis moved to the front)."""
    spec = next(o for o in program.outputs if o.name == name)
    if spec.batch_axis is None or spec.batch_axis == 0 or not program.batched:
        return value
    return np.moveaxis(value, spec.batch_axis, 0)


class Session:
    """A program ready to run on one backend; see the module docstring."""

    def __init__(
        self,
        program: Program,
        backend: str | Backend = "emulator",
        seed: int = 0,
        *,
        threads: int | None = None,
    ) -> None:
        self.program = program
        if isinstance(backend, str):
            chip = program.chip
            backend = get_backend(backend, chip, chip.profile(program.profile), seed=seed)
        self.backend = backend
        self.regions = OrtRegions(program, threads)
        # outputs without a batch axis mix the samples: such a program runs its data in one go
        self._whole = program.batched and any(o.batch_axis is None for o in program.outputs)
        self._drop = last_uses(program)

    def interpreter(self, *, trace: bool = False) -> InferenceInterpreter:
        return InferenceInterpreter(
            self.program, self.backend, self.regions, trace=trace, drop=self._drop
        )

    def reset_noise(self) -> None:
        """Start the backend's noise sequence again, as a new session with this seed."""
        self.backend.reset_noise()

    def run(
        self, feeds: Mapping[str, np.ndarray], *, batch_size: int | None = None
    ) -> dict[str, np.ndarray]:
        """Outputs (named after the graph outputs) for ``feeds`` (arrays named after the
        inputs, shaped as :func:`~anacc.compiler.datafile.match_inputs` accepts); all samples
        in one batch unless ``batch_size`` is given (an analog layer's memory stays bounded
        either way)."""
        data = match_inputs(dict(feeds), self.program.inputs, "input data")
        size = data.samples if batch_size is None else batch_size
        return self.evaluate(data, batch_size=max(1, size)).outputs

    def evaluate(
        self,
        data: Dataset | Mapping[str, np.ndarray],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
        trace: bool = False,
        profiler: Profiler | None = None,
    ) -> RunResult:
        """Run every sample of ``data``; accuracy if it has labels. ``profiler`` records the
        time per step and kind of work, and the run's peak memory."""
        program = self.program
        if not isinstance(data, Dataset):
            data = match_inputs(dict(data), program.inputs, "input data")
        check_labels_fit(program, data)
        interp = self.interpreter(trace=trace)
        if profiler is not None:
            return self._profiled(profiler, interp, data, batch_size, progress)
        return self._evaluate(interp, data, batch_size, progress)

    def _profiled(
        self,
        profiler: Profiler,
        interp: InferenceInterpreter,
        data: Dataset,
        batch_size: int,
        progress: bool,
    ) -> RunResult:
        interp.profiler = self.backend.profiler = profiler
        profiler.start_run()
        try:
            return self._evaluate(interp, data, batch_size, progress)
        finally:
            profiler.end_run()
            self.backend.profiler = None

    def _evaluate(
        self, interp: InferenceInterpreter, data: Dataset, batch_size: int, progress: bool
    ) -> RunResult:
        program = self.program
        profiler = interp.profiler
        t0 = time.perf_counter()
        collected: dict[str, list[np.ndarray]] = {o.name: [] for o in program.outputs}
        runs = list(data.runs(data.samples if self._whole else batch_size))
        it = runs
        if progress:
            from tqdm import tqdm

            it = tqdm(runs, desc=f"run ({self.backend.name})", unit="batch", leave=False)
        with torch.no_grad():
            for _, feeds in it:
                if profiler is not None:
                    profiler.mark()
                tensors = {
                    k: torch.from_numpy(np.require(v, requirements="C")) for k, v in feeds.items()
                }
                if profiler is not None:
                    profiler.lap("data movement")
                for k, v in interp.run(tensors).items():
                    collected[k].append(v.numpy())
        if profiler is not None:
            profiler.mark()
        outputs = {o.name: self._join(o.name, collected[o.name], data) for o in program.outputs}
        if profiler is not None:
            profiler.lap("data movement")
        seconds = time.perf_counter() - t0
        accuracy = None
        if data.labels is not None and program.outputs and class_labels(data.labels):
            first = program.outputs[0].name
            logits = sample_major(program, first, outputs[first])
            if logits.ndim == 0 or len(logits) != len(data.labels):
                raise DataError(
                    f"{data.path}: {len(data.labels)} labels but the output '{first}' has "
                    f"{len(logits) if logits.ndim else 'no'} rows; give one label per sample"
                )
            accuracy = top1(logits, data.labels)
        return RunResult(
            outputs,
            self.backend.name,
            data.samples,
            seconds,
            accuracy,
            interp.traces,
            interp.clipped,
            fine_tuned=bool(program.source.get("fine_tuned")),
        )

    def _join(self, name: str, parts: list[np.ndarray], data: Dataset) -> np.ndarray:
        if data.single:
            return parts[0]
        if data.per_sample:
            return np.stack(parts)
        spec = next(o for o in self.program.outputs if o.name == name)
        axis = spec.batch_axis if spec.batch_axis is not None else 0
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=axis)


def run_program(
    program: Program,
    data: Dataset | dict[str, np.ndarray],
    *,
    backend: str | Backend = "emulator",
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    trace: bool = False,
    profiler: Profiler | None = None,
) -> RunResult:
    """Run ``program`` over all samples of ``data`` in a new :class:`Session`."""
    session = Session(program, backend, seed)
    return session.evaluate(
        data, batch_size=batch_size, progress=progress, trace=trace, profiler=profiler
    )
