"""The plots of the report page, drawn with matplotlib and returned as inline SVG text.

Contract. Each function takes a :class:`~anacc.runtime.report.Report` and returns one
``<svg class="plot">`` (see :mod:`anacc.runtime.svg_plot`) with a stable ``id``:
:func:`placement_svg` (``tile-placement``: every chip load as its halves, each a
``rows_per_half`` x ``columns_per_half`` synapse array from the chip description, every tile
where it sits, one colour per layer), :func:`utilization_svg` (``utilization``), and with data
:func:`adc_svg` (``adc-reads``: the emulator's ADC reads against the ADC and linear ranges)
and :func:`budget_svg` (``error-budget``: the error budget as stacked bars). The marks that
stand for something countable are groups with ids of their own (``half-L-H``, ``tile-L-I-K``,
``bin-I-K``, ``budget-part-I-CAUSE``: load, half, layer index, tile index, ADC bin, cause)
and a hover title that says what they are.
"""

from __future__ import annotations

import math
from typing import Any

from anacc.compiler.chip import ChipSpec
from anacc.runtime.report import Report
from anacc.runtime.svg_plot import PALETTE, new_figure, svg_markup

BUDGET_COLORS = {"quantization": "#4e79a7", "fixed_pattern": "#f28e2b", "noise": "#e15759"}
BUDGET_LABELS = {
    "quantization": "quantization",
    "fixed_pattern": "fixed pattern",
    "noise": "noise",
}
SATURATION_COLOR = "#8e44ad"
TOTAL_COLOR = "#000000"
NONLINEAR_COLOR = "#fbe3e3"
LIMIT_COLOR = "#c0392b"
ALL_LAYERS_COLOR = "#555555"
HALF_COLOR = "#f7f7f7"
MAX_LOADS_DRAWN = 48
LOADS_PER_ROW = 2
PAGE_WIDTH_IN = 10.4  # the page's text width (1040 px at 100 px per inch)


def _layer_colors(report: Report) -> dict[str, str]:
    return {c.name: PALETTE[i % len(PALETTE)] for i, c in enumerate(report.cost.layers)}


def placement_svg(report: Report) -> str:
    """Every chip load as its halves, each a ``rows_per_half`` x ``columns_per_half`` array of
    synapses; each tile a rectangle over the physical rows it uses (its signed input rows
    times ``rows_per_signed_weight``) and its columns from ``col_offset``, one colour per
    layer."""
    from matplotlib.patches import Patch, Rectangle

    chip, cost = report.chip, report.cost
    colors = _layer_colors(report)
    loads = min(cost.loads, MAX_LOADS_DRAWN)
    per_row = min(LOADS_PER_ROW, max(loads, 1))
    grid_rows = max(1, math.ceil(loads / per_row))
    cell_in = PAGE_WIDTH_IN / (per_row * chip.halves) * 0.9
    fig = new_figure(
        PAGE_WIDTH_IN, grid_rows * cell_in * chip.rows_per_half / chip.columns_per_half + 0.9
    )
    axes = fig.subplots(grid_rows, per_row * chip.halves, squeeze=False)
    tooltips: dict[str, str] = {}
    for load in range(grid_rows * per_row):
        for half in range(chip.halves):
            ax = axes[load // per_row][(load % per_row) * chip.halves + half]
            if load >= loads:
                ax.set_axis_off()
                continue
            _half_axes(ax, chip, f"load {load}, half {half}")
            gid = f"half-{load}-{half}"
            ax.add_patch(
                Rectangle(
                    (0, 0),
                    chip.columns_per_half,
                    chip.rows_per_half,
                    facecolor=HALF_COLOR,
                    edgecolor="#999999",
                    gid=gid,
                )
            )
            tooltips[gid] = f"load {load}, half {half}"
    for layer_index, (name, tiles) in enumerate(report.tiles.items()):
        for t in tiles:
            if t.load >= loads:
                continue
            ax = axes[t.load // per_row][(t.load % per_row) * chip.halves + t.half]
            gid = f"tile-{t.load}-{layer_index}-{t.index}"
            rows_used = t.n_rows * chip.rows_per_signed_weight
            first_row = t.row_offset * chip.rows_per_signed_weight
            ax.add_patch(
                Rectangle(
                    (t.col_offset, first_row),
                    t.n_cols,
                    rows_used,
                    facecolor=colors[name],
                    edgecolor="#333333",
                    linewidth=0.5,
                    alpha=0.85,
                    gid=gid,
                )
            )
            tooltips[gid] = (
                f"{name} copy {t.copy} tile {t.index} (run {t.run}): inputs "
                f"{t.rows[0]}..{t.rows[1] - 1} on synapse rows {first_row}.."
                f"{first_row + rows_used - 1}, outputs {t.cols[0]}..{t.cols[1] - 1} on neurons "
                f"{t.col_offset}..{t.col_offset + t.n_cols - 1} of half {t.half}"
            )
    handles = [Patch(facecolor=c, edgecolor="#333333", label=n) for n, c in colors.items()]
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 6))
    if cost.loads > loads:
        fig.supxlabel(f"... and {cost.loads - loads} more loads, not drawn", fontsize=9)
    return svg_markup(fig, "tile-placement", "tile placement per chip load", tooltips)


