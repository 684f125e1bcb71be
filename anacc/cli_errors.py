"""How every ``anacc`` command reports a user's mistake: one ``error:`` line, exit code 2.

It lives apart from ``anacc.cli`` so that the modules holding subcommands can import it while
``anacc.cli`` imports them.
"""

from __future__ import annotations

import functools
import sys

import click

from anacc.errors import AnaccError


def user_errors(fn):
    """Turn an :class:`AnaccError` into one ``error:`` line on stderr and exit code 2;
    Ctrl-C into one line and exit code 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AnaccError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("error: interrupted; no output was written", err=True)
            sys.exit(130)

    return wrapper
