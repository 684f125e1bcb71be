"""The ``anacc`` command line."""

from __future__ import annotations

import functools
import sys

import click

from anacc import __version__
from anacc.errors import AnaccError


def user_errors(fn):
    """Turn an :class:`AnaccError` into one ``error:`` line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AnaccError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="anacc")
def main() -> None:
    """Compile ONNX models onto analog matrix-multiply chips, run, report and fine-tune them."""
