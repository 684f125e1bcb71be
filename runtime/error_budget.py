"""The data-driven part of the report: ADC use, saturation, SNR and the error budget per layer.

Each analog layer is measured on the *ideal* float activations: the data run once through the
``ideal`` backend, and every analog layer's input captured there is fed to four backends,
so one layer's budget is not polluted by the error of the layers before it:

- ``ideal`` (float weights) gives the reference output ``y_i``;
- ``quantized`` (integer arithmetic only) gives ``y_q``;
- the emulator without trial-to-trial noise gives ``y_f``: the same chip instance (``seed``)
  on a copy of the chip description whose reference noise sigma is 0, which scales every
  noise term of the analog model to 0 and leaves gain, fixed pattern and saturation as they
  are;
- the emulator (``seed``) gives ``y_e``.

With ``||.||`` the Euclidean norm over all outputs of all input vectors (bias included, as
the layer computes it), the parts of the relative error are
``quantization = ||y_q - y_i|| / ||y_i||``, ``fixed_pattern = ||y_f - y_q|| / ||y_i||``,
``noise = ||y_e - y_f|| / ||y_i||`` and ``total = ||y_e - y_i|| / ||y_i||``. They are not
additive; their squares add up to ``total**2`` when the parts are uncorrelated.
``saturation = ||m * (y_e - y_i)|| / ||y_i||`` where ``m`` marks the outputs of which at least
one ADC read (of any row chunk or input part) of the emulator lies beyond the chip's linear
range: the share of the total error that sits in saturated outputs. It overlaps the other
three parts (it locates error, they attribute it to causes).

The ADC statistics are those of the emulator's reads: a histogram over every read value, the
p1/p50/p99 percentiles (nearest rank), the largest ``|read|``, the fraction of reads at the
ADC limits and beyond the linear range. ``snr_db`` compares the emulator's reads with the
noise-free emulator's: ``10 log10(sum r_f**2 / sum (r_e - r_f)**2)``. ``active_inputs`` is
the mean number of non-zero chip inputs per run (per input part and row chunk) on the
ideal activations, for the time estimate.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from anacc.compiler.chip import ChipSpec, Profile
from anacc.compiler.cost import DEFAULT_BATCH_SIZE
from anacc.compiler.datafile import Dataset
from anacc.compiler.program import AnalogStep, DigitalStep, Program, ProgramLayer
from anacc.compiler.quant import encode
from anacc.runtime.analog import (
    LayerTrace,
    analog_forward,
    extremes,
    fold,
    input_encoding,
    rows_of,
)
from anacc.runtime.backends import Backend, EmulatorBackend, get_backend
from anacc.runtime.digital import OrtRegions
from anacc.runtime.interpreter import Interpreter
from anacc.runtime.session import Session

BACKENDS = ("ideal", "quantized", "emulator")


@dataclass(frozen=True)
class AdcStats:
    """The emulator's ADC reads of one layer; ``histogram[k]`` counts reads of ``low + k``."""

    reads: int
    low: int
    histogram: tuple[int, ...]
    p1: float
    p50: float
    p99: float
    max_abs: int
    at_limit_rate: float
    beyond_linear_rate: float


@dataclass(frozen=True)
class ErrorParts:
    """Relative errors of one layer's output against ``ideal``; see the module docstring."""

    quantization: float | None
    fixed_pattern: float | None
    noise: float | None
    saturation: float | None
    total: float | None


@dataclass(frozen=True)
class LayerBudget:
    """Everything measured for one analog layer on the data."""

    name: str
    vectors: int
    adc: AdcStats
    snr_db: float | None
    error: ErrorParts
    saturated_output_rate: float
    input_clip_rate: float
    active_inputs: tuple[tuple[float, ...], ...]


