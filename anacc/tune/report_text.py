"""The report of an ``anacc tune`` search as text and as JSON, and the cells both share with
the HTML page.

Contract. :func:`render_text` gives ``report.txt``: two header lines (the HTML page's title
and summary), then the search space, the baselines, the recommendation with its margin over
each baseline, the best trials, the Pareto front, the importances and the compile command.
:func:`to_json` gives ``report.json``: the same facts as data, with every trial record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anacc.tune.config import scale_option
from anacc.tune.records import TrialRecord
from anacc.tune.report import TOP_TRIALS, TuneReport, top_trials


def pct(x: float | None) -> str:
    """A fraction as percent with two decimals."""
    return "n/a" if x is None else f"{100 * x:.2f}"


def acc(r: TrialRecord) -> str:
    """A trial's mean accuracy and its spread over chip instances."""
    return f"{pct(r.accuracy)} +- {pct(r.accuracy_std)} %"


def knobs(c: dict[str, Any]) -> str:
    """The knobs and options of a configuration on one line."""
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


def trial_rows(records: Sequence[TrialRecord]) -> list[list[str]]:
    """A header row and one row per trial, for the text and HTML tables."""
    rows = [["trial", "accuracy %", "std", "plain %", "uJ/inf", "us/inf", "knobs and options"]]
    for t in records:
        rows.append(
            [
                str(t.number + 1) + (f" ({t.baseline})" if t.baseline else ""),
                pct(t.accuracy),
                pct(t.accuracy_std),
                pct(t.plain_accuracy),
                f"{t.energy_uj:.1f}",
                f"{t.time_us:.0f}",
                knobs(t.config),
            ]
        )
    return rows


def render_text(r: TuneReport) -> str:
    """The report as plain text: a header of two lines, then one section per topic."""
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
                [name, acc(b), f"{b.energy_uj:.1f}", f"{b.time_us:.0f}"]
                for name, b in r.baselines.items()
            ]
        )
    else:
        out.append("  none (no named profile lies inside the search space)")
    b = r.best
    out += ["", f"Recommended: trial {b.number + 1}, accuracy {acc(b)}"]
    for name, base in r.baselines.items():
        gain = 100 * (b.accuracy - base.accuracy)
        out.append(f"  {gain:+.2f} points over '{name}' ({pct(base.accuracy)} %)")
    out.append(f"  profile 'tuned': {knobs(b.config)}")
    out.append(
        f"  gain per send {b.gain_per_send:.4g}; num_sends "
        + ", ".join(f"{k} {v}" for k, v in b.num_sends.items())
    )
    out.append(f"  {b.energy_uj:.1f} uJ and {b.time_us:.0f} us per inference (estimated)")
    out += ["", f"Best {TOP_TRIALS} trials by accuracy"]
    out += _table(trial_rows(top_trials(r)))
    out += ["", "Pareto front: accuracy vs estimated energy per inference"]
    out += _table(trial_rows(r.pareto))
    out += ["", f"Knob importance: {r.importance_note}"]
    for target, values in r.importances.items():
        out.append(f"  {target}: " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()))
    out += ["", "Compile the recommended configuration:", f"  {r.command}"]
    return "\n".join(out) + "\n"


def to_json(r: TuneReport) -> dict[str, Any]:
    """The report as JSON-ready data, every trial record included."""
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
