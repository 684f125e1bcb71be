"""The report as one self-contained HTML page: tables and inline SVG plots, no script, no
external assets (it opens offline and from a mail attachment alike).

Plots: tile placement per chip load and half, utilization per layer, and with data the
distribution of the emulator's ADC reads against the ADC and linear ranges and the error
budget as stacked bars. Every plot is an ``<svg class="plot">`` with a stable ``id``
(``tile-placement``, ``utilization``, ``adc-reads``, ``error-budget``).
"""

from __future__ import annotations

import math
from html import escape

from anacc.runtime.report import MEASURED_COLUMNS, Report, op_label

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
BUDGET_COLORS = {"quantization": "#4e79a7", "fixed_pattern": "#f28e2b", "noise": "#e15759"}
BUDGET_LABELS = {
    "quantization": "quantization",
    "fixed_pattern": "fixed pattern",
    "noise": "noise",
}
MAX_LOADS_DRAWN = 48
LEFT = ' class="l"'
PAGE_WIDTH = 1000

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
svg.plot { display: block; margin: 8px 0; }
svg text { font-family: inherit; fill: #222; }
.note { color: #666; font-size: 13px; }
"""


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _text(
    x: float, y: float, s: str, size: int = 11, anchor: str = "start", extra: str = ""
) -> str:
    return (
        f'<text x="{_f(x)}" y="{_f(y)}" font-size="{size}" text-anchor="{anchor}"{extra}>'
        f"{escape(s)}</text>"
    )


def _rect(
    x: float,
    y: float,
    w: float,
    h: float,
    fill: str,
    cls: str = "",
    title: str = "",
    extra: str = "",
) -> str:
    c = f' class="{cls}"' if cls else ""
    t = f"<title>{escape(title)}</title>" if title else ""
    return (
        f'<rect{c} x="{_f(x)}" y="{_f(y)}" width="{_f(max(w, 0.0))}" height="{_f(max(h, 0.0))}" '
        f'fill="{fill}"{extra}>{t}</rect>'
    )


def _svg(plot_id: str, width: float, height: float, body: list[str], label: str) -> str:
    return (
        f'<svg class="plot" id="{plot_id}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{_f(width)}" height="{_f(height)}" viewBox="0 0 {_f(width)} {_f(height)}" '
        f'role="img" aria-label="{escape(label)}">' + "".join(body) + "</svg>"
    )


def _layer_colors(report: Report) -> dict[str, str]:
    return {c.name: PALETTE[i % len(PALETTE)] for i, c in enumerate(report.cost.layers)}


def _legend(colors: dict[str, str], x: float, y: float, width: float) -> tuple[list[str], float]:
    body, cx, cy = [], x, y
    for name, color in colors.items():
        w = 22 + 7 * len(name)
        if cx + w > x + width:
            cx, cy = x, cy + 18
        body.append(_rect(cx, cy - 10, 12, 12, color))
        body.append(_text(cx + 16, cy, name))
        cx += w + 12
    return body, cy + 14


def placement_svg(report: Report) -> str:
    """Every chip load as its halves; each tile a rectangle at its columns and row pairs."""
    chip, cost = report.chip, report.cost
    colors = _layer_colors(report)
    rows_per_run = chip.signed_inputs_per_run
    pw = 220.0
    ph = min(max(pw * rows_per_run / chip.columns_per_half, 50.0), 220.0)
    sx, sy = pw / chip.columns_per_half, ph / rows_per_run
    gap = 12.0
    block_w = chip.halves * pw + (chip.halves - 1) * gap
    block_h = ph + 34.0
    per_row = max(1, int((PAGE_WIDTH + 30) // (block_w + 30)))
    body, top = _legend(colors, 0, 14, PAGE_WIDTH)
    loads = min(cost.loads, MAX_LOADS_DRAWN)
    for load in range(loads):
        bx = (load % per_row) * (block_w + 30)
        by = top + (load // per_row) * (block_h + 10)
        body.append(_text(bx, by + 12, f"load {load}", 12, extra=' font-weight="600"'))
        for half in range(chip.halves):
            hx, hy = bx + half * (pw + gap), by + 18
            body.append(
                _rect(hx, hy, pw, ph, "#f7f7f7", "half", extra=' stroke="#999" stroke-width="1"')
            )
            body.append(_text(hx + pw - 2, hy + ph + 12, f"half {half}", 10, "end"))
        for name, tiles in report.tiles.items():
            for t in tiles:
                if t.load != load:
                    continue
                hx = bx + t.half * (pw + gap)
                title = (
                    f"{name} tile {t.index}: rows {t.rows[0]}..{t.rows[1] - 1}, "
                    f"cols {t.cols[0]}..{t.cols[1] - 1}, half {t.half}, "
                    f"neurons {t.col_offset}..{t.col_offset + t.n_cols - 1}"
                )
                body.append(
                    _rect(
                        hx + t.col_offset * sx,
                        by + 18,
                        max(t.n_cols * sx, 2.0),
                        max(t.n_rows * sy, 2.0),
                        colors[name],
                        "tile",
                        title,
                        ' stroke="#333" stroke-width="0.5" fill-opacity="0.85"',
                    )
                )
    n_block_rows = math.ceil(loads / per_row) if loads else 0
    height = top + n_block_rows * (block_h + 10) + 4
    if cost.loads > loads:
        body.append(_text(0, height + 4, f"... and {cost.loads - loads} more loads", 11))
        height += 12
    return _svg("tile-placement", PAGE_WIDTH, height, body, "tile placement per chip load")


def utilization_svg(report: Report) -> str:
    """One bar per layer (and the total): share of the tiles' capacity holding weights."""
    cost = report.cost
    colors = _layer_colors(report)
    label_w, bar_w, row_h = 180.0, 600.0, 22.0
    entries = [(c.name, c.utilization, colors[c.name]) for c in cost.layers]
    entries.append(("all layers", cost.utilization, "#555"))
    body = []
    for pct in (0, 25, 50, 75, 100):
        x = label_w + bar_w * pct / 100
        body.append(
            f'<line x1="{_f(x)}" y1="4" x2="{_f(x)}" y2="{_f(8 + row_h * len(entries))}" '
            'stroke="#ddd"/>'
        )
        body.append(_text(x, 20 + row_h * len(entries), f"{pct} %", 10, "middle"))
    for i, (name, util, color) in enumerate(entries):
        y = 8 + i * row_h
        body.append(_text(label_w - 6, y + 13, name, 11, "end"))
        body.append(
            _rect(
                label_w, y + 2, bar_w * util, row_h - 6, color, "bar", f"{name}: {100 * util:.2f} %"
            )
        )
        body.append(_text(label_w + bar_w * util + 5, y + 13, f"{100 * util:.1f} %", 10))
    height = 28 + row_h * len(entries)
    return _svg("utilization", PAGE_WIDTH, height, body, "utilization per layer")


def adc_svg(report: Report) -> str:
    """Per layer: histogram of the emulator's ADC reads (log counts) over the ADC range, the
    region beyond the linear range shaded."""
    assert report.budget is not None
    chip = report.chip
    pw, ph, pad_l, pad_b, title_h = 440.0, 120.0, 40.0, 22.0, 18.0
    cell_w, cell_h = pw + pad_l + 20, ph + pad_b + title_h + 12
    per_row = max(1, int(PAGE_WIDTH // cell_w))
    n_values = chip.adc_max - chip.adc_min + 1
    bin_w = pw / n_values
    body = []

    def xpos(value: float, x0: float) -> float:
        return x0 + (value - chip.adc_min) * bin_w

    for i, b in enumerate(report.budget):
        x0 = (i % per_row) * cell_w + pad_l
        y0 = (i // per_row) * cell_h + title_h
        a = b.adc
        body.append(
            _text(
                x0,
                y0 - 5,
                f"{b.name}: p1/p50/p99 {a.p1:.0f}/{a.p50:.0f}/{a.p99:.0f}, "
                f"{100 * a.beyond_linear_rate:.2f} % beyond linear",
                11,
            )
        )
        body.append(_rect(x0, y0, pw, ph, "#fff", extra=' stroke="#999"'))
        for lo, hi in ((chip.adc_min, chip.linear_min), (chip.linear_max + 1, chip.adc_max + 1)):
            body.append(_rect(xpos(lo, x0), y0, (hi - lo) * bin_w, ph, "#fbe3e3", "nonlinear"))
        top = math.log10(1 + max(a.histogram, default=0)) or 1.0
        for k, count in enumerate(a.histogram):
            if count == 0:
                continue
            h = ph * math.log10(1 + count) / top
            body.append(
                _rect(
                    x0 + k * bin_w,
                    y0 + ph - h,
                    max(bin_w, 1.0),
                    h,
                    "#4e79a7",
                    "bin",
                    f"read {a.low + k}: {count}",
                )
            )
        for value, dash in ((chip.linear_min, "4 3"), (chip.linear_max + 1, "4 3")):
            x = xpos(value, x0)
            body.append(
                f'<line x1="{_f(x)}" y1="{_f(y0)}" x2="{_f(x)}" y2="{_f(y0 + ph)}" '
                f'stroke="#c0392b" stroke-dasharray="{dash}"/>'
            )
        for value in (chip.adc_min, chip.linear_min, 0, chip.linear_max, chip.adc_max):
            body.append(_text(xpos(value + 0.5, x0), y0 + ph + 13, str(value), 10, "middle"))
        body.append(_text(x0 - 4, y0 + 10, "log n", 9, "end"))
    rows = math.ceil(len(report.budget) / per_row)
    return _svg("adc-reads", PAGE_WIDTH, rows * cell_h + 4, body, "ADC read distributions")


def budget_svg(report: Report) -> str:
    """Per layer: squared relative errors of the three causes stacked (error power as a share
    of the ideal output power), the measured total marked, saturation as a thin bar below."""
    assert report.budget is not None
    label_w, bar_w, row_h = 180.0, 620.0, 34.0
    powers = []
    for b in report.budget:
        e = b.error
        parts = {k: (getattr(e, k) or 0.0) ** 2 for k in BUDGET_COLORS}
        powers.append((b.name, parts, (e.total or 0.0) ** 2, (e.saturation or 0.0) ** 2))
    largest = max([max(sum(p.values()), t) for _, p, t, _ in powers], default=0.0)
    scale_max = _nice(largest * 100)
    px = bar_w / scale_max if scale_max > 0 else 0.0
    legend = {BUDGET_LABELS[k]: c for k, c in BUDGET_COLORS.items()}
    legend["in saturated outputs"] = "url(#hatch)"
    body = [
        '<defs><pattern id="hatch" width="5" height="5" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="5" height="5" fill="#fff"/>'
        '<line x1="0" y1="0" x2="0" y2="5" stroke="#8e44ad" stroke-width="2.5"/></pattern></defs>'
    ]
    leg, top = _legend(legend, label_w, 14, bar_w)
    body += leg
    body.append(_rect(label_w + bar_w - 120, 4, 2, 12, "#000"))
    body.append(_text(label_w + bar_w - 114, 14, "measured total", 11))
    top += 4
    for i, (name, parts, total, sat) in enumerate(powers):
        y = top + i * row_h
        body.append(_text(label_w - 6, y + 14, name, 11, "end"))
        x = label_w
        for key, value in parts.items():
            w = value * 100 * px
            body.append(
                _rect(
                    x,
                    y + 3,
                    w,
                    16,
                    BUDGET_COLORS[key],
                    "budget-part",
                    f"{name} {BUDGET_LABELS[key]}: {100 * math.sqrt(value):.2f} % RMS, "
                    f"{100 * value:.3f} % of the output power",
                )
            )
            x += w
        body.append(
            _rect(
                label_w + total * 100 * px - 1,
                y,
                2,
                22,
                "#000",
                "budget-total",
                f"{name} total: {100 * math.sqrt(total):.2f} % RMS",
            )
        )
        body.append(
            _rect(
                label_w,
                y + 22,
                sat * 100 * px,
                6,
                "url(#hatch)",
                "budget-saturation",
                f"{name} error in saturated outputs: {100 * math.sqrt(sat):.2f} % RMS",
            )
        )
    axis_y = top + len(powers) * row_h + 4
    for k in range(5):
        v = scale_max * k / 4
        x = label_w + v * px
        body.append(
            f'<line x1="{_f(x)}" y1="{_f(top)}" x2="{_f(x)}" y2="{_f(axis_y)}" stroke="#ddd"/>'
        )
        body.append(_text(x, axis_y + 12, f"{v:g} %", 10, "middle"))
    body.append(_text(label_w, axis_y + 28, "error power, % of the ideal output power", 11))
    return _svg("error-budget", PAGE_WIDTH, axis_y + 34, body, "error budget per layer")


def _nice(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten at or above ``x`` (axis maximum)."""
    if x <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        if m * base >= x * (1 - 1e-12):
            return m * base
    return 10 * base


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
        f"weight rewrites {cost.weight_write_us_per_sample:.1f} us per sample: "
        f"{cost.loads} loads per batch of {cost.batch_size}"
        if cost.loads > 1
        else f"weights written once, {cost.weight_write_us_once:.0f} us"
    )
    summary = [
        f"{len(cost.layers)} analog layers, {cost.tiles} tiles on {cost.loads} chip load(s), "
        f"utilization {_pct(cost.utilization, 1)} % of the tiles, "
        f"{cost.runs_per_sample} analog runs per sample.",
        f"Estimated {cost.time_us_per_sample:.1f} us and {cost.energy_uj_per_sample:.2f} uJ per "
        f"sample (analog {cost.analog_time_us_per_sample:.1f} us; {write}); "
        f"active inputs {cost.layers[0].active_inputs_source if cost.layers else 'n/a'}.",
    ]
    if report.accuracy is not None:
        summary.append(
            "Top-1 accuracy: "
            + ", ".join(f"{k} {100 * v:.2f} %" for k, v in report.accuracy.items())
            + "."
        )
    parts += [f'<p class="summary">{escape(s)}</p>' for s in summary]
    parts.append(
        f'<p class="note">Gain {profile.gain_per_send:.4g} LSB per send, wait '
        f"{profile.wait_cycles} cycles, ADC {chip.adc_min}..{chip.adc_max}, linear "
        f"{chip.linear_min}..{chip.linear_max}, {chip.chip_power_w:g} W. "
        "docs/report.md defines every number.</p>"
    )

    parts.append("<h2>Tile placement</h2>")
    parts.append(
        '<p class="note">Each chip load with its halves (columns: neurons, rows: signed input '
        "row pairs); a load's tiles are written at once, loads follow one another.</p>"
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
            _pct(c.utilization, 1),
            f"{c.vectors_per_sample}x{c.parts}x{c.runs_per_vector}",
            str(c.runs_per_sample),
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
                "util %",
                "vec x part x run",
                "runs",
                "sends",
                "time us",
                "energy uJ",
                "input scale",
                "weight scale",
                "signed inputs",
                "row order",
            ],
            rows,
            left={0, 1, 13, 14},
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
        rows = []
        for b in report.budget:
            a, e = b.adc, b.error
            snr = "n/a" if b.snr_db is None else f"{b.snr_db:.1f}"
            rows.append(
                [
                    b.name,
                    f"{a.p1:.0f}/{a.p50:.0f}/{a.p99:.0f}",
                    str(a.max_abs),
                    _pct(a.at_limit_rate),
                    _pct(a.beyond_linear_rate),
                    snr,
                    _pct(e.quantization),
                    _pct(e.fixed_pattern),
                    _pct(e.noise),
                    _pct(e.saturation),
                    _pct(e.total),
                ]
            )
        parts.append(
            _html_table(
                list(MEASURED_COLUMNS),
                rows,
                left={0},
            )
        )
        parts.append(
            '<p class="note">Relative RMS errors of each layer output against ideal: '
            "quantization = quantized vs ideal, fixed pattern = noise-free emulator vs "
            "quantized, noise = emulator vs noise-free emulator, sat = the part of the total "
            "error in outputs with a read beyond the linear range.</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
