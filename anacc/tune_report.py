"""The report of an ``anacc tune`` search: a text summary, JSON and a self-contained HTML page.

The report shows the search space, the baselines (the chip's named profiles at the default
compile options, evaluated as the first trials), the recommended trial and its margin over
each baseline, the best trials, the Pareto front of accuracy against estimated energy per
inference, and knob importances. Importances come from ``optuna.importance`` with the
PED-ANOVA evaluator (no fANOVA, no scikit-learn) on an Optuna study rebuilt from the finished
trials: the importance of each searched dimension for reaching the best
:data:`IMPORTANCE_QUANTILE` of trials, for accuracy (higher is better) and for energy (lower is
better), normalized to sum 1. With fewer than :data:`MIN_IMPORTANCE_TRIALS` finished trials
no importances are given. The HTML page has its plots as inline SVG and no external assets.
"""

from __future__ import annotations

import html
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anacc.compiler.program import atomic_write
from anacc.tune import (
    SearchSpace,
    TrialRecord,
    TuneSettings,
    scale_option,
    study_from_records,
)

IMPORTANCE_QUANTILE = 0.2
MIN_IMPORTANCE_TRIALS = 10
IMPORTANCE_METHOD = (
    f"PED-ANOVA (optuna.importance.PedAnovaImportanceEvaluator) for reaching the best "
    f"{100 * IMPORTANCE_QUANTILE:g} % of the finished trials"
)
TOP_TRIALS = 10


@dataclass(frozen=True)
class TuneReport:
    """Everything the three renderings show; numbers are fractions, uJ and us."""

    settings: TuneSettings
    records: tuple[TrialRecord, ...]
    best: TrialRecord
    baselines: dict[str, TrialRecord]
    pareto: tuple[TrialRecord, ...]
    importances: dict[str, dict[str, float]]
    importance_note: str
    command: str

    @property
    def finished(self) -> tuple[TrialRecord, ...]:
        return tuple(r for r in self.records if r.ok)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.records)


def param_importances(
    space: SearchSpace, records: Sequence[TrialRecord]
) -> tuple[dict[str, dict[str, float]], str]:
    """Importance per searched dimension, for accuracy and for energy, and a note on how."""
    ok = [r for r in records if r.ok]
    if len(ok) < MIN_IMPORTANCE_TRIALS:
        return {}, (
            f"too few finished trials for importances ({len(ok)} < {MIN_IMPORTANCE_TRIALS})"
        )
    import optuna

    study = study_from_records(space, ok, "accuracy-energy")
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=IMPORTANCE_QUANTILE)
    targets = {
        "accuracy": lambda t: -t.values[0],
        "energy": lambda t: t.values[1],
    }
    out = {}
    with warnings.catch_warnings():
        # PED-ANOVA warns that it treats lower targets as better (as meant here) and that
        # it is experimental.
        warnings.simplefilter("ignore")
        for name, target in targets.items():
            values = optuna.importance.get_param_importances(
                study, evaluator=evaluator, target=target
            )
            out[name] = {k: float(v) for k, v in values.items()}
    return out, IMPORTANCE_METHOD


def build_report(
    settings: TuneSettings,
    records: tuple[TrialRecord, ...],
    best: TrialRecord,
    pareto: tuple[TrialRecord, ...],
    command: str,
) -> TuneReport:
    baselines: dict[str, TrialRecord] = {}
    for r in records:
        if r.ok and r.baseline and r.baseline not in baselines:
            baselines[r.baseline] = r
    importances, note = param_importances(settings.space, records)
    return TuneReport(settings, records, best, baselines, pareto, importances, note, command)


# -- text -----------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _acc(r: TrialRecord) -> str:
    return f"{_pct(r.accuracy)} +- {_pct(r.accuracy_std)} %"


def _knobs(c: dict[str, Any]) -> str:
    return (
        f"OTA {c['ota_bias']}, tau {c['tau_syn_us']:.3g} us, wait {c['wait_cycles']}, "
        f"gain x{c['gain_factor']:.3g}, {scale_option(c)}, {c['weight_scale']}, "
        f"{c['signed']}, {c['row_order']}"
    )


def _header(r: TuneReport) -> list[str]:
    s = r.settings
    mode = (
        f"accuracy after {s.finetune_epochs} fine-tuning epoch(s) per chip instance"
        if s.finetune_epochs
        else "plain-transfer accuracy (no fine-tuning in the trials)"
    )
    samples = "all samples" if s.val_samples is None else f"first {s.val_samples} samples"
    return [
        f"anacc tune: {s.model.name} on chip '{s.chip.name}', objective {s.objective}",
        f"{len(r.records)} of {s.trials} trials finished ({r.failed} failed); "
        f"validation {s.val.name} ({samples}), emulated chip instances "
        f"{', '.join(map(str, s.emulator_seeds))}; {mode}",
    ]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _trial_rows(records: Sequence[TrialRecord]) -> list[list[str]]:
    rows = [["trial", "accuracy %", "std", "plain %", "uJ/inf", "us/inf", "knobs and options"]]
    for t in records:
        rows.append(
            [
                str(t.number + 1) + (f" ({t.baseline})" if t.baseline else ""),
                _pct(t.accuracy),
                _pct(t.accuracy_std),
                _pct(t.plain_accuracy),
                f"{t.energy_uj:.1f}",
                f"{t.time_us:.0f}",
                _knobs(t.config),
            ]
        )
    return rows


