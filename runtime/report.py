"""The mapping report of a program: :func:`build_report` assembles it, and it renders as text
or as JSON (the schema is documented field by field in docs/report.md).

The static part (tiles, utilization, runs, time and energy) comes from
:mod:`anacc.compiler.cost`; with data, :mod:`anacc.runtime.error_budget` adds the measured
part (ADC use, saturation, SNR, error budget, end-to-end accuracy per backend) and the
measured number of active inputs per run replaces the all-active assumption of the time
estimate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from anacc.compiler.chip import ChipSpec, Profile
from anacc.compiler.cost import DEFAULT_BATCH_SIZE, ProgramCost, program_cost
from anacc.compiler.datafile import Dataset, match_inputs
from anacc.compiler.mapping import Tile
from anacc.compiler.partition import PlacementRecord, summary
from anacc.compiler.program import AnalogStep, Program, ProgramLayer
from anacc.runtime.analog import rows_of
from anacc.runtime.error_budget import LayerBudget, backend_accuracy, measure_layers
from anacc.runtime.instances import InstanceStats, evaluate_instances, instance_seeds
from anacc.runtime.session import InferenceInterpreter, Session

from anacc import __version__
from anacc.errors import OptionError

REPORT_FORMAT = "anacc-report"
REPORT_VERSION = 1

# Column headers of the per-layer measurement table (text and HTML alike).
MEASURED_COLUMNS = (
    "layer",
    "read p1/p50/p99",
    "max |read|",
    "at ADC limit %",
    "beyond linear %",
    "SNR dB",
    "quant %",
    "fixed %",
    "noise %",
    "sat %",
    "total %",
)


@dataclass(frozen=True)
class DataInfo:
    """The data a report measured: where from, how many of its samples were used."""

    source: str
    samples: int
    total_samples: int
    labels: bool


@dataclass(frozen=True)
class Report:
    """A program's mapping report; ``budget`` and ``accuracy`` need data."""

    source: dict[str, Any]
    options: dict[str, Any]
    chip: ChipSpec
    profile: Profile
    cost: ProgramCost
    tiles: dict[str, tuple[Tile, ...]]
    seed: int
    partition: tuple[PlacementRecord, ...] = ()
    data: DataInfo | None = None
    budget: tuple[LayerBudget, ...] | None = None
    accuracy: dict[str, float] | None = None
    instances: InstanceStats | None = None

    @property
    def fine_tuning(self) -> str | None:
        """How the program was fine-tuned, in words (None if it was not)."""
        return fine_tuning_note(self.source)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (docs/report.md documents every field)."""
        return _to_json(self)


class _VectorCounter(InferenceInterpreter):
    """Counts the input vectors each analog layer receives (all of its uses together)."""

    def __init__(self, session: Session) -> None:
        super().__init__(session.program, session.backend, session.regions)
        self.vectors = dict.fromkeys(session.program.layers, 0)

    def analog(self, step: AnalogStep, layer: ProgramLayer, x: torch.Tensor) -> torch.Tensor:
        self.vectors[step.layer] += int(rows_of(layer, x).shape[0])
        return super().analog(step, layer, x)


def fine_tuning_note(source: dict[str, Any]) -> str | None:
    """One phrase on how a program was fine-tuned: against its own chip instance (the fixed
    pattern of that chip) or against several (robust weights)."""
    if not source.get("fine_tuned"):
        return None
    info = source.get("finetune")
    if not isinstance(info, dict) or not info.get("instances"):
        return "fine-tuned"
    seeds = [int(s) for s in info["instances"]]
    if len(seeds) == 1:
        return f"fine-tuned chip-specific: against chip instance {seeds[0]} (its fixed pattern)"
    return f"fine-tuned robust: against {len(seeds)} chip instances (seeds {seeds[0]}..{seeds[-1]})"


def vectors_per_sample(program: Program) -> dict[str, int]:
    """Input vectors one sample sends to each analog layer, from a dry run of the ideal
    backend on one zero sample (a program's shapes are static per sample)."""
    session = Session(program, "ideal")
    counter = _VectorCounter(session)
    feeds = {}
    for spec in program.inputs:
        shape = (1, *spec.sample_shape) if spec.batched else spec.shape
        feeds[spec.name] = torch.zeros(shape, dtype=getattr(torch, spec.dtype))
    with torch.no_grad():
        counter.run(feeds)
    return counter.vectors


def build_report(
    program: Program,
    data: Dataset | dict[str, np.ndarray] | None = None,
    *,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_samples: int | None = None,
    instances: int | None = None,
    address: str | None = None,
) -> Report:
    """The report of ``program``; with ``data`` (a dataset or arrays named after the inputs,
    optional ``labels``), also the measured part. ``seed`` is the emulated chip instance and
    noise seed, and picks the ``max_samples`` samples used when the data has more. Batches of
    ``batch_size`` samples are used both to run the data and to amortize weight rewrites.
    With ``instances`` (and labelled data), the accuracy on that many emulated chip
    instances from ``seed`` on (on the Ray cluster at ``address`` if given)."""
    if batch_size < 1:
        raise OptionError(f"batch size {batch_size}: use 1 or more")
    if max_samples is not None and max_samples < 1:
        raise OptionError(f"max samples {max_samples}: use 1 or more")
    info = budget = accuracy = active = stats = None
    if instances is not None and data is None:
        raise OptionError("accuracy over chip instances needs data (--data) with 'labels'")
    if data is not None:
        if isinstance(data, dict):
            data = match_inputs(data, program.inputs, "report data")
        if instances is not None and data.labels is None:
            raise OptionError(f"{data.path}: accuracy over chip instances needs 'labels'")
        data, info = _subset(data, max_samples, seed)
        budget = measure_layers(program, data, seed=seed, batch_size=batch_size)
        accuracy = backend_accuracy(program, data, seed=seed, batch_size=batch_size)
        active = {b.name: b.active_inputs for b in budget}
        if instances is not None:
            seeds = instance_seeds(instances, seed)
            stats = evaluate_instances(program, data, seeds, batch_size=batch_size, address=address)
    cost = program_cost(
        program, vectors_per_sample(program), active_inputs=active, batch_size=batch_size
    )
    return Report(
        source=dict(program.source),
        options=dict(program.options),
        chip=program.chip,
        profile=program.chip.profile(program.profile),
        cost=cost,
        tiles={name: layer.analog.tiles for name, layer in program.layers.items()},
        seed=seed,
        partition=program.partition,
        data=info,
        budget=budget,
        accuracy=accuracy,
        instances=stats,
    )


def _subset(data: Dataset, max_samples: int | None, seed: int) -> tuple[Dataset, DataInfo]:
    n = data.samples
    if max_samples is None or max_samples >= n:
        keep = None
    else:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
    if keep is not None:
        data = data.subset(keep)
    return data, DataInfo(data.path, data.samples, n, data.labels is not None)


# -- JSON --------------------------------------------------------------------------------------


def _num(x: float | None, digits: int = 6) -> float | None:
    """A finite float rounded to ``digits`` significant digits, or None."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def _to_json(r: Report) -> dict[str, Any]:
    chip, profile, cost = r.chip, r.profile, r.cost
    layers = []
    for c in cost.layers:
        layers.append(
            {
                "name": c.name,
                "op": c.op,
                "kernel": list(c.kernel) if c.kernel is not None else None,
                "in_features": c.in_features,
                "out_features": c.out_features,
                "tile_grid": [c.row_chunks, c.col_chunks],
                "tiles": c.tiles,
                "loads": list(c.loads),
                "rows_used": c.rows_used,
                "row_capacity": c.row_capacity,
                "columns_used": c.columns_used,
                "column_capacity": c.column_capacity,
                "weights": c.weights,
                "utilization": _num(c.utilization),
                "vectors_per_sample": c.vectors_per_sample,
                "parts": c.parts,
                "copies": c.copies,
                "chips": list(c.chips),
                "runs_per_cycle": c.runs_per_cycle,
                "lower_bound_runs": c.lower_bound_runs,
                "runs_per_sample": c.runs_per_sample,
                "num_sends": c.num_sends,
                "gain_reason": c.gain_reason,
                "input_scale": _num(c.input_scale),
                "input_offset": _num(c.input_offset),
                "weight_scale": [_num(c.weight_scale_min), _num(c.weight_scale_max)],
                "signed": c.signed,
                "signed_reason": c.signed_reason,
                "row_order": c.row_order,
                "active_inputs": [[_num(v, 4) for v in part] for part in c.active_inputs],
                "active_inputs_source": c.active_inputs_source,
                "time_us_per_sample": _num(c.time_us_per_sample),
                "energy_uj_per_sample": _num(c.energy_uj_per_sample),
                "tile_table": [t.to_dict() for t in r.tiles[c.name]],
            }
        )
    totals = {
        "tiles": cost.tiles,
        "loads": cost.loads,
        "chips": cost.chips,
        "load_chip": list(cost.load_chip),
        "placement": cost.placement,
        "weights": cost.weights,
        "utilization": _num(cost.utilization),
        "runs_per_sample": cost.runs_per_sample,
        "lower_bound_runs": cost.lower_bound_runs,
        "batch_size": cost.batch_size,
        "analog_time_us_per_sample": _num(cost.analog_time_us_per_sample),
        "weight_write_us_per_sample": _num(cost.weight_write_us_per_sample),
        "time_us_per_sample": _num(cost.time_us_per_sample),
        "period_us": _num(cost.period_us),
        "chip_busy_us": [_num(v) for v in cost.chip_busy_us],
        "samples_per_second": _num(cost.samples_per_second),
        "energy_uj_per_sample": _num(cost.energy_uj_per_sample),
        "weight_write_energy_uj_per_sample": _num(cost.weight_write_energy_uj_per_sample),
        "weight_write_us_once": _num(cost.weight_write_us_once),
        "weight_write_energy_uj_once": _num(cost.weight_write_energy_uj_once),
        "system": {
            "link_us_per_sample": _num(cost.link_us_per_sample),
            "time_us_per_sample": _num(cost.system_time_us_per_sample),
            "energy_uj_per_sample": _num(cost.system_energy_uj_per_sample),
        },
    }
    part = summary(r.partition)
    partition = {
        **part,
        "analog_share": _num(part["analog_share"]),  # type: ignore[arg-type]
        "placements": [
            {"node": p.node, "op": p.op, "where": p.where, "reason": p.reason, "macs": p.macs}
            for p in r.partition
        ],
    }
    budget = None
    if r.budget is not None:
        budget = []
        for b in r.budget:
            a = b.adc
            budget.append(
                {
                    "name": b.name,
                    "vectors": b.vectors,
                    "adc": {
                        "reads": a.reads,
                        "p1": a.p1,
                        "p50": a.p50,
                        "p99": a.p99,
                        "max_abs": a.max_abs,
                        "at_limit_rate": _num(a.at_limit_rate),
                        "beyond_linear_rate": _num(a.beyond_linear_rate),
                        "histogram": {"low": a.low, "counts": list(a.histogram)},
                    },
                    "snr_db": _num(b.snr_db, 4),
                    "relative_error": {k: _num(v) for k, v in asdict(b.error).items()},
                    "saturated_output_rate": _num(b.saturated_output_rate),
                    "input_clip_rate": _num(b.input_clip_rate),
                }
            )
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "anacc_version": __version__,
        "source": r.source,
        "options": r.options,
        "seed": r.seed,
        "chip": {
            "name": chip.name,
            "description": chip.description,
            "halves": chip.halves,
            "rows_per_half": chip.rows_per_half,
            "columns_per_half": chip.columns_per_half,
            "rows_per_signed_weight": chip.rows_per_signed_weight,
            "signed_inputs_per_run": chip.signed_inputs_per_run,
            "outputs_per_run": chip.outputs_per_run,
            "input_max": chip.input_max,
            "weight_max": chip.weight_max,
            "adc_range": [chip.adc_min, chip.adc_max],
            "linear_range": [chip.linear_min, chip.linear_max],
            "num_sends_max": chip.num_sends_max,
            "clock_mhz": chip.clock_mhz,
            "overhead_us_per_run": chip.overhead_us_per_run,
            "weight_write_us_per_load": chip.weight_write_us_per_load,
            "chip_power_w": chip.chip_power_w,
        },
        "profile": {
            "name": profile.name,
            "description": profile.description,
            "ota_bias": profile.ota_bias,
            "tau_syn_us": profile.tau_syn_us,
            "wait_cycles": profile.wait_cycles,
            "gain_per_send": _num(profile.gain_per_send),
            "noise_sigma_lsb": _num(profile.noise_sigma_lsb),
        },
        "data": None if r.data is None else asdict(r.data),
        "layers": layers,
        "totals": totals,
        "partition": partition,
        "error_budget": budget,
        "accuracy": None if r.accuracy is None else {k: _num(v) for k, v in r.accuracy.items()},
        "fine_tuning": r.fine_tuning,
        "instances": None if r.instances is None else r.instances.to_json(),
    }


# -- text --------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right if right is not None else set(range(1, len(header)))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        out = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _g(x: float | None, fmt: str = ".3g") -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)


def _pct(x: float | None, fmt: str = ".2f") -> str:
    return "n/a" if x is None else format(100.0 * x, fmt)


def measured_rows(r: Report) -> list[list[str]]:
    """The cells of the measured table (:data:`MEASURED_COLUMNS`), one row per layer."""
    rows = []
    for b in r.budget or ():
        a, e = b.adc, b.error
        rows.append(
            [
                b.name,
                f"{a.p1:.0f}/{a.p50:.0f}/{a.p99:.0f}",
                str(a.max_abs),
                _pct(a.at_limit_rate),
                _pct(a.beyond_linear_rate),
                _g(b.snr_db, ".1f"),
                *(
                    _pct(x)
                    for x in (e.quantization, e.fixed_pattern, e.noise, e.saturation, e.total)
                ),
            ]
        )
    return rows


def op_label(op: str, kernel: tuple[int, ...] | None) -> str:
    """``dense`` or ``conv 3x3``."""
    return op if kernel is None else f"{op} {'x'.join(map(str, kernel))}"


def render_text(r: Report) -> str:
    """The report as plain-text tables."""
    chip, profile, cost = r.chip, r.profile, r.cost
    out: list[str] = []
    src = r.source.get("file", "?")
    out.append(
        f"anacc report: {src} on {chip.name}/{profile.name} "
        f"(gain {profile.gain_per_send:.4g} LSB per send, wait {profile.wait_cycles} cycles)"
    )
    if r.fine_tuning is not None:
        out.append(f"Program {r.fine_tuning}")
    out.append("")
    rows = []
    for c in cost.layers:
        rows.append(
            [
                c.name,
                op_label(c.op, c.kernel),
                f"{c.in_features}x{c.out_features}",
                f"{c.row_chunks}x{c.col_chunks}",
                str(c.tiles),
                str(c.copies),
                str(c.columns_used),
                _pct(c.utilization, ".1f"),
                ",".join(map(str, c.loads)),
                f"{c.vectors_per_sample}x{c.parts}/{c.copies}x{c.runs_per_cycle}",
                f"{c.runs_per_sample} ({c.lower_bound_runs})",
                str(c.num_sends),
                _g(c.time_us_per_sample, ".1f"),
                _g(c.energy_uj_per_sample, ".2f"),
            ]
        )
    out.append("Mapping and cost per sample")
    out.append(
        _table(
            [
                "layer",
                "op",
                "in x out",
                "grid",
                "tiles",
                "copies",
                "neurons",
                "util %",
                "loads",
                "vec x part/copies x runs",
                "runs (bound)",
                "sends",
                "time us",
                "energy uJ",
            ],
            rows,
            right={3, 4, 5, 6, 7, 10, 11, 12, 13},
        )
    )
    out.append("")
    rows = []
    for c in cost.layers:
        scale = "batch" if c.input_scale is None else _g(c.input_scale, ".4g")
        rows.append(
            [
                c.name,
                scale,
                _g(c.input_offset, ".4g"),
                f"{c.weight_scale_min:.3g}..{c.weight_scale_max:.3g}",
                f"{c.signed} ({c.signed_reason})",
                c.row_order,
            ]
        )
    out.append("Encoding")
    out.append(
        _table(
            ["layer", "input scale", "offset", "weight scale", "signed inputs", "row order"],
            rows,
            right={1, 2},
        )
    )
    out.append("")
    active = cost.layers[0].active_inputs_source if cost.layers else "n/a"
    chips = f"{cost.chips} chip(s)" if cost.chips > 1 else "1 chip"
    out.append(
        f"Totals ({cost.placement} placement): {cost.tiles} tiles on {cost.loads} chip load(s), "
        f"{chips}; {_pct(cost.utilization, '.1f')} % of the loaded synapses hold weights; "
        f"{cost.runs_per_sample} analog runs per sample (chip lower bound "
        f"{cost.lower_bound_runs})"
    )
    write = (
        f"weight rewrites {cost.weight_write_us_per_sample:.1f} us (per batch of {cost.batch_size})"
        if cost.weight_write_us_per_sample > 0
        else f"weights written once ({cost.weight_write_us_once:.0f} us, not per sample)"
    )
    out.append(
        f"Chip only: latency {cost.time_us_per_sample:.1f} us per sample (analog "
        f"{cost.analog_time_us_per_sample:.1f} us + {write}); "
        f"{cost.samples_per_second:.0f} samples/s"
        + (f" pipelined over {cost.chips} chips" if cost.chips > 1 else "")
        + f"; {cost.energy_uj_per_sample:.2f} uJ per sample at {chip.chip_power_w:g} W"
    )
    out.append(
        f"System (host link {chip.link_us_per_run:g} us per run, {chip.system_power_w:g} W): "
        f"{cost.system_time_us_per_sample:.1f} us and "
        f"{cost.system_energy_uj_per_sample:.1f} uJ per sample"
    )
    out.append(f"Active inputs per run: {active}")
    if r.partition:
        part = summary(r.partition)
        nodes = ", ".join(f"{n} {k}" for k, n in part["nodes"].items())  # type: ignore[union-attr]
        ops = ", ".join(f"{op} x{n}" for op, n in part["digital_ops"].items())  # type: ignore[union-attr]
        out.append(
            f"Partition: {nodes} node(s) of the source model; "
            f"{100 * float(part['analog_share']):.1f} % of the multiply-accumulates on the "  # type: ignore[arg-type]
            f"array; digital: {ops or 'none'}"
        )
    if r.budget is not None and r.data is not None:
        out.append("")
        d = r.data
        out.append(
            f"Measured on {d.samples} of {d.total_samples} samples of {d.source} "
            f"(ideal activations into every layer; emulator seed {r.seed})"
        )
        out.append(_table(list(MEASURED_COLUMNS), measured_rows(r)))
        out.append(
            f"ADC range {chip.adc_min}..{chip.adc_max}, linear {chip.linear_min}.."
            f"{chip.linear_max}; errors are relative RMS errors of the layer output against ideal"
        )
        if r.accuracy is not None:
            acc = ", ".join(f"{k} {100 * v:.2f} %" for k, v in r.accuracy.items())
            out.append(f"Top-1 accuracy: {acc}")
    if r.instances is not None:
        out.append("")
        out.append(r.instances.render_text())
    return "\n".join(out) + "\n"
