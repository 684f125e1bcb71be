"""Matplotlib figures as inline SVG, for the self-contained HTML reports.

Contract. :func:`new_figure` makes a figure on matplotlib's Agg canvas without pyplot: no
global figure registry, no GUI backend and no process-wide backend switch (a report built
inside a notebook leaves its plots alone), and nothing stays open once the figure is
dropped. :func:`svg_markup` renders a figure as SVG text to inline into an HTML page: no XML
prologue, text kept as text (searchable, and no glyph outlines), no date and no random ids
(the same report gives the same page), and the root ``<svg>`` carries the plot's ``id``,
``class="plot"``, ``role="img"`` and an ``aria-label``. Artists given a ``gid`` become
``<g id="...">`` groups; ``tooltips`` (gid -> text) adds a ``<title>`` to each, which a
browser shows on hover. Matplotlib is imported on use: building a report needs it, loading
the package does not.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from html import escape
from typing import Any

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


def new_figure(width_in: float, height_in: float) -> Any:
    """A matplotlib ``Figure`` of ``width_in`` x ``height_in`` inches with constrained layout,
    drawn on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def svg_markup(
    fig: Any, plot_id: str, label: str, tooltips: Mapping[str, str] | None = None
) -> str:
    """``fig`` as an inline ``<svg>`` element (see the module docstring)."""
    import matplotlib

    buf = io.StringIO()
    # The salt makes the clip-path ids of different plots on one page differ, and repeatable.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": plot_id}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    svg = text[text.index("<svg") :].strip()
    root = f'<svg id="{escape(plot_id)}" class="plot" role="img" aria-label="{escape(label)}" '
    svg = svg.replace("<svg ", root, 1)
    for gid, tip in (tooltips or {}).items():
        group = f'<g id="{escape(gid)}">'
        assert group in svg, f"no artist with gid {gid} in plot {plot_id}"
        svg = svg.replace(group, f"{group}<title>{escape(tip)}</title>", 1)
    return svg
