"""``anacc report PROG``: how a program maps onto the chip, what it costs, and with data how
much error each chip effect adds (text, ``--json`` or ``--html``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from anacc.cli_errors import user_errors


@click.command("report")
@click.argument("program", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Data (.npz named after the model inputs, optional 'labels') for ADC use, "
    "saturation, SNR, the error budget and accuracy per backend.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (docs/report.md).")
@click.option(
    "--html",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a self-contained HTML page with plots to this file.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Emulated chip instance and noise seed; also picks the --max-samples subset.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Samples per batch: for running the data and for amortizing weight rewrites.",
)
@click.option(
    "--max-samples",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Measure on at most N samples of DATA (a seeded random subset).",
)
@click.option(
    "--instances",
    type=click.IntRange(min=1),
    default=None,
    metavar="K",
    help="With labelled --data: accuracy over K emulated chip instances (seeds SEED.."
    "SEED+K-1), with a histogram in the HTML page.",
)
@click.option(
    "--address",
    default=None,
    metavar="ADDR",
    help="With --instances: run the instances on this Ray cluster (auto, HOST:PORT or "
    "ray://HOST:PORT).",
)
@user_errors
def report_cmd(
    program: Path,
    data: Path | None,
    as_json: bool,
    html: Path | None,
    seed: int,
    batch_size: int,
    max_samples: int | None,
    instances: int | None,
    address: str | None,
) -> None:
    """Report how PROGRAM maps onto the chip: tiles, utilization, runs, time and energy per
    sample; with --data also ADC use, saturation, SNR, the error budget and accuracy."""
    from anacc.compiler.datafile import load_dataset
    from anacc.compiler.files import atomic_write
    from anacc.compiler.program_io import load_program
    from anacc.errors import OptionError
    from anacc.runtime.report import build_report, render_text
    from anacc.runtime.report_html import render_html

    inputs = tuple(p for p in (program, data) if p is not None)
    if html is not None and any(html.resolve() == p.resolve() for p in inputs):
        raise OptionError(f"{html}: refusing to overwrite an input file; choose another --html")
    prog = load_program(program)
    dataset = load_dataset(data, prog.inputs) if data is not None else None
    if address is not None and instances is None:
        raise OptionError("--address runs chip instances on a cluster; give --instances K too")
    report = build_report(
        prog,
        dataset,
        seed=seed,
        batch_size=batch_size,
        max_samples=max_samples,
        instances=instances,
        address=address,
    )
    if html is not None:
        atomic_write(html, render_html(report).encode("utf-8"), protect=inputs)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=1, allow_nan=False))
    else:
        click.echo(render_text(report), nl=False)
    if html is not None:
        click.echo(f"wrote {html}", err=as_json)
