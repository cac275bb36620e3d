"""Subcommands beyond ``operator`` and ``version``, registered on the ``keyward`` group."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    from keyward.bench.cli import bench
    from keyward.cli.est_server import est_server
    from keyward.cli.fips import fips_check
    from keyward.cli.provision_key import provision_key
    from keyward.sandbox.cli import sandbox

    cli.add_command(sandbox)
    cli.add_command(est_server)
    cli.add_command(provision_key)
    cli.add_command(bench)
    cli.add_command(fips_check)
