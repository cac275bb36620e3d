"""The EST server's connections: admitted per client address, TLS within a deadline, idle ones closed first.

Every accepted TCP connection passes ``Connections.admit`` before any TLS work, so a flood costs the server
an ``accept`` and a ``close`` per connection, not a handshake:

- a **client address** (an IPv4 address, or the /64 of an IPv6 one: one host's share) may hold at most
  ``per_client`` connections, handshakes included; more are closed at once;
- when the process holds nearly ``maximum`` connections (seven eighths), each new one first closes the
  idle connection (no request being answered) of the address that holds the most, longest idle first;
  at ``maximum`` with nothing idle, new connections are closed;
- the TLS handshake must finish within ``handshake_timeout`` seconds of the TCP accept;
- closing a connection waits at most ``shutdown_timeout`` seconds for the client's TLS close_notify.

TLS runs on asyncio's own ``SSLProtocol`` (what ``loop.create_server(ssl=...)`` uses), started by the gate
after admission instead of by the event loop before it; aiohttp's unchanged request handler sits above.
aiohttp's keep-alive timer still closes connections that bring no complete request in time. Which
connections are answering a request is marked by ``Connections.busy`` (a middleware of the server).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
from asyncio.sslproto import SSLProtocol
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

#: Refusals are logged at most this often (seconds), with how many there were meanwhile.
REFUSAL_LOG_INTERVAL = 10.0


@dataclass(eq=False)
class _Connection:
    client: str
    transport: asyncio.Transport
    #: Requests being answered on it; 0 means idle (between requests, or before the first one).
    requests: int = 0
    #: When it last became idle (monotonic seconds).
    idle_since: float = field(default_factory=time.monotonic)
    open: bool = True


class Connections:
    """The open connections of one listening server: admission, eviction, and who is busy."""

    def __init__(self, maximum: int, per_client: int) -> None:
        if maximum < 1:
            raise ValueError(f"max_connections must be at least 1, not {maximum}")
        if per_client < 1:
            raise ValueError(f"max_connections_per_client must be at least 1, not {per_client}")
        self.maximum = maximum
        self.per_client = per_client
        #: From this many connections on, a new one first closes an idle one.
        self.crowded = maximum - maximum // 8
        self._open: dict[object, _Connection] = {}
        self._per_client: Counter[str] = Counter()
        self._refusals = _RefusalLog()

    @property
    def active(self) -> int:
        return len(self._open)

    @property
    def answering(self) -> int:
        """Connections answering a request now."""
        return sum(1 for connection in self._open.values() if connection.requests)

    def admit(self, transport: asyncio.Transport) -> _Connection | None:
        """Register a new TCP connection, or ``None`` when it must be closed."""
        client = client_address(transport.get_extra_info("peername"))
        if self._per_client[client] >= self.per_client:
            reason = f"it holds {self.per_client} connections already, the limit per client address"
            self._refusals.note("client", client, reason)
            return None
        if len(self._open) >= self.crowded:
            self._close_an_idle_connection()
        if len(self._open) >= self.maximum:
            reason = f"all {self.maximum} connections are answering requests or in their TLS handshake"
            self._refusals.note("full", client, reason)
            return None
        connection = _Connection(client, transport)
        self._open[_key(transport)] = connection
        self._per_client[client] += 1
        return connection

    def release(self, connection: _Connection) -> None:
        """Forget a connection (closed, or being closed); calling it again does nothing."""
        if not connection.open:
            return
        connection.open = False
        self._open.pop(_key(connection.transport), None)
        self._per_client[connection.client] -= 1
        if self._per_client[connection.client] <= 0:
            del self._per_client[connection.client]

    @contextmanager
    def busy(self, transport: asyncio.BaseTransport | None) -> Iterator[None]:
        """Marks the connection of ``transport`` as answering a request (not to be closed as idle)."""
        connection = self._open.get(_key(transport)) if transport is not None else None
        if connection is None:
            yield
            return
        connection.requests += 1
        try:
            yield
        finally:
            connection.requests -= 1
            connection.idle_since = time.monotonic()

    def close_all(self) -> None:
        """Close every connection at once (after a stop, for those aiohttp does not know: handshakes)."""
        for connection in list(self._open.values()):
            self.release(connection)
            connection.transport.abort()

    def _close_an_idle_connection(self) -> None:
        idle = [c for c in self._open.values() if c.requests == 0]
        if not idle:
            return
        victim = max(idle, key=lambda c: (self._per_client[c.client], -c.idle_since))
        logger.debug(
            "EST server: %d connections open, closing an idle one of %s", len(self._open), victim.client
        )
        self.release(victim)
        victim.transport.abort()


def client_address(peername: Any) -> str:
    """Whose connection it is: the IP address (an IPv6 address's /64 network), or '?' when unknown."""
    host = peername[0] if isinstance(peername, tuple) and peername else None
    try:
        address = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return "?"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if not address.is_loopback:
            return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _key(transport: asyncio.BaseTransport | None) -> object:
    """The socket object both the TCP transport and the TLS transport above it report."""
    return transport.get_extra_info("socket") if transport is not None else None


class _RefusalLog:
    """Refused connections, logged without flooding the log: the first of a kind at once, the following
    ones summed up in one line per ``REFUSAL_LOG_INTERVAL`` seconds."""

    def __init__(self) -> None:
        self._quiet_until: dict[str, float] = {}
        self._pending: dict[str, tuple[int, str, str]] = {}

    def note(self, kind: str, client: str, reason: str) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        quiet_until = self._quiet_until.get(kind, 0.0)
        if now >= quiet_until:
            logger.warning("EST server: refused a connection from %s: %s", client, reason)
            self._quiet_until[kind] = now + REFUSAL_LOG_INTERVAL
            return
        count = self._pending[kind][0] if kind in self._pending else 0
        if count == 0:
            loop.call_at(quiet_until, self._summarize, kind)
        self._pending[kind] = (count + 1, client, reason)

    def _summarize(self, kind: str) -> None:
        count, client, reason = self._pending.pop(kind)
        logger.warning(
            "EST server: refused %d more connection(s) in the last %.0f s, the last from %s: %s",
            count,
            REFUSAL_LOG_INTERVAL,
            client,
            reason,
        )
        self._quiet_until[kind] = asyncio.get_running_loop().time() + REFUSAL_LOG_INTERVAL


@dataclass(frozen=True)
class TlsTimeouts:
    handshake: float
    shutdown: float


class _Gate(asyncio.BufferedProtocol):
    """The protocol of one TCP connection: admits it, then runs TLS (asyncio's ``SSLProtocol``) over it,
    with aiohttp's request handler above; every event of the socket passes through to the TLS layer."""

    __slots__ = ("_connection", "_connections", "_context", "_make_handler", "_timeouts", "_tls")

    def __init__(
        self,
        connections: Connections,
        make_handler: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        timeouts: TlsTimeouts,
    ) -> None:
        self._connections = connections
        self._make_handler = make_handler
        self._context = context
        self._timeouts = timeouts
        self._connection: _Connection | None = None
        self._tls: SSLProtocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        connection = self._connections.admit(transport)
        if connection is None:
            transport.abort()
            return
        self._connection = connection
        loop = asyncio.get_running_loop()
        handshake: asyncio.Future[None] = loop.create_future()
        handshake.add_done_callback(_consume)
        self._tls = SSLProtocol(
            loop,
            self._make_handler(),
            self._context,
            handshake,
            server_side=True,
            ssl_handshake_timeout=self._timeouts.handshake,  # type: ignore[arg-type]  # seconds, any number
            ssl_shutdown_timeout=self._timeouts.shutdown,
        )
        self._tls.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._connection is not None:
            self._connections.release(self._connection)
        if self._tls is not None:
            self._tls.connection_lost(exc)

    def get_buffer(self, sizehint: int) -> Any:
        if self._tls is None:
            return bytearray(max(sizehint, 1))  # a refused connection's last bytes, discarded
        return self._tls.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self._tls is not None:
            self._tls.buffer_updated(nbytes)

    def eof_received(self) -> bool | None:
        if self._tls is None:
            return None
        keep_open: bool | None = self._tls.eof_received()  # type: ignore[func-returns-value]
        return keep_open

    def pause_writing(self) -> None:
        if self._tls is not None:
            self._tls.pause_writing()

    def resume_writing(self) -> None:
        if self._tls is not None:
            self._tls.resume_writing()


def _consume(handshake: asyncio.Future[None]) -> None:
    """A failed handshake is the connection's business (asyncio closes it); nobody waits for the result."""
    if not handshake.cancelled():
        handshake.exception()


class LimitedTcpSite(web.BaseSite):
    """Like ``web.TCPSite`` with TLS required, its connections kept by a ``Connections``."""

    __slots__ = ("_bound_port", "_connections", "_host", "_port", "_reuse_port", "_timeouts")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        connections: Connections,
        timeouts: TlsTimeouts,
        backlog: int = 128,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._bound_port = port
        self._connections = connections
        self._timeouts = timeouts
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
        if server is None or self._ssl_context is None:
            raise RuntimeError("the aiohttp runner is not set up, or the site has no TLS context")
        connections, context, timeouts = self._connections, self._ssl_context, self._timeouts
        listener = await asyncio.get_running_loop().create_server(
            lambda: _Gate(connections, server, context, timeouts),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
        )
        self._server = listener
        if listener.sockets:
            self._bound_port = int(listener.sockets[0].getsockname()[1])
