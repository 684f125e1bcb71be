"""``anacc tune MODEL``: search a calibration profile and compile options (see anacc.tune)."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from anacc.cli_errors import user_errors
from anacc.errors import OptionError

if TYPE_CHECKING:
    from anacc.tune.outputs import SearchOutcome
    from anacc.tune.settings import TuneSettings

_FILE = click.Path(dir_okay=False, path_type=Path)
DEFAULT_TRIALS = 30


@click.command("tune")
@click.argument("model", required=False, type=_FILE)
@click.option("--calib", type=_FILE, help="Calibration data (.npz) for the static scales.")
@click.option(
    "--val",
    type=_FILE,
    help="Validation data (.npz with 'labels') the trials are scored on; never the test set.",
)
@click.option("--train", type=_FILE, help="Training data for fine-tuning inside the trials.")
@click.option(
    "--finetune-epochs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Fine-tune each trial for N epochs per chip instance (0: plain transfer).",
)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=None,
    help=f"Total number of trials [default: {DEFAULT_TRIALS}; with --resume: as stored].",
)
@click.option(
    "--objective",
    type=click.Choice(["accuracy", "accuracy-energy"]),
    default="accuracy",
    show_default=True,
    help="Maximize accuracy, or accuracy and (minimize) energy per inference together.",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Emulated chip instances 0..K-1 each trial is evaluated on (mean and spread).",
)
@click.option(
    "--val-samples",
    type=click.IntRange(min=1),
    default=None,
    help="Score the trials on the first N validation samples only [default: all].",
)
@click.option(
    "--chip",
    default="bss2",
    show_default=True,
    help="Chip name or chip TOML file; its ranges span the knobs' search space.",
)
@click.option(
    "--space",
    "space_file",
    type=_FILE,
    help='JSON object narrowing or pinning dimensions, e.g. {"wait_cycles": [2, 20]}.',
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampler.")
@click.option(
    "--address",
    help="Join the Ray cluster at HOST:PORT (or 'auto') instead of starting a local instance.",
)
@click.option(
    "--cpus",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="CPUs of the local Ray instance (trials run one per CPU).",
)
@click.option(
    "--max-new-trials",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after N new trials; the search stays resumable with --resume.",
)
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    help="Continue the search in this folder without repeating finished trials.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the search: checkpoints, best chip, options, program and reports.",
)
@user_errors
def tune_cmd(
    model,
    calib,
    val,
    train,
    finetune_epochs,
    trials,
    objective,
    seeds,
    val_samples,
    chip,
    space_file,
    seed,
    address,
    cpus,
    max_new_trials,
    resume,
    output,
):
    """Search a calibration profile and compile options for MODEL on the emulated chip.

    Each trial builds a profile from the chip's knobs (OTA bias, synaptic time constant, wait
    between events), compiles MODEL with a gain factor, scale method, row order and
    signed-input strategy, and scores it on --val over several emulated chip instances; the
    search runs on Ray Tune with Optuna. Writes best_chip.toml (profile 'tuned'),
    best_options.json, best.anacc and report.txt/.json/.html into the output folder.
    """
    from anacc.tune.engine import require_engine
    from anacc.tune.records import read_records
    from anacc.tune.search import run_search
    from anacc.tune.settings import SETTINGS_FILE, load_settings, settings_difference

    require_engine()
    search = {
        "model": model,
        "calib": calib,
        "val": val,
        "train": train,
        "finetune_epochs": finetune_epochs,
        "objective": objective,
        "seeds": seeds,
        "val_samples": val_samples,
        "chip": chip,
        "space_file": space_file,
        "seed": seed,
    }
    if resume is not None:
        out_dir = resume
        if output is not None and output.resolve() != resume.resolve():
            raise OptionError(f"-o {output}: a resumed search writes into {resume}; drop -o")
        stored = load_settings(resume)
        if model is not None:
            diff = settings_difference(stored, _settings(**search, trials=stored.trials))
            if diff is not None:
                raise OptionError(
                    f"--resume {resume}: the command's '{diff}' differs from the stored "
                    "search; give --resume DIR alone to continue it unchanged"
                )
        settings = stored if trials is None else dataclasses.replace(stored, trials=trials)
    else:
        if model is None or val is None or output is None:
            raise OptionError("give MODEL, --val and -o OUT_DIR (or --resume DIR)")
        out_dir = output
        if (output / SETTINGS_FILE).is_file():
            raise OptionError(
                f"{output}: holds a search already; continue it with --resume {output}"
            )
        settings = _settings(**search, trials=trials or DEFAULT_TRIALS)
    try:
        outcome = run_search(
            settings,
            out_dir,
            address=address,
            cpus=cpus,
            max_new_trials=max_new_trials,
            log=lambda line: click.echo(line, err=True),
        )
    except KeyboardInterrupt:
        done = len(read_records(out_dir))
        click.echo(
            f"error: interrupted; {done} finished trial(s) are kept in {out_dir}; continue "
            f"with: anacc tune --resume {shlex.quote(str(out_dir))}",
            err=True,
        )
        sys.exit(130)
    _summary(outcome, out_dir)
    if not outcome.complete and max_new_trials is None:
        click.echo("error: the search was interrupted before all trials finished", err=True)
        sys.exit(130)


def _settings(
    *,
    model: Path | None,
    calib: Path | None,
    val: Path | None,
    train: Path | None,
    finetune_epochs: int,
    trials: int,
    objective: str,
    seeds: int,
    val_samples: int | None,
    chip: str,
    space_file: Path | None,
    seed: int,
) -> TuneSettings:
    """The settings of the search the command line describes, with absolute paths."""
    from anacc.compiler.chip import load_chip
    from anacc.tune.settings import TuneSettings
    from anacc.tune.space import load_space_file, search_space

    if model is None or val is None:
        raise OptionError("give MODEL and --val")
    spec = load_chip(chip)
    overrides = load_space_file(space_file) if space_file is not None else None
    source = str(space_file) if space_file is not None else f"chip '{spec.name}'"
    for p in (model, calib, val, train):
        if p is not None and not p.is_file():
            raise OptionError(f"{p}: no such file")

    def absolute(p: Path | None) -> Path | None:
        return None if p is None else p.resolve()

    return TuneSettings(
        model=absolute(model),
        val=absolute(val),
        chip=spec,
        space=search_space(spec, overrides, source),
        calib=absolute(calib),
        train=absolute(train),
        finetune_epochs=finetune_epochs,
        trials=trials,
        objective=objective,
        seeds=seeds,
        val_samples=val_samples,
        seed=seed,
    )


def _summary(outcome: SearchOutcome, out_dir: Path) -> None:
    b = outcome.best
    against = ", ".join(
        f"{r.baseline} {100 * r.accuracy:.2f} %" for r in outcome.records if r.ok and r.baseline
    )
    click.echo(
        f"{outcome.finished} of {outcome.settings.trials} trials finished "
        f"({outcome.new_trials} new); best: trial {b.number + 1}, validation accuracy "
        f"{100 * b.accuracy:.2f} +- {100 * b.accuracy_std:.2f} %"
        + (f" (baselines: {against})" if against else "")
        + f", {b.energy_uj:.1f} uJ per inference"
    )
    click.echo("wrote " + ", ".join(str(p) for p in outcome.files))
    if not outcome.complete:
        click.echo(
            f"{outcome.settings.trials - outcome.finished} trial(s) left; continue with: "
            f"anacc tune --resume {shlex.quote(str(out_dir))}"
        )
    click.echo("compile the tuned configuration with:")
    click.echo(f"  {outcome.command}")
