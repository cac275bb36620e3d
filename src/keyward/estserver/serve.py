"""The cluster-free EST server (``keyward est-server``): one token-backed CA, served over RFC 7030 from
the state directory (``keyward.estserver.state``), in this process or in serving processes
(``keyward.estserver.workers``) on a port this process holds.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from keyward.errors import UserError
from keyward.est.server import ServerTls
from keyward.estserver.child import EST_LABEL, ServingSetup, standalone_server
from keyward.estserver.state import (
    DEFAULT_HOSTNAMES,
    USERNAME,
    StandaloneState,
    SuppliedTls,
    prepare_state,
    save_tls,
)
from keyward.estserver.workers import ServingProcesses, hold_port
from keyward.host import ListenAddress
from keyward.issuers.tcs.est_ca import ServerCertificate, issue_tls_server_certificate, renewal_time
from keyward.keystore import KeySpec
from keyward.pki.profile import IssuerPolicy

log = logging.getLogger("keyward.est.standalone")

#: Retry a failed TLS renewal this often (the old certificate stays in place meanwhile).
RENEW_RETRY = timedelta(minutes=5)
#: The log line format of ``keyward est-server`` and of its serving processes (hence the process ID).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


@dataclass(frozen=True)
class StandaloneOptions:
    state_dir: Path
    listen: ListenAddress
    key_spec: KeySpec | None = None
    hostnames: tuple[str, ...] = DEFAULT_HOSTNAMES
    workers: int = 0  # serving processes (``keyward.estserver.workers``); 0 serves in this process
    #: What the enrollment CA signs (``--policy``); None: the default policy.
    policy: IssuerPolicy | None = None
    #: The operator's own TLS certificate and key (``--tls-cert``, ``--tls-key``) instead of the TLS CA's.
    supplied_tls: SuppliedTls | None = None


async def serve(options: StandaloneOptions) -> None:
    """Run the EST server until cancelled (the CLI cancels on SIGINT/SIGTERM), then close the token."""
    state = await asyncio.to_thread(
        functools.partial(
            prepare_state,
            options.state_dir,
            options.key_spec,
            options.hostnames,
            policy=options.policy,
            supplied_tls=options.supplied_tls,
        )
    )
    try:
        if options.workers:
            await _serve_in_processes(state, options)
        else:
            await _serve_here(state, options)
    finally:
        await asyncio.to_thread(state.store.close)
        log.info("EST server stopped")


async def _serve_here(state: StandaloneState, options: StandaloneOptions) -> None:
    """One process: the event loop serves, the store's threads sign."""
    server = standalone_server(state.ca, state.policy, state.credential, state.server_names, state.store)
    tls = ServerTls(state.tls.chain_pem, state.tls.key_pem, server.client_trust_anchors())
    try:
        await server.start(options.listen.host, options.listen.port, tls.context)
    except OSError as exc:
        raise _cannot_listen(options.listen, exc) from None
    try:
        print(banner(state, options.listen, server.port), flush=True)
        await _renew_forever(state, lambda new: tls.reload_certificate(new.chain_pem, new.key_pem))
    finally:
        await server.stop()


async def _serve_in_processes(state: StandaloneState, options: StandaloneOptions) -> None:
    """``options.workers`` serving processes on a port this process holds; this one renews the TLS
    certificate (signing in its own store's threads) and restarts processes that die."""
    try:
        held, port = await asyncio.to_thread(hold_port, options.listen)  # resolving the host may block
    except OSError as exc:
        raise _cannot_listen(options.listen, exc) from None
    try:
        setup = ServingSetup(
            make_server=functools.partial(
                standalone_server, state.ca, state.policy, state.credential, state.server_names
            ),
            tls=state.tls,
            listen=ListenAddress(options.listen.host, port),
            log_level=logging.getLogger().getEffectiveLevel(),
            log_format=LOG_FORMAT,
        )
        processes = ServingProcesses(state.store.config, setup, options.workers)
        await processes.start()
        try:
            print(banner(state, options.listen, port), flush=True)
            await _renew_forever(state, processes.renew_tls)
        finally:
            await processes.stop()
    finally:
        for sock in held:
            sock.close()


def _cannot_listen(listen: ListenAddress, exc: OSError) -> UserError:
    if exc.errno == errno.EADDRINUSE:
        return UserError(
            f"cannot listen on {listen}: the address is already in use",
            "stop whatever listens there, or pick another port with --listen HOST:PORT",
        )
    return UserError(
        f"cannot listen on {listen} ({exc.strerror or exc})",
        "check the address in --listen HOST:PORT (ports below 1024 need privileges)",
    )


async def _renew_forever(state: StandaloneState, install: Callable[[ServerCertificate], None]) -> None:
    """Renew the TLS certificate at two thirds of its lifetime and ``install`` it; the old one serves
    until then. A supplied certificate (``--tls-cert``) is the operator's to renew: served until stopped."""
    tls_ca = state.tls_ca
    if tls_ca is None:
        await asyncio.Event().wait()
        return
    due = renewal_time(state.tls.certificate)
    while True:
        await asyncio.sleep(max(1.0, (due - datetime.now(UTC)).total_seconds()))
        try:
            renewed = await state.store.run(
                issue_tls_server_certificate, tls_ca, state.hostnames, IssuerPolicy()
            )
            await asyncio.to_thread(save_tls, state.files, renewed)
            install(renewed)
        except Exception as exc:  # keep serving with the current certificate, and try again soon
            log.warning("renewing the EST server's TLS certificate failed (%s); retrying", exc)
            due = datetime.now(UTC) + RENEW_RETRY
            continue
        state.tls = renewed
        due = renewal_time(renewed.certificate)
        log.info("renewed the EST server's TLS certificate; next renewal at %s", due.isoformat())


def banner(state: StandaloneState, listen: ListenAddress, port: int) -> str:
    """How to enroll, with commands that work as printed (the password is read from its file)."""
    host = "127.0.0.1" if listen.host in ("0.0.0.0", "::", "") else listen.host  # noqa: S104
    shown_host = f"[{host}]" if ":" in host else host
    base = f"https://{shown_host}:{port}/.well-known/est"
    files = state.files
    if state.tls_ca is not None:
        trust = files.tls_ca_pem
        tls = f"  TLS: certificate issued by the TLS CA; clients verify the server with {trust}"
    else:
        trust = Path("SERVER-CA.pem")
        tls = "  TLS: the --tls-cert certificate; clients verify the server with the CA that issued it"
    return "\n".join(
        [
            f"keyward EST server listening on {base}/ (also {base}/{EST_LABEL}/)",
            f"  enrollment CA certificate (devices get it from /cacerts): {files.ca_pem}",
            tls,
            f"  HTTP Basic: user {USERNAME}, password in {files.password}",
            "Enroll a new key with openssl and curl:",
            "  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout device.key "
            "-subj /CN=device -outform DER | base64 > device.b64",
            f"  curl --cacert {trust} -u {USERNAME}:$(cat {files.password}) "
            f"-H 'Content-Type: application/pkcs10' --data-binary @device.b64 {base}/simpleenroll "
            "| base64 -d | openssl pkcs7 -inform DER -print_certs -out device.pem",
            "Renew it with the certificate itself: curl --cert device.pem --key device.key ... "
            f"{base}/simplereenroll",
        ]
    )
