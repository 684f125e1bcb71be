"""What a search leaves in its folder: the best chip, options and program, and the reports.

Contract. :func:`finish` takes the finished trials of a search, picks the recommended one
(:func:`~anacc.tune.pareto.best_record`) and writes ``best_chip.toml`` (the chip with the
profile ``tuned``), ``best_options.json`` (the compile options and the ``anacc compile``
command line that reproduces ``best.anacc``, :func:`compile_command`), ``best.anacc`` and
``report.txt``/``.json``/``.html`` (:func:`write_reports`); it returns a
:class:`SearchOutcome`. A search without a single successful trial is an
:class:`~anacc.errors.AnaccError` naming the first trial's error. Every file is written
atomically, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anacc.compiler.files import atomic_write
from anacc.compiler.program_io import save_program
from anacc.errors import AnaccError
from anacc.tune.config import TUNED_PROFILE, compile_options, tuned_chip
from anacc.tune.pareto import best_record, pareto_front
from anacc.tune.records import TrialRecord
from anacc.tune.report import TuneReport, build_report
from anacc.tune.report_html import render_html
from anacc.tune.report_text import render_text, to_json
from anacc.tune.settings import TuneSettings


@dataclass(frozen=True)
class SearchOutcome:
    """What a call of :func:`~anacc.tune.search.run_search` leaves: all finished trials and
    the written files."""

    settings: TuneSettings
    records: tuple[TrialRecord, ...]
    new_trials: int
    best: TrialRecord
    pareto: tuple[TrialRecord, ...]
    command: str
    files: tuple[Path, ...]

    @property
    def finished(self) -> int:
        return len(self.records)

    @property
    def complete(self) -> bool:
        return self.finished >= self.settings.trials


def compile_command(settings: TuneSettings, out_dir: Path, config: Mapping[str, Any]) -> list[str]:
    """The ``anacc compile`` command line that reproduces ``best.anacc`` (absolute paths)."""
    out_dir = out_dir.resolve()
    opts = compile_options(config)
    cmd = ["anacc", "compile", str(settings.model)]
    if settings.calib is not None:
        cmd += ["--calib", str(settings.calib)]
    cmd += ["--chip", str(out_dir / "best_chip.toml"), "--profile", TUNED_PROFILE]
    cmd += ["--scale", opts.scale, "--weight-scale", opts.weight_scale, "--signed", opts.signed]
    cmd += ["--row-order", opts.row_order, "--gain-factor", repr(opts.gain_factor)]
    return [*cmd, "-o", str(out_dir / "best.anacc")]


def finish(
    settings: TuneSettings, out_dir: str | Path, records: Sequence[TrialRecord], new_trials: int
) -> SearchOutcome:
    """Write the best chip, options, program and reports for the finished ``records``."""
    from anacc.compiler.chip_writer import write_chip
    from anacc.compiler.pipeline import compile_model

    out_dir = Path(out_dir)
    best = best_record(records, settings.objective)
    if best is None:
        first = next((r.error for r in records if r.error), "no trial finished")
        raise AnaccError(f"no trial of the search in {out_dir} succeeded; first error: {first}")
    chip = tuned_chip(settings.chip, best.config)
    chip_path = write_chip(
        chip,
        out_dir / "best_chip.toml",
        header=(
            f"Chip '{chip.name}' with the profile '{TUNED_PROFILE}' found by anacc tune\n"
            f"for {settings.model.name} (trial {best.number + 1}; see report.txt)."
        ),
    )
    command = compile_command(settings, out_dir, best.config)
    options = compile_options(best.config)
    options_blob = {
        "chip": str(chip_path.resolve()),
        "profile": TUNED_PROFILE,
        "options": options.to_dict(),
        "command": shlex.join(command),
    }
    options_path = out_dir / "best_options.json"
    atomic_write(options_path, (json.dumps(options_blob, indent=1) + "\n").encode())
    program = compile_model(
        settings.model, chip=chip, profile=TUNED_PROFILE, calib=settings.calib, options=options
    )
    program_path = save_program(program, out_dir / "best.anacc")
    pareto = tuple(pareto_front(records))
    report = build_report(settings, tuple(records), best, pareto, shlex.join(command))
    files = (chip_path, options_path, program_path, *write_reports(report, out_dir))
    return SearchOutcome(
        settings=settings,
        records=tuple(records),
        new_trials=new_trials,
        best=best,
        pareto=pareto,
        command=shlex.join(command),
        files=files,
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
