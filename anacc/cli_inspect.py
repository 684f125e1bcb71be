"""``anacc inspect MODEL``: how an ONNX model reads before compilation."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click


def _user_errors(fn):
    """:func:`anacc.cli.user_errors`, looked up per call: ``anacc.cli`` imports this module
    while it is being imported itself, so a module-level import would be circular."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from anacc.cli import user_errors

        return user_errors(fn)(*args, **kwargs)

    return wrapper


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
@_user_errors
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
