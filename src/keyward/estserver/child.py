"""A serving process of ``keyward est-server`` (see ``keyward.estserver.workers``): its entry point, and
everything its parent pickles to it, so that what the child unpickles is in the child's own imports.

Over its channel it gets the token's config and logs in (``keystore.child.log_in``), then gets a
:class:`ServingSetup`, listens on the parent's port with SO_REUSEPORT and answers ``(True, None)``, or
``(False, why)`` when it cannot serve. Later messages are renewed TLS certificates. When the channel
closes (the parent stopped, or died) or SIGTERM arrives, it stops accepting, finishes what it has, and
exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from keyward.children import AsyncChannel, Channel
from keyward.errors import UserError
from keyward.est.server import EstServer, ServerTls
from keyward.host import ListenAddress
from keyward.issuers.tcs.est_ca import BasicCredential, ServerCertificate, TcsEstCa, TokenWorkers
from keyward.keystore.child import answer, log_in
from keyward.pki.issue import CertificateAuthority
from keyward.pki.profile import IssuerPolicy

T = TypeVar("T")
log = logging.getLogger("keyward.est.workers")

EST_LABEL = "ca"  # served at /.well-known/est/ca/ and, as the default CA, at /.well-known/est/


@dataclass(frozen=True)
class ServingSetup:
    """What a serving process needs besides its token login. ``make_server`` builds the ``EstServer``
    around a ``TokenWorkers`` (must pickle: a module-level function, or a partial of one, whose
    arguments pickle; token keys travel as references)."""

    make_server: Callable[[TokenWorkers], EstServer]
    tls: ServerCertificate
    listen: ListenAddress  # the parent's port, never 0
    log_level: int = logging.INFO
    log_format: str = logging.BASIC_FORMAT


def standalone_server(
    ca: CertificateAuthority,
    policy: IssuerPolicy,
    credential: BasicCredential,
    server_names: tuple[str, ...],
    signing: TokenWorkers,
) -> EstServer:
    """The server ``keyward est-server`` runs: the CA under ``EST_LABEL``, also the default CA; no device
    enrolls for ``server_names`` with server auth. Built in each serving process (a partial of this
    function is their ``make_server``), or in the parent when there are none."""

    async def workers() -> TokenWorkers:
        return signing

    served = TcsEstCa(
        EST_LABEL,
        ca,
        policy,
        workers,
        credentials=lambda: credential,
        server_names=lambda: server_names,
    )
    return EstServer({EST_LABEL: served}, default_label=EST_LABEL)


class InlineSigning:
    """``TokenWorkers`` that run issuance jobs on the caller's thread: a serving process's event loop."""

    async def run_signing(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)


def serve(sock: socket.socket) -> None:
    """A serving process (``keyward.children.spawn`` starts it): log in, serve, and stop when the parent
    closes the socket."""
    channel = Channel(sock)
    with contextlib.suppress(EOFError, ConnectionError):
        sessions = log_in(channel)
        if sessions is None:
            return
        try:
            asyncio.run(_serve(channel.detach()))
        finally:
            sessions.close()


async def _serve(sock: socket.socket) -> None:
    channel = await AsyncChannel.open(sock)
    setup: ServingSetup = await channel.recv()
    logging.basicConfig(level=setup.log_level, format=setup.log_format)
    try:
        server, tls = await _start_serving(setup)
    except Exception as exc:
        channel.send_bytes(answer(False, _why_not_serving(setup, exc)))
        await channel.drain()
        return
    try:
        channel.send_bytes(answer(True, None))
        log.debug("serving process %s listening", os.getpid())
        await _follow(channel, tls)
    finally:
        await server.stop()


async def _start_serving(setup: ServingSetup) -> tuple[EstServer, ServerTls]:
    server = setup.make_server(InlineSigning())
    tls = ServerTls(setup.tls.chain_pem, setup.tls.key_pem, server.client_trust_anchors())
    await server.start(setup.listen.host, setup.listen.port, tls.context, reuse_port=True)
    return server, tls


def _why_not_serving(setup: ServingSetup, exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"cannot listen on {setup.listen} ({exc.strerror or exc})"
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, UserError) else str(exc)


async def _follow(channel: AsyncChannel, tls: ServerTls) -> None:
    """Apply the parent's TLS renewals until it closes the channel or SIGTERM arrives."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            message = asyncio.ensure_future(channel.recv())
            await asyncio.wait((message, stopping), return_when=asyncio.FIRST_COMPLETED)
            if not message.done():
                message.cancel()
                return
            try:
                renewed = message.result()
            except (EOFError, ConnectionError):
                return
            if isinstance(renewed, ServerCertificate):
                tls.reload_certificate(renewed.chain_pem, renewed.key_pem)
                log.debug("serving process %s: serving the renewed TLS certificate", os.getpid())
    finally:
        stopping.cancel()
