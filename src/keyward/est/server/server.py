"""The RFC 7030 EST server: several CAs, each under its label, on one TLS port.

Routes: ``/.well-known/est/<label...>/<operation>`` and ``/.well-known/est/<operation>`` for the default
label. The CA set is read on every request, so the operator can add and remove issuers while serving.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web
from cryptography import x509

from keyward.est.server.audit import AuditRecord
from keyward.est.server.ca import CaUnavailable, ClientIdentity, EnrollPending, EnrollRejected, EstCa
from keyward.est.server.connections import Connections, LimitedTcpSite, TlsTimeouts
from keyward.est.server.handlers import EstRequestHandler, HandlerSettings
from keyward.est.server.logs import HttpErrorLog
from keyward.est.server.routes import parse_est_path
from keyward.est.server.tls import ServerTls, TlsSetupError, server_ssl_context
from keyward.est.wire import WELL_KNOWN
from keyward.pki.pem import unique_certificates

__all__ = [
    "AuditRecord",
    "CaUnavailable",
    "ClientIdentity",
    "EnrollPending",
    "EnrollRejected",
    "EstCa",
    "EstServer",
    "EstTimeouts",
    "ServerTls",
    "TlsSetupError",
    "server_ssl_context",
]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class EstTimeouts:
    """Seconds. ``tls_handshake`` bounds the TLS handshake from the TCP accept on; ``idle`` bounds the wait
    for a complete request (headers included) on a connection, before the first request and between
    keep-alive requests; ``body`` bounds reading a request body; ``tls_shutdown`` bounds the wait for the
    client's TLS close_notify when a connection closes; ``shutdown`` bounds a graceful stop."""

    tls_handshake: float = 3.0
    idle: float = 30.0
    body: float = 15.0
    tls_shutdown: float = 2.0
    shutdown: float = 5.0


class EstServer:
    def __init__(
        self,
        cas: Mapping[str, EstCa] | Callable[[], Mapping[str, EstCa]],
        *,
        default_label: str | None,
        audit: Callable[[AuditRecord], None] | None = None,
        max_body: int = 64 * 1024,
        max_connections: int = 256,
        max_connections_per_client: int = 32,
        timeouts: EstTimeouts = EstTimeouts(),
        observe: Callable[[str, int, float], None] | None = None,
    ) -> None:
        """``max_connections`` caps this process's connections, ``max_connections_per_client`` those of
        one client address (see ``keyward.est.server.connections``). ``observe(operation, status,
        seconds)`` hears of every answered request (metrics)."""
        self._observe = observe
        if callable(cas):
            self._cas: Callable[[], Mapping[str, EstCa]] = cas
        else:
            fixed = dict(cas)
            self._cas = lambda: fixed
        self._handler = EstRequestHandler(
            self._cas,
            HandlerSettings(default_label=default_label, max_body=max_body, body_timeout=timeouts.body),
            audit,
        )
        self._max_body = max_body
        self._connections = Connections(max_connections, max_connections_per_client)
        self._timeouts = timeouts
        self._app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._site: LimitedTcpSite | None = None

    def app(self) -> web.Application:
        """The aiohttp application (built once); ``start`` serves it, tests may mount it elsewhere."""
        if self._app is None:
            app = web.Application(client_max_size=self._max_body, middlewares=[self._busy])
            app.router.add_route("*", WELL_KNOWN + "/{tail:.+}", self._handler.handle)
            self._app = app
        return self._app

    async def start(
        self, host: str, port: int, ssl_context: ssl.SSLContext, *, reuse_port: bool = False
    ) -> None:
        """Listen on host:port with ``ssl_context`` (see ``ServerTls``); port 0 picks a free port.
        ``reuse_port`` (SO_REUSEPORT) lets several processes listen on the same port, the kernel
        spreading connections over them (``keyward.estserver.workers``)."""
        if self._runner is not None:
            raise RuntimeError("the EST server is already running")
        runner = web.AppRunner(
            self.app(),
            handle_signals=False,
            keepalive_timeout=self._timeouts.idle,
            handler_cancellation=True,
            shutdown_timeout=self._timeouts.shutdown,
            access_log=None,  # every enrollment has its audit line; refusals are logged by the handlers
            logger=HttpErrorLog(logging.getLogger("keyward.est.server.http")),
        )
        await runner.setup()
        site = LimitedTcpSite(
            runner,
            host,
            port,
            ssl_context=ssl_context,
            connections=self._connections,
            timeouts=TlsTimeouts(self._timeouts.tls_handshake, self._timeouts.tls_shutdown),
            reuse_port=reuse_port,
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._site = runner, site
        logger.info("EST server listening on %s", site.name)

    @property
    def port(self) -> int:
        if self._site is None:
            raise RuntimeError("the EST server is not running; call start() first")
        return self._site.port

    @property
    def active_connections(self) -> int:
        """Connections open now, TLS handshakes and closing ones included."""
        return self._connections.active

    @property
    def busy_connections(self) -> int:
        """Connections answering a request now (the others are idle or in their TLS handshake)."""
        return self._connections.answering

    @web.middleware
    async def _busy(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy while a request is answered, its response sent included (so that a
        connection is never closed as idle between the handler's return and the response's last byte)."""
        started = time.monotonic()
        with self._connections.busy(request.transport):
            response = await handler(request)
            try:
                await response.prepare(request)
                await response.write_eof()
            except ConnectionError:
                pass  # the client went away; aiohttp notices the lost connection on its own
        if self._observe is not None:
            path = parse_est_path(request.match_info.get("tail", ""))
            operation = path.operation.value if path is not None else "unknown"
            self._observe(operation, response.status, time.monotonic() - started)
        return response

    def client_trust_anchors(self) -> list[x509.Certificate]:
        """Everything a TLS client certificate may chain to, over all CAs: their client trust anchors and
        their own certificates (for renewals). Feed it to ``ServerTls.set_client_trust`` when CAs change."""
        certificates: list[x509.Certificate] = []
        for ca in self._cas().values():
            certificates.extend(ca.client_ca_trust())
            certificates.extend(ca.ca_certificates())
        return unique_certificates(certificates)

    async def stop(self) -> None:
        runner, self._runner, self._site = self._runner, None, None
        if runner is not None:
            await runner.cleanup()
            self._connections.close_all()
