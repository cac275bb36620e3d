"""The ``keyward`` command line.

User mistakes print one line naming the problem and the fix, and exit non-zero; ``--verbose`` adds the
traceback. Subcommands live in their own modules and register on ``cli``.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from keyward import __version__
from keyward.cli import fips as fips_mode
from keyward.cli import goflags
from keyward.cli.fips import fips_option
from keyward.cli.fips import start as start_fips_mode
from keyward.errors import UserError

EXIT_USER_ERROR = 2
FC = TypeVar("FC", bound=Callable[..., Any] | click.Command)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="keyward", message="%(prog)s %(version)s")
def cli() -> None:
    """keyward: X.509 certificates for Kubernetes from PKCS#11 token-backed CAs and EST servers."""


@cli.command()
def version() -> None:
    """Print keyward's version."""
    click.echo(f"keyward {__version__}")


#: The subcommands that run the operator: ``tcs-issuer`` is the TCS seed's entry point (its Deployment's
#: container arguments work unchanged); both accept the seed's Go-style flags (``keyward.cli.goflags``).
OPERATOR_COMMANDS = ("operator", "tcs-issuer")


def _seed_flag(name: str, help_text: str, **kwargs: Any) -> Callable[[FC], FC]:
    """An option of the TCS seed's command line (marked [TCS] in the help)."""
    return click.option(name, help=f"[TCS] {help_text}", **kwargs)


@cli.command(context_settings={"max_content_width": 110})
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
    "-A", "--all-namespaces", is_flag=True, default=None, help="Watch the whole cluster (the default)."
)
@click.option(
    "--operator-namespace",
    metavar="NS",
    help="Namespace of cluster issuers' Secrets [env KEYWARD_OPERATOR_NAMESPACE, WATCH_NAMESPACE, "
    "POD_NAMESPACE, else the pod's own namespace; default keyward-system].",
)
@click.option(
    "--hsm-config-file",
    type=click.Path(dir_okay=False),
    help="TCS-format JSON with tokenLabel, userPin, soPin (and module) [env KEYWARD_HSM_CONFIG_FILE; "
    "default /etc/hsm/config.json when it exists].",
)
@click.option(
    "--standalone",
    is_flag=True,
    default=None,
    help="Run without kopf peering (no coordination between replicas). Default: peering, when the "
    "KopfPeering CRD is installed.",
)
@click.option("-P", "--peering", metavar="NAME", help="kopf peering object to use [default keyward].")
@click.option("-p", "--priority", metavar="N", help="This replica's priority in kopf peering.")
@click.option(
    "--csr-full-cert-chain/--no-csr-full-cert-chain",
    default=None,
    help="Kubernetes CSRs get leaf + intermediates + root (Istio) instead of the leaf alone.",
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
@click.option(
    "--health-listen",
    "--health-probe-bind-address",
    "health_listen",
    metavar="HOST:PORT",
    help="/healthz and /readyz [env KEYWARD_HEALTH_LISTEN; default 0.0.0.0:8083; port 0: not served].",
)
@click.option(
    "-L", "--liveness", metavar="URL", help="Or the health endpoint as kopf names it: http://HOST:PORT/PATH."
)
@click.option(
    "--metrics-listen",
    "--metrics-bind-address",
    "metrics_listen",
    metavar="HOST:PORT",
    help="Prometheus /metrics [env KEYWARD_METRICS_LISTEN; default 0.0.0.0:8082; port 0: not served].",
)
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
    "--est-default-namespaces",
    multiple=True,
    metavar="NAMESPACES",
    help="Comma-separated namespaces whose TCSIssuers may be the EST server's default CA (spec.est.default),"
    " besides TCSClusterIssuers and the operator's namespace [env KEYWARD_EST_DEFAULT_NAMESPACES].",
)
@click.option(
    "--wait-for-token",
    is_flag=True,
    help="Start even when the PKCS#11 token cannot be opened "
    "yet; issuers report the fault and recover once it is fixed.",
)
@click.option("-v", "--verbose", is_flag=True, default=None, help="Debug logs, and tracebacks on errors.")
@click.option(
    "-d", "--debug", is_flag=True, default=None, help="Like --verbose, with asyncio's debug logs too."
)
@click.option("-q", "--quiet", is_flag=True, default=None, help="Warnings and errors only.")
@click.option(
    "--log-format",
    type=click.Choice(["plain", "full", "json"], case_sensitive=False),
    help="Log line format [default full].",
)
@_seed_flag("--leader-elect/--no-leader-elect", "One active replica at a time.", default=None)
@_seed_flag("--user-pin", "Deprecated: the token's user PIN, if the HSM config file has none.", metavar="PIN")
@_seed_flag("--so-pin", "Deprecated: the token's SO PIN, if the HSM config file has none.", metavar="PIN")
@_seed_flag(
    "--token-label", "Deprecated: the token's label, if the HSM config file has none.", metavar="LABEL"
)
@_seed_flag(
    "--use-random-nonce/--no-use-random-nonce",
    "A random nonce in key-provisioning evidence [default true].",
    default=None,
)
@_seed_flag(
    "--key-wrap-mechanism",
    "How a key manager wraps a provisioned CA key: aes_key_wrap_pad (default) or aes_gcm.",
    metavar="NAME",
)
@_seed_flag(
    "--cert-manager-issuer/--no-cert-manager-issuer",
    "Serve cert-manager CertificateRequests [default true; false: Kubernetes CSRs only].",
    default=None,
)
@_seed_flag("--zap-devel/--no-zap-devel", "Development logging: debug level, text format.", default=None)
@_seed_flag("--zap-log-level", "debug, info, error, or a debug verbosity above 0.", metavar="LEVEL")
@_seed_flag("--zap-encoder", "json or console (text).", metavar="FORMAT")
@_seed_flag(
    "--zap-stacktrace-level", "info, error or panic (keyward logs tracebacks of errors).", metavar="LEVEL"
)
@_seed_flag(
    "--zap-time-encoding",
    "epoch, millis, nano, iso8601, rfc3339, rfc3339nano (keyward writes ISO 8601).",
    metavar="FORMAT",
)
@fips_option
def operator(kubeconfig: str | None, wait_for_token: bool, fips: bool, **flags: object) -> None:
    """Run the controllers against the current cluster.

    Accepts the TCS seed's flags ([TCS]) in Go's spellings too (-flag, -flag=value, -flag value) and
    kopf's run options; see docs/MIGRATING.md.
    """
    start_fips_mode(fips)
    from keyward.operator.app import preflight, run
    from keyward.operator.settings import load_settings

    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    settings = load_settings(flags)
    if settings.verbose:
        os.environ["KEYWARD_VERBOSE"] = "1"
    preflight(settings, wait_for_token=wait_for_token)
    run(settings)


cli.add_command(operator, name="tcs-issuer")


def _register_subcommands() -> None:
    """Subcommands from other modules (kept out of this file so each stays small)."""
    from keyward.cli import commands

    commands.register(cli)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    fips_mode.prepare(args)
    _register_subcommands()
    verbose = (
        bool({"-v", "--verbose", "-d", "--debug"} & set(args)) or os.environ.get("KEYWARD_VERBOSE") == "1"
    )
    try:
        if args and args[0] in OPERATOR_COMMANDS:
            args = [args[0], *goflags.to_click(args[1:])]
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