def noise_free_chip(chip: ChipSpec) -> ChipSpec:
    """``chip`` with every trial-to-trial noise term at 0 and all else unchanged."""
    analog = dataclasses.replace(chip.analog, reference_noise_sigma_lsb=0.0)
    profiles = {name: dataclasses.replace(p, analog=analog) for name, p in chip.profiles.items()}
    return dataclasses.replace(chip, analog=analog, profiles=profiles)


def noise_free_emulator(chip: ChipSpec, profile: Profile, seed: int) -> EmulatorBackend:
    """The emulated chip instance ``seed`` without trial-to-trial noise."""
    quiet = noise_free_chip(chip)
    return EmulatorBackend(quiet, quiet.profile(profile.name), seed=seed)


class _LayerAccumulator:
    """Running sums of one layer over the batches."""

    def __init__(self, layer: ProgramLayer, chip: ChipSpec) -> None:
        self.layer = layer
        self.chip = chip
        self.vectors = 0
        self.histogram = np.zeros(chip.adc_max - chip.adc_min + 1, dtype=np.int64)
        self.sums = dict.fromkeys(
            ("ideal", "quant", "fixed", "noise", "total", "sat", "signal", "read_noise"), 0.0
        )
        self.saturated_outputs = 0
        self.outputs = 0
        self.clipped = 0
        self.inputs = 0
        n_parts = 2 if layer.signed == "split" else 1
        self.active = np.zeros((n_parts, len(layer.analog.row_chunks)), dtype=np.float64)

    def add(self, x: torch.Tensor, backends: dict[str, Backend]) -> torch.Tensor:
        """Accumulate one batch of the layer's input; returns the ideal output."""
        layer, chip = self.layer, self.chip
        trace_q, trace_f, trace_e = LayerTrace(), LayerTrace(), LayerTrace()
        ideal = analog_forward(layer, x, backends["ideal"])
        y_i = ideal.double()
        y_q = analog_forward(layer, x, backends["quantized"], trace=trace_q).double()
        y_f = analog_forward(layer, x, backends["fixed"], trace=trace_f).double()
        y_e = analog_forward(layer, x, backends["emulator"], trace=trace_e).double()
        reads_f = torch.stack(trace_f.adc).double()  # (parts, rows, chunks, out)
        reads_e = torch.stack(trace_e.adc).double()

        beyond = (reads_e > chip.linear_max) | (reads_e < chip.linear_min)
        saturated = fold(layer, beyond.any(dim=2).any(dim=0), x.shape)  # like the output
        s = self.sums
        s["ideal"] += float(y_i.square().sum())
        s["quant"] += float((y_q - y_i).square().sum())
        s["fixed"] += float((y_f - y_q).square().sum())
        s["noise"] += float((y_e - y_f).square().sum())
        s["total"] += float((y_e - y_i).square().sum())
        s["sat"] += float((y_e - y_i)[saturated].square().sum())
        s["signal"] += float(reads_f.square().sum())
        s["read_noise"] += float((reads_e - reads_f).square().sum())
        self.saturated_outputs += int(saturated.sum())
        self.outputs += saturated.numel()
        self.clipped += trace_e.clipped_inputs
        self.inputs += trace_e.inputs
        codes = (reads_e.reshape(-1) - chip.adc_min).long()
        self.histogram += torch.bincount(codes, minlength=self.histogram.size).numpy()

        enc = input_encoding(layer, chip.input_max, extremes(layer, x))
        stacked = rows_of(layer, encode(x, layer.signed, enc, chip.input_max))
        parts = stacked.chunk(2) if layer.signed == "split" else [stacked]
        for p, xq in enumerate(parts):
            for c, (start, stop) in enumerate(layer.analog.row_chunks):
                self.active[p, c] += float((xq[:, start:stop] > 0).sum())
        self.vectors += parts[0].shape[0]
        return ideal

    def result(self) -> LayerBudget:
        chip, s = self.chip, self.sums
        reads = int(self.histogram.sum())
        values = np.arange(chip.adc_min, chip.adc_max + 1)
        used = values[self.histogram > 0]
        limits = self.histogram[0] + self.histogram[-1]
        beyond = self.histogram[(values > chip.linear_max) | (values < chip.linear_min)].sum()
        adc = AdcStats(
            reads=reads,
            low=chip.adc_min,
            histogram=tuple(int(v) for v in self.histogram),
            p1=_percentile(self.histogram, values, 1.0),
            p50=_percentile(self.histogram, values, 50.0),
            p99=_percentile(self.histogram, values, 99.0),
            max_abs=int(np.abs(used).max(initial=0)),
            at_limit_rate=_ratio(limits, reads),
            beyond_linear_rate=_ratio(beyond, reads),
        )

        def rel(key: str) -> float | None:
            return math.sqrt(s[key] / s["ideal"]) if s["ideal"] > 0 else None

        snr = None
        if s["read_noise"] > 0 and s["signal"] > 0:
            snr = 10.0 * math.log10(s["signal"] / s["read_noise"])
        return LayerBudget(
            name=self.layer.name,
            vectors=self.vectors,
            adc=adc,
            snr_db=snr,
            error=ErrorParts(
                quantization=rel("quant"),
                fixed_pattern=rel("fixed"),
                noise=rel("noise"),
                saturation=rel("sat"),
                total=rel("total"),
            ),
            saturated_output_rate=_ratio(self.saturated_outputs, self.outputs),
            input_clip_rate=_ratio(self.clipped, self.inputs),
            active_inputs=tuple(
                tuple(float(v) / max(self.vectors, 1) for v in part) for part in self.active
            ),
        )


