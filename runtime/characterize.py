"""Measuring a chip backend through its interface: gain, noise and the published sweep.

Everything here sends known integer inputs and weights through ``backend.mac`` and compares
the reads with the exact product, as one must on a real chip; nothing looks inside a backend.

- :func:`measure_gain`: median over neurons of the trial-mean ``read / (num_sends * exact)``,
  the gain per send.
- :func:`measure_noise`: median over neurons of the trial-to-trial standard deviation of the
  reads (ADC rounding included), by default at the chip's noise reference measurement.
- :func:`characterize`: the published BrainScaleS-2 characterization: one run of
  ``signed_inputs_per_run`` equal inputs into ``2 * weight_max + 1`` columns whose weights
  rise from ``-weight_max`` to ``+weight_max``, repeated ``runs`` times per input value.
- :func:`grid_layer`: an :class:`AnalogLayer` cut into near-equal chip-sized tiles, for
  measurements and benchmarks (the compiler's tiling pass does this for real models).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from anacc.compiler.chip import ChipSpec
from anacc.compiler.mapping import AnalogLayer, Tile
from anacc.runtime.backends.base import AnalogBackend

from anacc.errors import OptionError

CHARACTERIZATION_INPUTS = (0, 3, 7)
CHARACTERIZATION_RUNS = 30
DEFAULT_TRIALS = 32


def grid_layer(
    chip: ChipSpec,
    weight_q: np.ndarray,
    num_sends: int = 1,
    *,
    name: str = "layer",
    row_slot: np.ndarray | None = None,
    weight: np.ndarray | None = None,
) -> AnalogLayer:
    """Cut ``weight_q`` into near-equal row and column chunks that fit one run each.

    Tiles go to the halves in turn (one load holds ``chip.halves`` tiles); rows keep their
    order inside a chunk unless ``row_slot`` says otherwise. ``weight`` defaults to
    ``weight_q`` as float32.
    """
    weight_q = np.asarray(weight_q)
    n_in, n_out = weight_q.shape
    row_chunks = _near_equal_chunks(n_in, chip.signed_inputs_per_run)
    col_chunks = _near_equal_chunks(n_out, chip.outputs_per_run)
    tiles = []
    for rows in row_chunks:
        for cols in col_chunks:
            index = len(tiles)
            tiles.append(
                Tile(
                    index=index,
                    rows=rows,
                    cols=cols,
                    half=index % chip.halves,
                    col_offset=0,
                    load=index // chip.halves,
                    run=index // chip.halves,
                )
            )
    if row_slot is None:
        row_slot = np.concatenate([np.arange(stop - start) for start, stop in row_chunks])
    return AnalogLayer(
        name=name,
        weight=weight_q.astype(np.float32) if weight is None else weight,
        weight_q=weight_q.astype(np.int64),
        num_sends=num_sends,
        tiles=tuple(tiles),
        row_slot=np.asarray(row_slot, dtype=np.int64),
    )


def _near_equal_chunks(n: int, limit: int) -> list[tuple[int, int]]:
    count = math.ceil(n / limit)
    bounds = [round(i * n / count) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _all_neurons_layer(chip: ChipSpec, rows: int, weight: int, num_sends: int) -> AnalogLayer:
    """``rows`` inputs into every neuron of every half, all weights equal."""
    columns = chip.outputs_per_run * chip.halves
    return grid_layer(chip, np.full((rows, columns), weight), num_sends, name="measure")


def _check_measurement(chip: ChipSpec, active_inputs: int, input_value: int, weight: int) -> None:
    if not 1 <= active_inputs <= chip.signed_inputs_per_run:
        raise OptionError(
            f"active_inputs must be in 1..{chip.signed_inputs_per_run}, got {active_inputs}"
        )
    if not 1 <= input_value <= chip.input_max:
        raise OptionError(f"input_value must be in 1..{chip.input_max}, got {input_value}")
    if not 1 <= abs(weight) <= chip.weight_max:
        raise OptionError(f"weight must be in 1..{chip.weight_max} in magnitude, got {weight}")


def _reads(
    backend: AnalogBackend, layer: AnalogLayer, input_value: int, trials: int
) -> torch.Tensor:
    """``(trials, columns)`` reads of one run with all inputs at ``input_value``."""
    x = torch.full((trials, layer.in_features), float(input_value))
    return backend.mac(layer, x).sum(1)


def measure_gain(backend: AnalogBackend, num_sends: int = 1, trials: int = DEFAULT_TRIALS) -> float:
    """The gain per send measured through ``backend.mac``.

    Uses the noise reference measurement's inputs (``analog.noise_reference_*``) with the
    weight (and, for very large gains, the number of inputs and their value) scaled so that
    the nominal read stays at the reference read, inside the linear range.
    """
    chip = backend.chip
    a = chip.analog
    if not 1 <= num_sends <= chip.num_sends_max:
        raise OptionError(f"num_sends must be in 1..{chip.num_sends_max}, got {num_sends}")
    target_read = (
        a.reference_gain_per_send
        * a.noise_reference_num_sends
        * a.noise_reference_active_inputs
        * a.noise_reference_input
        * a.noise_reference_weight
    )
    product = target_read / (backend.gain_per_send * num_sends)
    rows, value = a.noise_reference_active_inputs, a.noise_reference_input
    weight = round(product / (rows * value))
    if weight < 1:
        weight = 1
        rows = max(1, min(rows, round(product / value)))
        if rows == 1:
            value = max(1, min(chip.input_max, round(product)))
    weight = min(weight, chip.weight_max)
    layer = _all_neurons_layer(chip, rows, weight, num_sends)
    reads = _reads(backend, layer, value, trials)
    exact = num_sends * rows * value * weight
    return float(torch.median(reads.mean(0)) / exact)


def measure_noise(
    backend: AnalogBackend,
    num_sends: int | None = None,
    active_inputs: int | None = None,
    input_value: int | None = None,
    weight: int | None = None,
    trials: int = DEFAULT_TRIALS,
) -> float:
    """Median over neurons of the trial-to-trial std of the reads, in ADC LSB.

    Every neuron gets ``active_inputs`` inputs of ``input_value`` through weights ``weight``;
    unset arguments take the chip's noise reference measurement (``analog.noise_reference_*``)
    at which the profile's ``noise_sigma_lsb`` is defined. Keep the reads inside the linear
    range (saturation compresses the noise).
    """
    chip = backend.chip
    a = chip.analog
    num_sends = a.noise_reference_num_sends if num_sends is None else num_sends
    active_inputs = a.noise_reference_active_inputs if active_inputs is None else active_inputs
    input_value = a.noise_reference_input if input_value is None else input_value
    weight = a.noise_reference_weight if weight is None else weight
    _check_measurement(chip, active_inputs, input_value, weight)
    if not 1 <= num_sends <= chip.num_sends_max:
        raise OptionError(f"num_sends must be in 1..{chip.num_sends_max}, got {num_sends}")
    if trials < 2:
        raise OptionError(f"trials must be at least 2, got {trials}")
    layer = _all_neurons_layer(chip, active_inputs, weight, num_sends)
    reads = _reads(backend, layer, input_value, trials)
    return float(torch.median(reads.std(dim=0)))


@dataclass(frozen=True)
class Characterization:
    """Reads of the published sweep: ``mean``/``std`` are ``(len(inputs), len(weights))``."""

    chip: str
    profile: str
    num_sends: int
    runs: int
    inputs: tuple[int, ...]
    weights: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def characterization_num_sends(backend: AnalogBackend, inputs: tuple[int, ...]) -> int:
    """Fewest sends for which the largest input at full weight reaches the linear limit."""
    chip = backend.chip
    full = chip.signed_inputs_per_run * max(max(inputs), 1) * chip.weight_max
    needed = math.ceil(chip.linear_max / (backend.gain_per_send * full))
    return max(1, min(chip.num_sends_max, needed))


def characterize(
    backend: AnalogBackend,
    inputs: tuple[int, ...] = CHARACTERIZATION_INPUTS,
    runs: int = CHARACTERIZATION_RUNS,
    num_sends: int | None = None,
) -> Characterization:
    """Run the published characterization sweep through ``backend.mac``."""
    chip = backend.chip
    for value in inputs:
        if not 0 <= value <= chip.input_max:
            raise OptionError(f"characterization inputs must be in 0..{chip.input_max}")
    if runs < 2:
        raise OptionError(f"runs must be at least 2, got {runs}")
    num_sends = characterization_num_sends(backend, inputs) if num_sends is None else num_sends
    weights = np.arange(-chip.weight_max, chip.weight_max + 1)
    rows = chip.signed_inputs_per_run
    layer = grid_layer(chip, np.tile(weights, (rows, 1)), num_sends, name="characterization")
    means, stds = [], []
    for value in inputs:
        reads = _reads(backend, layer, value, runs)
        means.append(reads.mean(0).numpy())
        stds.append(reads.std(0).numpy())
    return Characterization(
        chip=chip.name,
        profile=backend.profile.name,
        num_sends=num_sends,
        runs=runs,
        inputs=tuple(inputs),
        weights=weights,
        mean=np.stack(means),
        std=np.stack(stds),
    )


def characterization_table(result: Characterization, points: int = 5) -> str:
    """A short text table: mean +- std of the reads at a few weights, per input value."""
    picks = np.linspace(0, len(result.weights) - 1, points).round().astype(int)
    head = f"{'weight':>8}" + "".join(f"{f'input {v}':>16}" for v in result.inputs)
    lines = [head]
    for i in picks:
        cells = "".join(
            f"{f'{result.mean[k, i]:.1f} +- {result.std[k, i]:.1f}':>16}"
            for k in range(len(result.inputs))
        )
        lines.append(f"{int(result.weights[i]):>8}{cells}")
    return "\n".join(lines)


def plot_characterization(result: Characterization, path: str | Path) -> Path:
    """Write the read-vs-weight plot (one curve with std error bars per input) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, value in enumerate(result.inputs):
        ax.errorbar(
            result.weights,
            result.mean[k],
            yerr=result.std[k],
            fmt="o",
            markersize=2.5,
            elinewidth=0.8,
            capsize=1.5,
            label=f"input {value}",
        )
    ax.set_xlabel("weight")
    ax.set_ylabel("ADC read (LSB)")
    ax.set_title(
        f"{result.chip} ({result.profile}): read vs weight, "
        f"{result.num_sends} send(s), {result.runs} runs each"
    )
    ax.axhline(0, color="0.7", linewidth=0.5)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
