"""What fine-tuning sets besides the gradient steps: ``num_sends`` and the input scales.

- :func:`search_sends`: ``num_sends`` per layer, revisited with the chip in the loop. The
  compiler picks it from calibration statistics so that outputs stay in the linear range;
  with noise that grows more slowly than the signal with ``num_sends``, the best choice is a
  trade between noise and saturation that only the chip can tell. Layer by layer, each
  candidate is scored by the loss on a fixed slice of the training data through the chip.
  Every score is a forward pass over the slice, so a deep model would need hundreds of them
  (RegNet-X-400MF: 72 layers, about 430); beyond :data:`MAX_EVALUATIONS` scores the search
  scales every layer's ``num_sends`` by one shared factor instead (one score per factor).
- :func:`rederive_scales`: the input scales of a fine-tuned program re-derived, by the
  compile's scale method, from what each layer receives on the training data through the
  chip (the weights changed, so their activations did), so that clipping warnings keep
  their meaning.
- :func:`batch_forward`: a model's first output for a batch of samples.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from anacc.compiler.datafile import Dataset
from anacc.compiler.program import AnalogStep, Program, ProgramLayer
from anacc.passes.calibrate_scales import clip_value
from anacc.passes.surrogate import TrainingGraph
from anacc.runtime.backends import Backend
from anacc.runtime.session import InferenceInterpreter, Session

SEND_FACTORS = (0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0)
SEARCH_SAMPLES = 2048
# scores (forward passes over the search slice) a layer-by-layer search may take; more, and
# one factor scales every layer (a model of up to four layers searches layer by layer)
MAX_EVALUATIONS = 32
RESCALE_SAMPLES = 2048
MAX_VALUES = 200_000


def batch_forward(model: TrainingGraph, program: Program, batch: Dataset) -> torch.Tensor:
    """The model's first output for the samples of ``batch``, samples on axis 0 (each sample
    one run when the inputs have fixed shapes)."""
    outs = []
    for _, feeds in batch.runs(batch.samples):
        tensors = {k: torch.from_numpy(np.require(v, requirements="C")) for k, v in feeds.items()}
        outs.append(model(tensors))
    if batch.per_sample:
        return torch.stack(outs)
    axis = program.outputs[0].batch_axis or 0
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=axis)
    return out.movedim(axis, 0) if axis else out


def _slice(data: Dataset, samples: int, seed: int) -> np.ndarray:
    n = data.samples
    if n <= samples:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=samples, replace=False))


def search_sends(
    model: TrainingGraph,
    train: Dataset,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    use_chip: Callable[[TrainingGraph, int], None],
    seed: int,
    *,
    factors: tuple[float, ...] = SEND_FACTORS,
    samples: int = SEARCH_SAMPLES,
    batch_size: int = 256,
    progress: str | None = None,
    max_evaluations: int = MAX_EVALUATIONS,
) -> dict[str, tuple[int, int]]:
    """Set each layer's ``num_sends`` (in order, one pass) to the candidate, the compiled
    value times each of ``factors``, with the lowest loss on a seeded slice of ``train``;
    ``use_chip(model, i)`` picks the chip instance for the slice's batch ``i``. When that
    would take more than ``max_evaluations`` scores, every layer's ``num_sends`` is scaled by
    the one factor with the lowest loss instead. Returns the layers that changed, ``{name:
    (before, after)}``. ``progress``: a progress bar with this description, one step per
    candidate scored."""
    idx = _slice(train, samples, seed)
    batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    subsets = [(train.subset(b), labels[torch.from_numpy(b)]) for b in batches]
    program = model.program
    top = program.chip.num_sends_max

    def loss() -> float:
        total = 0.0
        for i, (data, y) in enumerate(subsets):
            use_chip(model, i)
            total += float(loss_fn(batch_forward(model, program, data), y)) * len(y)
        return total / len(idx)

    def scaled(before: int, factor: float) -> int:
        return int(np.clip(round(before * factor), 1, top))

    def candidates(before: int) -> list[int]:
        return sorted({scaled(before, f) for f in factors})

    analogs = {name: tl.layer.analog for name, tl in model.layers.items()}
    before = {name: a.num_sends for name, a in analogs.items()}
    per_layer = sum(len(candidates(b)) for b in before.values()) <= max_evaluations
    # shared factors: one assignment per factor, those that give the same one scored once
    shared: dict[tuple[int, ...], float] = {}
    if not per_layer:
        for f in sorted(factors, key=lambda f: abs(math.log(f))):
            shared.setdefault(tuple(scaled(b, f) for b in before.values()), f)
    bar = None
    if progress is not None:
        from tqdm import tqdm

        total = sum(len(candidates(b)) for b in before.values()) if per_layer else len(shared)
        bar = tqdm(total=total, desc=progress, unit="candidate", leave=False)

    def score() -> float:
        value = loss()
        if bar is not None:
            bar.update()
        return value

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if per_layer:
                for name, analog in analogs.items():
                    scores = {}
                    for sends in candidates(before[name]):
                        analog.num_sends = sends
                        scores[sends] = score()
                    analog.num_sends = min(
                        scores, key=lambda s, b=before[name]: (scores[s], abs(s - b))
                    )
            else:
                totals = {}
                for sends in shared:
                    for analog, value in zip(analogs.values(), sends, strict=True):
                        analog.num_sends = value
                    totals[sends] = score()
                best = min(totals, key=lambda s: (totals[s], abs(math.log(shared[s]))))
                for analog, value in zip(analogs.values(), best, strict=True):
                    analog.num_sends = value
    finally:
        if bar is not None:
            bar.close()
    model.train(was_training)
    return {
        name: (before[name], a.num_sends)
        for name, a in analogs.items()
        if a.num_sends != before[name]
    }


class _InputRecorder(InferenceInterpreter):
    """Inference that keeps a uniform subsample of the values each analog layer receives
    (all of its uses together)."""

    def __init__(self, session: Session, rng: np.random.Generator, keep: int) -> None:
        super().__init__(session.program, session.backend, session.regions)
        self.values: dict[str, list[np.ndarray]] = {name: [] for name in session.program.layers}
        self.rng, self.keep = rng, keep

    def analog(self, step: AnalogStep, layer: ProgramLayer, x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().reshape(-1).numpy()
        if flat.size > self.keep:
            flat = self.rng.choice(flat, self.keep, replace=False)
        self.values[step.layer].append(flat)
        return super().analog(step, layer, x)


def _set_scale(layer: ProgramLayer, values: np.ndarray, scale: str, input_max: int) -> None:
    """The static input encoding of ``layer`` for ``values`` by the compile's scale method
    (as :class:`~anacc.passes.calibrate_scales.CalibrateScales` derives it)."""
    method, _, arg = scale.partition(":")
    pct = float(arg) if arg else None

    def clip(v: np.ndarray) -> float:
        # ``ema`` has no moving average here: it falls back to the maximum
        return clip_value(v, method, pct, 0.0, input_max)

    if layer.signed == "split":
        span = clip(np.abs(values))
    elif layer.signed == "shift":
        lo = -clip(np.maximum(-values, 0))
        span = clip(np.maximum(values, 0)) - lo
        if span > 0:
            layer.input_offset = float(lo)
    else:
        span = clip(np.maximum(values, 0))
    if span > 0:
        layer.input_scale = float(span / input_max)


def rederive_scales(
    program: Program, train: Dataset, backend: Backend, *, samples: int = RESCALE_SAMPLES
) -> Program:
    """A copy of ``program`` whose static input scales come from what each layer receives
    on a slice of ``train`` through ``backend``, by the scale method it was compiled with
    (``percentile:99.99`` if the program does not say)."""
    data = train.subset(_slice(train, samples, 0))
    runs = list(data.runs(256))
    recorder = _InputRecorder(
        Session(program, backend), np.random.default_rng(0), max(1, MAX_VALUES // len(runs))
    )
    with torch.no_grad():
        for _, feeds in runs:
            recorder.run(
                {k: torch.from_numpy(np.require(v, requirements="C")) for k, v in feeds.items()}
            )
    new = copy.copy(program)
    new.layers = {name: copy.copy(layer) for name, layer in program.layers.items()}
    scale = str(program.options.get("scale", "percentile:99.99"))
    for name, layer in new.layers.items():
        values = recorder.values[name]
        if layer.input_scale is not None and values:
            _set_scale(layer, np.concatenate(values), scale, program.chip.input_max)
    return new
