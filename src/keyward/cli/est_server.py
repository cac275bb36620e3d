"""``keyward est-server``: the EST server without Kubernetes, over a local SoftHSM2 token."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from keyward.cli.fips import fips_option
from keyward.cli.fips import start as start_fips_mode
from keyward.host import MAX_SIGNING_PROCESSES, run_until_signalled

KEY_ALGORITHMS = ("RSA-2048", "RSA-3072", "RSA-4096", "ECDSA-256", "ECDSA-384")


def _checked_hostnames(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    """--hostname values the TLS certificate can carry: IP addresses, or DNS names the policy accepts."""
    from cryptography import x509

    from keyward.issuers.tcs.est_ca import host_names
    from keyward.pki.policy import dns_name_problem

    for name in host_names(values):
        problem = dns_name_problem(name.value) if isinstance(name, x509.DNSName) else None
        if problem:
            raise click.BadParameter(f'"{name.value}" is neither an IP address nor a DNS name: {problem}')
    return values


@click.command("est-server")
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the token, ca.pem (enrollment CA), tls-ca.pem (TLS CA), est-password and the TLS files "
    "live (created on first start; yours alone: refused if another user owns or can write it).",
)
@click.option(
    "--listen",
    default="127.0.0.1:8443",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to serve EST on; port 0 picks a free port (printed at start).",
)
@click.option(
    "--key-algorithm",
    type=click.Choice(KEY_ALGORITHMS),
    help="Key of a new CA [default RSA-3072]; an existing CA keeps its key.",
)
@click.option(
    "--hostname",
    "hostnames",
    multiple=True,
    callback=_checked_hostnames,
    metavar="NAME",
    help="Another DNS name or IP for the TLS certificate (repeatable); localhost and 127.0.0.1 always.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Serve this TLS certificate (PEM, then its intermediates) instead of one from the state's TLS "
    "CA; with --tls-key. Not renewed by keyward: restart after replacing it.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The private key (PEM, unencrypted) of --tls-cert.",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="What the enrollment CA signs: a YAML or JSON file with the fields of a TCS issuer's "
    "spec.policy (allowedDNSNames, allowedIPRanges, ...; docs/POLICY.md) [default: the default policy].",
)
@click.option(
    "--workers",
    type=click.IntRange(0, MAX_SIGNING_PROCESSES),
    metavar="N",
    help="Processes that serve on the port, each signing in its own token session; 0 serves in this "
    "process and signs in threads [default one per usable core, at most 8; 0 on one core].",
)
@fips_option
@click.option("-v", "--verbose", is_flag=True, help="Debug logs, and tracebacks on errors.")
def est_server(
    state_dir: Path,
    listen: str,
    key_algorithm: str | None,
    hostnames: tuple[str, ...],
    tls_cert: Path | None,
    tls_key: Path | None,
    policy_file: Path | None,
    workers: int | None,
    fips: bool,
    verbose: bool,
) -> None:
    """Serve RFC 7030 EST from a CA whose key is in a local SoftHSM2 token (no cluster needed)."""
    fips_status = start_fips_mode(fips)
    from keyward.estserver.serve import LOG_FORMAT, StandaloneOptions, serve
    from keyward.estserver.state import DEFAULT_HOSTNAMES, SuppliedTls, load_policy
    from keyward.host import ListenAddress, processes_per_core
    from keyward.keystore import KeySpec

    if verbose:
        os.environ["KEYWARD_VERBOSE"] = "1"
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=LOG_FORMAT,
    )
    if fips_status is not None:
        logging.getLogger("keyward.fips").info("%s", fips_status.describe())
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together: give both, or neither")
    supplied = SuppliedTls(tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    key_spec = None
    if key_algorithm:
        algorithm, _, size = key_algorithm.partition("-")
        key_spec = KeySpec(algorithm, int(size))  # type: ignore[arg-type]
    options = StandaloneOptions(
        state_dir=state_dir,
        listen=ListenAddress.parse(listen, what="--listen"),
        key_spec=key_spec,
        hostnames=tuple(dict.fromkeys((*DEFAULT_HOSTNAMES, *hostnames))),
        workers=processes_per_core() if workers is None else workers,
        policy=load_policy(policy_file) if policy_file is not None else None,
        supplied_tls=supplied,
    )
    run_until_signalled(serve(options))