def _ratio(part: float, whole: float) -> float:
    return float(part) / float(whole) if whole else 0.0


def _percentile(histogram: np.ndarray, values: np.ndarray, q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``q`` % of reads at or below."""
    total = int(histogram.sum())
    if total == 0:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * total))
    return float(values[int(np.searchsorted(np.cumsum(histogram), rank))])


class BudgetInterpreter(Interpreter):
    """Runs the data on the ideal activations, measuring every analog layer on the way."""

    def __init__(self, program: Program, backends: dict[str, Backend]) -> None:
        super().__init__(program)
        self.backends = backends
        self.regions = OrtRegions(program)
        chip = program.chip
        self.acc = {name: _LayerAccumulator(layer, chip) for name, layer in program.layers.items()}

    def analog(self, step: AnalogStep, layer: ProgramLayer, x: torch.Tensor) -> torch.Tensor:
        return self.acc[step.layer].add(x, self.backends)

    def digital(self, step: DigitalStep, args) -> list[torch.Tensor]:
        return self.regions.run(step, args)


@torch.no_grad()
def measure_layers(
    program: Program, data: Dataset, *, seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE
) -> tuple[LayerBudget, ...]:
    """The :class:`LayerBudget` of every analog layer, in program order, on ``data``."""
    chip = program.chip
    profile = chip.profile(program.profile)
    backends = {
        "ideal": get_backend("ideal", chip, profile),
        "quantized": get_backend("quantized", chip, profile),
        "fixed": noise_free_emulator(chip, profile, seed),
        "emulator": get_backend("emulator", chip, profile, seed=seed),
    }
    interp = BudgetInterpreter(program, backends)
    for _, feeds in data.runs(batch_size):
        interp.run({k: torch.from_numpy(np.require(v, requirements="C")) for k, v in feeds.items()})
    return tuple(a.result() for a in interp.acc.values())


def backend_accuracy(
    program: Program, data: Dataset, *, seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE
) -> dict[str, float] | None:
    """End-to-end top-1 accuracy on each backend, or None when ``data`` has no labels."""
    if data.labels is None or not program.outputs:
        return None
    out: dict[str, float] = {}
    for name in BACKENDS:
        result = Session(program, name, seed).evaluate(data, batch_size=batch_size)
        assert result.accuracy is not None
        out[name] = result.accuracy
    return out
