"""``anacc inspect MODEL``: how an ONNX model reads before compilation."""

from __future__ import annotations

import json
from pathlib import Path

import click

from anacc.cli_errors import user_errors


@click.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.option(
    "--max-params",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Refuse models with more than N parameters.",
)
@user_errors
def inspect_cmd(model: Path, as_json: bool, max_params: int | None) -> None:
    """Show each node of MODEL (an .onnx file): shapes with the symbolic batch N, parameters,
    MACs per sample and whether it runs on the analog array or digitally."""
    # Imported here so that ``anacc --help`` does not pay for loading onnx.
    from anacc.compiler.frontend import load_model
    from anacc.compiler.inspect import inspect_graph, render_text, to_json

    report = inspect_graph(load_model(model, max_params=max_params))
    if as_json:
        click.echo(json.dumps(to_json(report), indent=2))
    else:
        click.echo(render_text(report), nl=False)
