"""FIPS mode on the command line: ``--fips`` for the long-running commands, and ``keyward fips-check``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import click

from keyward import fips

F = TypeVar("F", bound=Callable[..., object])


def fips_option(command: F) -> F:
    """``--fips``: what ``KEYWARD_FIPS=1`` and the EST seed's ``OPENSSL_FIPS=1`` also ask for."""
    return click.option(
        "--fips",
        is_flag=True,
        help="FIPS mode: refuse to start unless cryptography's and Python ssl's OpenSSL run the FIPS "
        "provider, and use approved algorithms only [env KEYWARD_FIPS=1 or OPENSSL_FIPS=1].",
    )(command)


def prepare(args: Sequence[str]) -> None:
    """Before any subcommand is imported: FIPS mode asked for on the command line loads OpenSSL the way
    FIPS mode needs it (see ``keyward.fips.load_openssl``); the environment's request already did."""
    if "--fips" in args:
        fips.enable()
    if "--fips" in args or list(args[:1]) == ["fips-check"]:
        fips.load_openssl()


def start(flag: bool) -> fips.FipsStatus | None:
    """FIPS mode, when the flag or the environment asks for it: checked now, refused in one line
    (``FipsUnavailable``) when an OpenSSL of the process does not run the FIPS provider."""
    if not (flag or fips.requested()):
        return None
    fips.enable()
    return fips.check()


@click.command("fips-check")
def fips_check() -> None:
    """Check that FIPS mode can run here (the FIPS provider in both OpenSSL libraries) and say which."""
    click.echo(fips.check().describe())
