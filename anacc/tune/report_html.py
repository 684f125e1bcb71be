"""The report of an ``anacc tune`` search as one self-contained HTML page.

Contract. :func:`render_html` gives ``report.html``: the text report's header, accuracy
against estimated energy per inference for every finished trial (and, zoomed, for those at
least as accurate as the weakest baseline), the recommended configuration and its command,
the baselines, the knob importances as bars, and the tables of the best trials, the Pareto
front and the search space. Plots are drawn with matplotlib and inlined as SVG
(:mod:`anacc.runtime.svg_plot`): no script and no external asset. Every trial's dot is a
group ``trial-N`` (N counted from 1, as the text report does) whose hover title gives its
knobs.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from anacc.runtime.svg_plot import PALETTE, new_figure, svg_markup
from anacc.tune.records import TrialRecord
from anacc.tune.report import TOP_TRIALS, TuneReport, top_trials
from anacc.tune.report_text import acc, knobs, render_text, trial_rows

TRIAL_COLOR = PALETTE[0]
FRONT_COLOR = "#e07b00"
BEST_COLOR = "#c0262d"
BASELINE_COLOR = "#222222"
LOG_SPAN = 10  # energies spanning more than this factor get a log axis
WIDTH_IN = 7.2

STYLE = (
    "body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
    "pre{background:#f4f4f4;padding:8px;white-space:pre-wrap}"
    "svg.plot{display:block;max-width:100%;height:auto}"
)


def scatter_svg(r: TuneReport, pts: Sequence[TrialRecord], plot_id: str) -> str:
    """Accuracy against energy of ``pts``; the front, baselines and best where among them."""
    shown = {t.number for t in pts}
    on_front = {t.number for t in r.pareto}
    es = [t.energy_uj for t in pts]
    fig = new_figure(WIDTH_IN, 4.2)
    ax = fig.add_subplot()
    log_x = min(es) > 0 and max(es) / min(es) > LOG_SPAN
    if log_x:
        ax.set_xscale("log")
    front = [t for t in r.pareto if t.number in shown]
    ax.plot(
        [t.energy_uj for t in front],
        [100 * t.accuracy for t in front],
        color=FRONT_COLOR,
        linewidth=1.5,
        label="Pareto front",
    )
    tooltips = {}
    for t in pts:
        color = FRONT_COLOR if t.number in on_front else TRIAL_COLOR
        gid = f"trial-{t.number + 1}"
        ax.plot(t.energy_uj, 100 * t.accuracy, "o", color=color, alpha=0.8, markersize=5, gid=gid)
        tooltips[gid] = f"trial {t.number + 1}: {acc(t)}, {t.energy_uj:.1f} uJ; {knobs(t.config)}"
    for name, b in r.baselines.items():
        if b.number in shown:
            ax.plot(
                b.energy_uj,
                100 * b.accuracy,
                "s",
                markersize=10,
                markerfacecolor="none",
                markeredgecolor=BASELINE_COLOR,
            )
            ax.annotate(
                name,
                (b.energy_uj, 100 * b.accuracy),
                xytext=(8, -3),
                textcoords="offset points",
                fontsize=8,
            )
    if r.best.number in shown:
        x, y = r.best.energy_uj, 100 * r.best.accuracy
        ax.plot(x, y, "o", markersize=13, markerfacecolor="none", markeredgecolor=BEST_COLOR)
        ax.annotate(
            "tuned",
            (x, y),
            xytext=(9, 6),
            textcoords="offset points",
            fontsize=8,
            color=BEST_COLOR,
        )
    accs = [100 * t.accuracy for t in pts]
    pad = max(0.5, 0.05 * (max(accs) - min(accs)))
    ax.set_ylim(max(0.0, min(accs) - pad), min(100.0, max(accs) + pad))
    scale = "log scale" if log_x else "linear"
    ax.set_xlabel(f"estimated energy per inference, uJ ({scale})")
    ax.set_ylabel("validation accuracy, %")
    ax.grid(color="#eeeeee")
    ax.set_axisbelow(True)
    return svg_markup(fig, plot_id, "accuracy against energy", tooltips)


def importance_svg(values: dict[str, float], target: str) -> str:
    """One bar per searched dimension: its importance for ``target`` (they sum to 1)."""
    fig = new_figure(WIDTH_IN, 0.8 + 0.28 * len(values))
    ax = fig.add_subplot()
    bars = ax.barh(list(values), list(values.values()), color=TRIAL_COLOR, height=0.7)
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values.values()], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1 * max(values.values(), default=1.0) or 1.0)
    ax.set_xlabel(f"importance for {target}")
    return svg_markup(fig, f"importance-{target}", f"knob importance for {target}")


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(r: TuneReport) -> str:
    """The whole page as a string."""
    text = render_text(r).splitlines()
    b = r.best
    sections = [
        f"<h1>{html.escape(text[0])}</h1>",
        f"<p>{html.escape(text[1])}</p>",
        "<h2>Accuracy against estimated energy per inference</h2>",
        "<p>Each dot is a finished trial (hover for its knobs); orange: the Pareto front; "
        "squares: the chip's profiles at default options; red ring: the recommended "
        "trial.</p>",
        scatter_svg(r, r.finished, "accuracy-energy"),
    ]
    floor = min((base.accuracy for base in r.baselines.values()), default=None)
    zoom = [t for t in r.finished if floor is not None and t.accuracy >= floor]
    if len(r.finished) > len(zoom) > 1:
        sections += [
            "<h3>Trials at least as accurate as the weakest baseline</h3>",
            scatter_svg(r, zoom, "accuracy-energy-zoom"),
        ]
    sections += [
        "<h2>Recommended configuration</h2>",
        f"<p>Trial {b.number + 1}: accuracy {html.escape(acc(b))}; "
        f"{html.escape(knobs(b.config))}; {b.energy_uj:.1f} uJ and {b.time_us:.0f} us "
        "per inference.</p>",
        f"<pre>{html.escape(r.command)}</pre>",
    ]
    if r.baselines:
        sections.append(
            _html_table(
                [["profile", "accuracy", "uJ/inference", "us/inference", "recommended vs it"]]
                + [
                    [
                        name,
                        acc(base),
                        f"{base.energy_uj:.1f}",
                        f"{base.time_us:.0f}",
                        f"{100 * (b.accuracy - base.accuracy):+.2f} points",
                    ]
                    for name, base in r.baselines.items()
                ]
            )
        )
    sections.append(f"<h2>Knob importance</h2><p>{html.escape(r.importance_note)}</p>")
    for target, values in r.importances.items():
        sections.append(f"<h3>{html.escape(target)}</h3>{importance_svg(values, target)}")
    sections += [
        f"<h2>Best {TOP_TRIALS} trials</h2>",
        _html_table(trial_rows(top_trials(r))),
        "<h2>Pareto front</h2>",
        _html_table(trial_rows(r.pareto)),
        "<h2>Search space</h2>",
        _html_table(
            [["dimension", "range"]]
            + [
                [d.name, f"{d.fixed_value} (fixed)" if d.fixed else d.describe()]
                for d in r.settings.space.dimensions
            ]
        ),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>anacc tune: {html.escape(r.settings.model.name)}</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
