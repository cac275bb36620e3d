"""The ``keyward`` command line.

User mistakes print one line naming the problem and the fix, and exit non-zero; ``--verbose`` adds the
traceback. Subcommands live in their own modules and register on ``cli``.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence

import click

from keyward import __version__
from keyward.errors import UserError

EXIT_USER_ERROR = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="keyward", message="%(prog)s %(version)s")
def cli() -> None:
    """keyward: X.509 certificates for Kubernetes from PKCS#11 token-backed CAs and EST servers."""


@cli.command()
def version() -> None:
    """Print keyward's version."""
    click.echo(f"keyward {__version__}")


@cli.command()
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    help="Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or the in-cluster service account).",
)
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    metavar="NS",
    help="Watch only this namespace (repeatable). Default: the whole cluster.",
)
@click.option(
    "--operator-namespace",
    metavar="NS",
    help="Namespace of cluster issuers' Secrets [env KEYWARD_OPERATOR_NAMESPACE; default keyward-system].",
)
@click.option(
    "--hsm-config-file",
    type=click.Path(dir_okay=False),
    help="TCS-format JSON with tokenLabel, userPin, soPin (and module) [env KEYWARD_HSM_CONFIG_FILE].",
)
@click.option(
    "--standalone/--peering",
    default=False,
    help="Run without kopf peering (no leader election "
    "between replicas). Default: peering, when the KopfPeering CRD is installed.",
)
@click.option(
    "--csr-full-cert-chain",
    is_flag=True,
    default=None,
    help="Kubernetes CSRs get leaf + CA (Istio) instead of the leaf alone.",
)
@click.option(
    "--signing-processes",
    metavar="N",
    help="Processes that decode and sign requests, each with its own token session; 0 signs in threads "
    "[env KEYWARD_SIGNING_PROCESSES; default one per usable core (the container's CPU limit counts), "
    "at most 8; 0 on one core].",
)
@click.option(
    "--replica-name",
    metavar="NAME",
    help="This replica's name, when replicas have a token each: each asks for the CA keys it lacks "
    "through a QuoteAttestation of its own [env KEYWARD_REPLICA_NAME, else POD_NAME].",
)
@click.option(
    "--quote-verification-timeout",
    metavar="DURATION",
    help="How long a request carrying an SGX quote waits for the key manager's verdict before it fails "
    "[env KEYWARD_QUOTE_VERIFICATION_TIMEOUT; default 10m].",
)
@click.option("--health-listen", metavar="HOST:PORT", help="Liveness endpoint [default 0.0.0.0:8083].")
@click.option(
    "--est-listen",
    metavar="HOST:PORT",
    help="EST server address, used once a TCS issuer sets spec.est [env KEYWARD_EST_LISTEN; "
    "default 0.0.0.0:8443].",
)
@click.option(
    "--est-tls-secret",
    metavar="NS/NAME",
    help="kubernetes.io/tls Secret with the EST server's certificate (reloaded when it changes).",
)
@click.option(
    "--est-issuer",
    metavar="KIND/[NS/]NAME",
    help="Or: the TCS issuer (TCSIssuer/NS/NAME, TCSClusterIssuer/NAME) that issues the EST server's "
    "certificate for --est-hostnames, renewed before expiry.",
)
@click.option(
    "--est-hostnames",
    multiple=True,
    metavar="NAMES",
    help="Comma-separated DNS names and IPs for the certificate --est-issuer issues.",
)
@click.option(
    "--wait-for-token",
    is_flag=True,
    help="Start even when the PKCS#11 token cannot be opened "
    "yet; issuers report the fault and recover once it is fixed.",
)
@click.option("-v", "--verbose", is_flag=True, help="Verbose logs, and tracebacks on errors.")
def operator(kubeconfig: str | None, wait_for_token: bool, **flags: object) -> None:
    """Run the controllers against the current cluster."""
    from keyward.operator.app import preflight, run
    from keyward.operator.settings import load_settings

    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    settings = load_settings(flags)
    if settings.verbose:
        os.environ["KEYWARD_VERBOSE"] = "1"
    preflight(settings, wait_for_token=wait_for_token)
    run(settings)


def _register_subcommands() -> None:
    """Subcommands from other modules (kept out of this file so each stays small)."""
    from keyward.cli import commands

    commands.register(cli)


def main(argv: Sequence[str] | None = None) -> int:
    _register_subcommands()
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in args or "--verbose" in args or os.environ.get("KEYWARD_VERBOSE") == "1"
    try:
        cli.main(args=args, prog_name="keyward", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.Abort:
        click.echo("keyward: aborted", err=True)
        return 130
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "keyward"
        click.echo(f"keyward: error: {exc.format_message()} (see `{where} --help`)", err=True)
        return EXIT_USER_ERROR
    except UserError as exc:
        if verbose:
            traceback.print_exc()
        click.echo(f"keyward: error: {exc}", err=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig()
    sys.exit(main())
