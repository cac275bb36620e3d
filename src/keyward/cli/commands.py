"""Subcommands beyond ``operator`` and ``version``, registered on the ``keyward`` group."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    from keyward.sandbox.cli import sandbox

    cli.add_command(sandbox)
