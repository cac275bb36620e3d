"""A TCP site for aiohttp that bounds the number of connections and the TLS handshake time.

aiohttp's own keep-alive timer closes connections that do not deliver a complete request in time (it
starts when the connection opens), which also cuts clients that trickle headers. What it lacks is a cap on
open connections and a handshake deadline; both live here, around aiohttp's unchanged protocol.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import web

logger = logging.getLogger(__name__)


class ConnectionLimit:
    """Counts established connections; connections beyond ``maximum`` are closed right after the handshake."""

    def __init__(self, maximum: int) -> None:
        if maximum < 1:
            raise ValueError(f"max_connections must be at least 1, not {maximum}")
        self.maximum = maximum
        self.active = 0


class _LimitedProtocol(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol; passes everything through unless the limit is reached."""

    def __init__(self, inner: asyncio.Protocol, limit: ConnectionLimit) -> None:
        self._inner = inner
        self._limit = limit
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._limit.active >= self._limit.maximum:
            logger.warning("EST server: refusing a connection, %d connections are open", self._limit.active)
            transport.close()
            return
        self._admitted = True
        self._limit.active += 1
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self._admitted = False
            self._limit.active -= 1
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()


class LimitedTcpSite(web.BaseSite):
    """Like ``web.TCPSite`` (TLS required), plus a connection cap and a handshake timeout."""

    __slots__ = ("_bound_port", "_handshake_timeout", "_host", "_limit", "_port", "_reuse_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        limit: ConnectionLimit,
        handshake_timeout: float,
        backlog: int = 128,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._bound_port = port
        self._limit = limit
        self._handshake_timeout = handshake_timeout
        self._reuse_port = reuse_port

    @property
    def port(self) -> int:
        return self._bound_port

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._bound_port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:
            raise RuntimeError("the aiohttp runner is not set up")
        limit = self._limit
        listener = await asyncio.get_running_loop().create_server(
            lambda: _LimitedProtocol(server(), limit),
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._handshake_timeout,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
        )
        self._server = listener
        if listener.sockets:
            self._bound_port = int(listener.sockets[0].getsockname()[1])