def _half_axes(ax: Any, chip: ChipSpec, title: str) -> None:
    ax.set_xlim(0, chip.columns_per_half)
    ax.set_ylim(chip.rows_per_half, 0)  # row 0 on top, as the row pairs are sent
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("neuron (column)", fontsize=8)
    ax.set_ylabel("synapse row", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_xticks([0, chip.columns_per_half // 2, chip.columns_per_half])
    ax.set_yticks([0, chip.rows_per_half // 2, chip.rows_per_half])


def utilization_svg(report: Report) -> str:
    """One bar per layer (and the total): share of the tiles' capacity holding weights."""
    cost = report.cost
    colors = _layer_colors(report)
    entries = [(c.name, c.utilization, colors[c.name]) for c in cost.layers]
    entries.append(("all layers", cost.utilization, ALL_LAYERS_COLOR))
    fig = new_figure(PAGE_WIDTH_IN, 0.9 + 0.3 * len(entries))
    ax = fig.add_subplot()
    names = [name for name, _, _ in entries]
    values = [100 * util for _, util, _ in entries]
    bars = ax.barh(names, values, color=[c for _, _, c in entries], height=0.7)
    ax.bar_label(bars, labels=[f"{v:.1f} %" for v in values], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("utilization: share of the tiles' synapses holding a weight, %")
    ax.grid(axis="x", color="#dddddd")
    ax.set_axisbelow(True)
    return svg_markup(fig, "utilization", "utilization per layer")


def adc_svg(report: Report) -> str:
    """Per layer: histogram of the emulator's ADC reads (log counts) over the ADC range, the
    region beyond the linear range shaded, its limits dashed."""
    assert report.budget is not None
    chip = report.chip
    per_row = 2
    n = len(report.budget)
    grid_rows = max(1, math.ceil(n / per_row))
    fig = new_figure(PAGE_WIDTH_IN, 2.3 * grid_rows)
    axes = fig.subplots(grid_rows, per_row, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    for i, (b, ax) in enumerate(zip(report.budget, axes.flat, strict=False)):
        a = b.adc
        ax.axvspan(chip.adc_min - 0.5, chip.linear_min - 0.5, color=NONLINEAR_COLOR, lw=0)
        ax.axvspan(chip.linear_max + 0.5, chip.adc_max + 0.5, color=NONLINEAR_COLOR, lw=0)
        for value in (chip.linear_min - 0.5, chip.linear_max + 0.5):
            ax.axvline(value, color=LIMIT_COLOR, linestyle="--", linewidth=1)
        reads = [(a.low + k, count) for k, count in enumerate(a.histogram) if count]
        if reads:
            bars = ax.bar(
                [v for v, _ in reads], [c for _, c in reads], width=1.0, color=PALETTE[0], log=True
            )
            for bar, (value, _) in zip(bars, reads, strict=True):
                bar.set_gid(f"bin-{i}-{value - a.low}")
        ax.set_xlim(chip.adc_min - 0.5, chip.adc_max + 0.5)
        ax.set_xticks([chip.adc_min, chip.linear_min, 0, chip.linear_max, chip.adc_max])
        ax.tick_params(labelsize=7)
        ax.set_title(
            f"{b.name}: p1/p50/p99 {a.p1:.0f}/{a.p50:.0f}/{a.p99:.0f}, "
            f"{100 * a.beyond_linear_rate:.2f} % beyond linear",
            fontsize=8,
        )
        ax.set_xlabel("ADC read", fontsize=8)
        ax.set_ylabel("reads (log)", fontsize=8)
    tooltips = {
        f"bin-{i}-{k}": f"{b.name}: {count} reads of {b.adc.low + k}"
        for i, b in enumerate(report.budget)
        for k, count in enumerate(b.adc.histogram)
        if count
    }
    return svg_markup(fig, "adc-reads", "ADC read distributions", tooltips)


def budget_svg(report: Report) -> str:
    """Per layer: squared relative errors of the three causes stacked (error power as a share
    of the ideal output power), the measured total marked, and below, hatched, the error
    power in outputs read beyond the linear range."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    assert report.budget is not None
    fig = new_figure(PAGE_WIDTH_IN, 1.3 + 0.45 * len(report.budget))
    ax = fig.add_subplot()
    tooltips: dict[str, str] = {}
    for i, b in enumerate(report.budget):
        e = b.error
        left = 0.0
        for key, color in BUDGET_COLORS.items():
            value = (getattr(e, key) or 0.0) ** 2
            gid = f"budget-part-{i}-{key}"
            ax.barh(i, 100 * value, left=left, height=0.5, color=color, gid=gid)
            tooltips[gid] = (
                f"{b.name} {BUDGET_LABELS[key]}: {100 * math.sqrt(value):.2f} % RMS, "
                f"{100 * value:.3f} % of the output power"
            )
            left += 100 * value
        total = (e.total or 0.0) ** 2
        ax.plot(
            [100 * total] * 2,
            [i - 0.32, i + 0.32],
            color=TOTAL_COLOR,
            linewidth=2,
            gid=f"budget-total-{i}",
        )
        tooltips[f"budget-total-{i}"] = f"{b.name} total: {100 * math.sqrt(total):.2f} % RMS"
        sat = (e.saturation or 0.0) ** 2
        gid = f"budget-saturation-{i}"
        ax.barh(
            i + 0.36,
            100 * sat,
            height=0.14,
            color="white",
            edgecolor=SATURATION_COLOR,
            hatch="////",
            linewidth=0,
            gid=gid,
        )
        tooltips[gid] = f"{b.name} error in saturated outputs: {100 * math.sqrt(sat):.2f} % RMS"
    ax.set_yticks(range(len(report.budget)), [b.name for b in report.budget])
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    ax.set_xlabel("error power, % of the ideal output power")
    ax.grid(axis="x", color="#dddddd")
    ax.set_axisbelow(True)
    handles = [Patch(color=c, label=BUDGET_LABELS[k]) for k, c in BUDGET_COLORS.items()]
    handles.append(
        Patch(
            facecolor="white",
            edgecolor=SATURATION_COLOR,
            hatch="////",
            label="in saturated outputs",
        )
    )
    handles.append(Line2D([], [], color=TOTAL_COLOR, linewidth=2, label="measured total"))
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles))
    return svg_markup(fig, "error-budget", "error budget per layer", tooltips)


def instances_svg(report: Report) -> str:
    """Histogram of the top-1 accuracy over the emulated chip instances, the mean and the
    worst instance marked."""
    from matplotlib.lines import Line2D

    stats = report.instances
    assert stats is not None
    edges, counts = stats.histogram()
    fig = new_figure(PAGE_WIDTH_IN, 2.6)
    ax = fig.add_subplot()
    tooltips = {}
    for k, count in enumerate(counts):
        lo, hi = 100 * edges[k], 100 * edges[k + 1]
        gid = f"instances-bin-{k}"
        ax.bar(lo, count, width=hi - lo, align="edge", color=PALETTE[0], edgecolor="white", gid=gid)
        tooltips[gid] = f"{count} instance(s) with {lo:.2f} .. {hi:.2f} % top-1 accuracy"
    worst_seed, worst = stats.worst
    ax.axvline(100 * stats.mean, color=TOTAL_COLOR, linewidth=2, gid="instances-mean")
    ax.axvline(100 * worst, color=LIMIT_COLOR, linestyle="--", linewidth=1.5, gid="instances-worst")
    tooltips["instances-mean"] = (
        f"mean {100 * stats.mean:.2f} %, standard deviation {100 * stats.std:.2f} %"
    )
    tooltips["instances-worst"] = f"worst: seed {worst_seed}, {100 * worst:.2f} %"
    ax.set_xlabel("top-1 accuracy, %")
    ax.set_ylabel("chip instances")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="y", color="#dddddd")
    ax.set_axisbelow(True)
    handles = [
        Line2D([], [], color=TOTAL_COLOR, linewidth=2, label="mean"),
        Line2D([], [], color=LIMIT_COLOR, linestyle="--", label="worst instance"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles))
    return svg_markup(fig, "instances", "accuracy over chip instances", tooltips)