def top_trials(r: TuneReport) -> list[TrialRecord]:
    return sorted(r.finished, key=lambda t: (-t.accuracy, t.energy_uj, t.number))[:TOP_TRIALS]


def render_text(r: TuneReport) -> str:
    out = _header(r)
    out += ["", "Search space"]
    out += _table(
        [
            [d.name, f"{d.fixed_value} (fixed)" if d.fixed else d.describe()]
            for d in r.settings.space.dimensions
        ]
    )
    out += ["", "Baselines: the chip's profiles at the default compile options"]
    if r.baselines:
        out += _table(
            [["profile", "accuracy", "uJ/inference", "us/inference"]]
            + [
                [name, _acc(b), f"{b.energy_uj:.1f}", f"{b.time_us:.0f}"]
                for name, b in r.baselines.items()
            ]
        )
    else:
        out.append("  none (no named profile lies inside the search space)")
    b = r.best
    out += ["", f"Recommended: trial {b.number + 1}, accuracy {_acc(b)}"]
    for name, base in r.baselines.items():
        gain = 100 * (b.accuracy - base.accuracy)
        out.append(f"  {gain:+.2f} points over '{name}' ({_pct(base.accuracy)} %)")
    out.append(f"  profile 'tuned': {_knobs(b.config)}")
    out.append(
        f"  gain per send {b.gain_per_send:.4g}; num_sends "
        + ", ".join(f"{k} {v}" for k, v in b.num_sends.items())
    )
    out.append(f"  {b.energy_uj:.1f} uJ and {b.time_us:.0f} us per inference (estimated)")
    out += ["", f"Best {TOP_TRIALS} trials by accuracy"]
    out += _table(_trial_rows(top_trials(r)))
    out += ["", "Pareto front: accuracy vs estimated energy per inference"]
    out += _table(_trial_rows(r.pareto))
    out += ["", f"Knob importance: {r.importance_note}"]
    for target, values in r.importances.items():
        out.append(f"  {target}: " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()))
    out += ["", "Compile the recommended configuration:", f"  {r.command}"]
    return "\n".join(out) + "\n"


# -- JSON -----------------------------------------------------------------------------------


def to_json(r: TuneReport) -> dict[str, Any]:
    s = r.settings
    return {
        "model": str(s.model),
        "chip": s.chip.name,
        "objective": s.objective,
        "trials": s.trials,
        "finished": len(r.records),
        "failed": r.failed,
        "seeds": list(s.emulator_seeds),
        "val": str(s.val),
        "val_samples": s.val_samples,
        "finetune_epochs": s.finetune_epochs,
        "space": s.space.to_dict(),
        "baselines": {name: b.number for name, b in r.baselines.items()},
        "best": r.best.number,
        "pareto": [t.number for t in r.pareto],
        "importances": r.importances,
        "importance_method": r.importance_note,
        "command": r.command,
        "records": [t.to_dict() for t in r.records],
    }


# -- HTML -----------------------------------------------------------------------------------

_W, _H, _M = 640, 380, 56


