"""The report as one self-contained HTML page: tables and inline SVG plots, no script, no
external assets (it opens offline and from a mail attachment alike).

Contract. :func:`render_html` lays out the summary, the plots of
:mod:`anacc.runtime.report_plots` (tile placement and utilization; with data, ADC reads and
the error budget; with chip instances, their accuracy histogram), the mapping and cost table
and, with data, the measured table. Every plot is an ``<svg class="plot">`` with a stable
``id`` (``tile-placement``, ``utilization``, ``adc-reads``, ``error-budget``, ``instances``).
"""

from __future__ import annotations

from html import escape

from anacc.runtime.report import MEASURED_COLUMNS, Report, measured_rows, op_label
from anacc.runtime.report_plots import (
    adc_svg,
    budget_svg,
    instances_svg,
    placement_svg,
    utilization_svg,
)

LEFT = ' class="l"'

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 24px auto; max-width: 1040px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.summary { margin: 4px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f5f5f5; }
td.l, th.l { text-align: left; }
svg.plot { display: block; margin: 8px 0; max-width: 100%; height: auto; }
.note { color: #666; font-size: 13px; }
"""


def _html_table(header: list[str], rows: list[list[str]], left: set[int]) -> str:
    def cells(tag: str, values: list[str]) -> str:
        return "".join(
            f"<{tag}{LEFT if i in left else ''}>{escape(v)}</{tag}>" for i, v in enumerate(values)
        )

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><thead><tr>{cells('th', header)}</tr></thead><tbody>{body}</tbody></table>"


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}"


def render_html(report: Report) -> str:
    """The whole page as a string."""
    chip, profile, cost = report.chip, report.profile, report.cost
    src = str(report.source.get("file", "program"))
    title = f"anacc report: {src} on {chip.name}/{profile.name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    write = (
        f"weight rewrites {cost.weight_write_us_per_sample:.1f} us per sample (batches of "
        f"{cost.batch_size})"
        if cost.weight_write_us_per_sample > 0
        else f"weights written once, {cost.weight_write_us_once:.0f} us"
    )
    copies = ", ".join(f"{c.name} x{c.copies}" for c in cost.layers if c.copies > 1)
    summary = [
        f"{len(cost.layers)} analog layers, {cost.tiles} tiles on {cost.loads} chip load(s) "
        f"and {cost.chips} chip(s) ({cost.placement} placement"
        + (f"; copies: {copies}" if copies else "")
        + f"), {_pct(cost.utilization, 1)} % of the loaded synapses hold weights, "
        f"{cost.runs_per_sample} analog runs per sample (chip lower bound "
        f"{cost.lower_bound_runs}).",
        f"Chip only: {cost.time_us_per_sample:.1f} us latency and "
        f"{cost.energy_uj_per_sample:.2f} uJ per sample (analog "
        f"{cost.analog_time_us_per_sample:.1f} us; {write}), {cost.samples_per_second:.0f} "
        f"samples/s. System (host link, FPGA): {cost.system_time_us_per_sample:.1f} us and "
        f"{cost.system_energy_uj_per_sample:.1f} uJ per sample; active inputs "
        f"{cost.layers[0].active_inputs_source if cost.layers else 'n/a'}.",
    ]
    if report.accuracy is not None:
        summary.append(
            "Top-1 accuracy: "
            + ", ".join(f"{k} {100 * v:.2f} %" for k, v in report.accuracy.items())
            + "."
        )
    if report.fine_tuning is not None:
        summary.append(f"Program {report.fine_tuning}.")
    parts += [f'<p class="summary">{escape(s)}</p>' for s in summary]
    parts.append(
        f'<p class="note">Gain {profile.gain_per_send:.4g} LSB per send, wait '
        f"{profile.wait_cycles} cycles, ADC {chip.adc_min}..{chip.adc_max}, linear "
        f"{chip.linear_min}..{chip.linear_max}, {chip.chip_power_w:g} W. "
        "docs/report.md defines every number.</p>"
    )

    parts.append("<h2>Tile placement</h2>")
    parts.append(
        f'<p class="note">Each chip load with its halves of {chip.rows_per_half} synapse rows x '
        f"{chip.columns_per_half} neurons; a tile covers {chip.rows_per_signed_weight} rows per "
        "signed input and one neuron per output, one colour per layer (hover for its place). "
        "A load's tiles are written at once; loads follow one another.</p>"
    )
    parts.append(placement_svg(report))
    parts.append("<h2>Utilization</h2>")
    parts.append(utilization_svg(report))
    parts.append("<h2>Mapping and cost per sample</h2>")
    rows = [
        [
            c.name,
            op_label(c.op, c.kernel),
            f"{c.in_features}x{c.out_features}",
            f"{c.row_chunks}x{c.col_chunks}",
            str(c.tiles),
            str(c.copies),
            _pct(c.utilization, 1),
            f"{c.vectors_per_sample}x{c.parts}/{c.copies}x{c.runs_per_cycle}",
            f"{c.runs_per_sample} ({c.lower_bound_runs})",
            str(c.num_sends),
            f"{c.time_us_per_sample:.1f}",
            f"{c.energy_uj_per_sample:.2f}",
            "batch" if c.input_scale is None else f"{c.input_scale:.4g}",
            f"{c.weight_scale_min:.3g}..{c.weight_scale_max:.3g}",
            f"{c.signed} ({c.signed_reason})",
            c.row_order,
        ]
        for c in cost.layers
    ]
    parts.append(
        _html_table(
            [
                "layer",
                "op",
                "in x out",
                "grid",
                "tiles",
                "copies",
                "util %",
                "vec x part/copies x runs",
                "runs (bound)",
                "sends",
                "time us",
                "energy uJ",
                "input scale",
                "weight scale",
                "signed inputs",
                "row order",
            ],
            rows,
            left={0, 1, 14, 15},
        )
    )
    if report.budget is None or report.data is None:
        parts.append(
            '<p class="note">Run with --data for ADC use, saturation, SNR, the error budget '
            "and accuracy per backend.</p>"
        )
    else:
        d = report.data
        parts.append("<h2>ADC reads</h2>")
        parts.append(
            f'<p class="note">Emulator reads (seed {report.seed}) on {d.samples} of '
            f"{d.total_samples} samples of {escape(d.source)}, ideal activations into every "
            "layer; shaded: beyond the linear range; counts on a log scale.</p>"
        )
        parts.append(adc_svg(report))
        parts.append("<h2>Error budget</h2>")
        parts.append(budget_svg(report))
        parts.append(_html_table(list(MEASURED_COLUMNS), measured_rows(report), left={0}))
        parts.append(
            '<p class="note">Relative RMS errors of each layer output against ideal: '
            "quantization = quantized vs ideal, fixed pattern = noise-free emulator vs "
            "quantized, noise = emulator vs noise-free emulator, sat = the part of the total "
            "error in outputs with a read beyond the linear range.</p>"
        )
    if report.instances is not None:
        parts += _instances_section(report)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _instances_section(report: Report) -> list[str]:
    stats = report.instances
    assert stats is not None
    worst_seed, worst = stats.worst
    best_seed, best = stats.best
    edges, counts = stats.histogram()
    rows = [
        [f"{100 * edges[k]:.2f} .. {100 * edges[k + 1]:.2f}", str(c)] for k, c in enumerate(counts)
    ]
    where = "here" if stats.where == "local" else f"on the Ray cluster at {stats.where}"
    return [
        "<h2>Accuracy across chip instances</h2>",
        f'<p class="summary">{len(stats.seeds)} emulated chip instances (seeds '
        f"{stats.seeds[0]}..{stats.seeds[-1]}), {stats.samples} samples each: mean "
        f"{100 * stats.mean:.2f} %, standard deviation {100 * stats.std:.2f} %, worst "
        f"{100 * worst:.2f} % (seed {worst_seed}), best {100 * best:.2f} % (seed "
        f"{best_seed}).</p>",
        f'<p class="note">Each instance has its own fixed pattern (neuron gains and offsets, '
        f"synapse mismatch, saturation points) and its own noise; run {escape(where)} in "
        f"{stats.seconds:.1f} s.</p>",
        instances_svg(report),
        _html_table(["top-1 accuracy %", "instances"], rows, left=set()),
    ]