def _scatter(r: TuneReport, pts: Sequence[TrialRecord]) -> str:
    """Accuracy against energy of ``pts``; the front, baselines and best where among them."""
    shown = {t.number for t in pts}
    es = [t.energy_uj for t in pts]
    accs = [100 * t.accuracy for t in pts]
    log_x = min(es) > 0 and max(es) / min(es) > 10

    def fx(e: float) -> float:
        lo, hi = min(es), max(es)
        if log_x:
            e, lo, hi = math.log10(e), math.log10(lo), math.log10(hi)
        return _M + (e - lo) / ((hi - lo) or 1) * (_W - 2 * _M)

    a_lo, a_hi = min(accs), max(accs)
    pad = max(0.5, 0.05 * (a_hi - a_lo))
    a_lo, a_hi = max(0.0, a_lo - pad), min(100.0, a_hi + pad)

    def fy(a: float) -> float:
        return _H - _M - (a - a_lo) / (a_hi - a_lo) * (_H - 2 * _M)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" role="img" aria-label="accuracy against energy">',
        f'<rect x="{_M}" y="{_M}" width="{_W - 2 * _M}" height="{_H - 2 * _M}" '
        'fill="#fafafa" stroke="#999"/>',
    ]
    for i in range(5):
        a = a_lo + i * (a_hi - a_lo) / 4
        e_lo, e_hi = min(es), max(es)
        e = (
            10 ** (math.log10(e_lo) + i * (math.log10(e_hi) - math.log10(e_lo)) / 4)
            if log_x
            else e_lo + i * (e_hi - e_lo) / 4
        )
        parts.append(
            f'<text x="{_M - 6}" y="{fy(a) + 4:.1f}" text-anchor="end" font-size="11">'
            f"{a:.1f}</text>"
        )
        parts.append(
            f'<text x="{fx(e):.1f}" y="{_H - _M + 16}" text-anchor="middle" font-size="11">'
            f"{e:.3g}</text>"
        )
    scale = "log scale" if log_x else "linear"
    parts.append(
        f'<text x="{_W / 2}" y="{_H - 12}" text-anchor="middle" font-size="12">'
        f"estimated energy per inference, uJ ({scale})</text>"
    )
    parts.append(
        f'<text x="16" y="{_H / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 16 {_H / 2})">validation accuracy, %</text>'
    )
    front = " ".join(
        f"{fx(t.energy_uj):.1f},{fy(100 * t.accuracy):.1f}" for t in r.pareto if t.number in shown
    )
    parts.append(f'<polyline points="{front}" fill="none" stroke="#e07b00" stroke-width="1.5"/>')
    on_front = {t.number for t in r.pareto}
    for t in pts:
        color = "#e07b00" if t.number in on_front else "#4a78b5"
        tip = html.escape(
            f"trial {t.number + 1}: {_acc(t)}, {t.energy_uj:.1f} uJ; {_knobs(t.config)}"
        )
        parts.append(
            f'<circle cx="{fx(t.energy_uj):.1f}" cy="{fy(100 * t.accuracy):.1f}" r="4" '
            f'fill="{color}" fill-opacity="0.8"><title>{tip}</title></circle>'
        )
    for name, b in r.baselines.items():
        if b.number not in shown:
            continue
        x, y = fx(b.energy_uj), fy(100 * b.accuracy)
        parts.append(
            f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="none" '
            f'stroke="#222"/><text x="{x + 8:.1f}" y="{y + 4:.1f}" font-size="11">'
            f"{html.escape(name)}</text>"
        )
    if r.best.number in shown:
        x, y = fx(r.best.energy_uj), fy(100 * r.best.accuracy)
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="8" fill="none" stroke="#c0262d" '
            f'stroke-width="2"/><text x="{x + 10:.1f}" y="{y - 8:.1f}" font-size="11" '
            'fill="#c0262d">tuned</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _bars(values: dict[str, float]) -> str:
    row, label_w, bar_w = 22, 150, 360
    height = row * len(values) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 60}" '
        f'height="{height}" role="img" aria-label="importances">'
    ]
    for i, (name, v) in enumerate(values.items()):
        y = 5 + i * row
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" font-size="12">'
            f"{html.escape(name)}</text>"
            f'<rect x="{label_w}" y="{y + 3}" width="{bar_w * v:.1f}" height="14" '
            f'fill="#4a78b5"/><text x="{label_w + bar_w * v + 6:.1f}" y="{y + 14}" '
            f'font-size="11">{v:.2f}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(r: TuneReport) -> str:
    text = render_text(r).splitlines()
    b = r.best
    sections = [
        f"<h1>{html.escape(text[0])}</h1>",
        f"<p>{html.escape(text[1])}</p>",
        "<h2>Accuracy against estimated energy per inference</h2>",
        "<p>Each dot is a finished trial (hover for its knobs); orange: the Pareto front; "
        "squares: the chip's profiles at default options; red ring: the recommended "
        "trial.</p>",
        _scatter(r, r.finished),
    ]
    floor = min((base.accuracy for base in r.baselines.values()), default=None)
    zoom = [t for t in r.finished if floor is not None and t.accuracy >= floor]
    if len(r.finished) > len(zoom) > 1:
        sections += [
            "<h3>Trials at least as accurate as the weakest baseline</h3>",
            _scatter(r, zoom),
        ]
    sections += [
        "<h2>Recommended configuration</h2>",
        f"<p>Trial {b.number + 1}: accuracy {html.escape(_acc(b))}; "
        f"{html.escape(_knobs(b.config))}; {b.energy_uj:.1f} uJ and {b.time_us:.0f} us "
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
                        _acc(base),
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
        sections.append(f"<h3>{html.escape(target)}</h3>{_bars(values)}")
    sections += [
        f"<h2>Best {TOP_TRIALS} trials</h2>",
        _html_table(_trial_rows(top_trials(r))),
        "<h2>Pareto front</h2>",
        _html_table(_trial_rows(r.pareto)),
        "<h2>Search space</h2>",
        _html_table(
            [["dimension", "range"]]
            + [
                [d.name, f"{d.fixed_value} (fixed)" if d.fixed else d.describe()]
                for d in r.settings.space.dimensions
            ]
        ),
    ]
    style = (
        "body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "pre{background:#f4f4f4;padding:8px;white-space:pre-wrap}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>anacc tune: {html.escape(r.settings.model.name)}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def write_reports(r: TuneReport, out_dir: str | Path) -> list[Path]:
    """Write ``report.txt``, ``report.json`` and ``report.html`` into ``out_dir``."""
    out_dir = Path(out_dir)
    files = {
        "report.txt": render_text(r),
        "report.json": json.dumps(to_json(r), indent=1) + "\n",
        "report.html": render_html(r),
    }
    paths = []
    for name, text in files.items():
        atomic_write(out_dir / name, text.encode("utf-8"))
        paths.append(out_dir / name)
    return paths
