"""Connection abuse: floods of idle connections, stalled handshakes, and the cap, seen from real clients.

The flood comes from 127.0.0.1 (or other loopback addresses); the legitimate client connects from
127.0.0.2, another address of the same machine, as a client elsewhere would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator

import pytest

from keyward.est.server import EstTimeouts
from keyward.est.server.connections import client_address
from keyward.est.wire import decode_certs_only
from tests.support.pki import name
from tests.support.waiting import wait_for, wait_until

from ..conftest import start_server
from ..helpers import (
    PASSWORD,
    USER,
    LoopThread,
    Pki,
    RunningServer,
    closed_by_server,
    curl,
    get_cacerts,
    openssl_csr,
    tcp_connection,
    tls_connection,
)

LEGITIMATE = "127.0.0.2"
PER_CLIENT = 32  # EstServer's default max_connections_per_client


@pytest.fixture(scope="module")
def guarded(pki: Pki, loop_thread: LoopThread) -> Iterator[RunningServer]:
    """A server with the default limits and timeouts."""
    running = start_server(pki, loop_thread)
    yield running
    loop_thread.run(running.server.stop())


@pytest.fixture(scope="module")
def small(pki: Pki, loop_thread: LoopThread) -> Iterator[RunningServer]:
    """Four connections at most, all of them allowed to one address; bodies may take a minute."""
    timeouts = EstTimeouts(body=60.0)
    running = start_server(
        pki, loop_thread, max_connections=4, max_connections_per_client=4, timeouts=timeouts
    )
    yield running
    loop_thread.run(running.server.stop())


def enroll_from(pki: Pki, server: RunningServer, source: str, stem: str) -> None:
    """One enrollment by curl from the loopback address ``source``; it must be issued."""
    csr, _ = openssl_csr(pki, stem, f"/CN={stem}")
    response = curl(
        pki,
        server.url("simpleenroll"),
        "--interface", source, "-u", f"{USER}:{PASSWORD}", "-H", "Content-Type: application/pkcs10",
        data=csr,
    )  # fmt: skip
    assert response.status == 200, response.text
    assert decode_certs_only(response.body)[0].subject == name(stem)


async def flood(pki: Pki, port: int, count: int, source: str) -> list[asyncio.StreamWriter]:
    """Open ``count`` TLS connections at once from ``source`` and keep those the server lets through."""
    context = ssl.create_default_context(cafile=str(pki.files["tls-root"]))

    async def one() -> asyncio.StreamWriter | None:
        try:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost", local_addr=(source, 0)
            )
        except OSError:  # refused: closed before or during the handshake
            return None
        return writer

    opened = await asyncio.gather(*(one() for _ in range(count)))
    return [writer for writer in opened if writer is not None]


def stalled_handshake(pki: Pki, port: int, source: str) -> socket.socket:
    """A connection that sends its ClientHello and then never answers the server's handshake messages."""
    context = ssl.create_default_context(cafile=str(pki.files["tls-root"]))
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    connection = tcp_connection(port, source)
    connection.sendall(outgoing.read())
    return connection


def busy_request(pki: Pki, port: int, source: str) -> ssl.SSLSocket:
    """A connection whose request is being answered: headers sent, the body still coming."""
    connection = tls_connection(pki, port, source)
    credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode())
    connection.sendall(
        b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic "
        + credentials
        + b"\r\nContent-Type: application/pkcs10\r\nContent-Length: 1000\r\n\r\nMIIB"
    )
    return connection


async def test_a_flood_of_idle_connections_from_one_address_does_not_lock_out_another(
    pki: Pki, guarded: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="keyward.est.server.connections")
    held = await flood(pki, guarded.port, 600, "127.0.0.1")
    try:
        assert 0 < len(held) <= PER_CLIENT
        await wait_for(lambda: guarded.server.active_connections == len(held))
        enroll_from(pki, guarded, LEGITIMATE, "during-the-flood")
        enroll_from(pki, guarded, LEGITIMATE, "still-during-the-flood")
    finally:
        for writer in held:
            writer.transport.abort()
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1, "the first refusal is logged, the next ones are summed up every 10 s"
    assert "from 127.0.0.1" in refusals[0] and "limit per client address" in refusals[0]
    await wait_for(lambda: guarded.server.active_connections == 0)


def test_stalled_handshakes_from_one_address_are_capped_then_dropped(
    pki: Pki, guarded: RunningServer
) -> None:
    stalled = [tcp_connection(guarded.port, "127.0.0.5") for _ in range(PER_CLIENT)]
    try:
        wait_until(lambda: guarded.server.active_connections == PER_CLIENT)
        with tcp_connection(guarded.port, "127.0.0.5") as one_more:
            assert closed_by_server(one_more, within=1.0), "beyond the limit: closed before any TLS"
        enroll_from(pki, guarded, LEGITIMATE, "beside-stalled-handshakes")
        # The handshake deadline (3 s by default) drops every one of them.
        assert all(closed_by_server(connection, within=10.0) for connection in stalled)
        wait_until(lambda: guarded.server.active_connections == 0)
    finally:
        for connection in stalled:
            connection.close()


def test_a_client_that_never_finishes_its_handshake_is_dropped(pki: Pki, guarded: RunningServer) -> None:
    with stalled_handshake(pki, guarded.port, "127.0.0.4") as connection:
        wait_until(lambda: guarded.server.active_connections == 1)
        assert closed_by_server(connection, within=10.0)
    wait_until(lambda: guarded.server.active_connections == 0)


def test_idle_connections_are_closed_first_when_the_cap_is_reached(pki: Pki, small: RunningServer) -> None:
    busy = busy_request(pki, small.port, "127.0.0.4")
    idle = [tls_connection(pki, small.port, "127.0.0.3") for _ in range(3)]
    legitimate: ssl.SSLSocket | None = None
    try:
        for connection in idle:
            assert get_cacerts(connection).startswith(b"HTTP/1.1 200")
        wait_until(lambda: small.server.active_connections == 4 and small.server.busy_connections == 1)
        legitimate = tls_connection(pki, small.port, LEGITIMATE)
        assert get_cacerts(legitimate).startswith(b"HTTP/1.1 200")
        # The longest idle connection of the address holding the most went; the others serve on.
        assert closed_by_server(idle[0])
        assert all(get_cacerts(connection).startswith(b"HTTP/1.1 200") for connection in idle[1:])
        busy.sendall(b"A" * 996)  # the rest of the body: the request is answered (not a CSR: 400)
        busy.settimeout(5)
        assert busy.recv(4096).startswith(b"HTTP/1.1 400")
    finally:
        for connection in [busy, *idle, *([legitimate] if legitimate else [])]:
            connection.close()
    wait_until(lambda: small.server.active_connections == 0)


def test_when_every_connection_is_answering_new_ones_are_refused(pki: Pki, small: RunningServer) -> None:
    busy = [busy_request(pki, small.port, "127.0.0.4") for _ in range(4)]
    try:
        wait_until(lambda: small.server.busy_connections == 4)
        with pytest.raises(OSError):
            tls_connection(pki, small.port, LEGITIMATE).close()
        busy.pop().close()
        wait_until(lambda: small.server.active_connections == 3)
        with tls_connection(pki, small.port, LEGITIMATE) as admitted:
            assert get_cacerts(admitted).startswith(b"HTTP/1.1 200")
    finally:
        for connection in busy:
            connection.close()
    wait_until(lambda: small.server.active_connections == 0)


def test_closing_waits_for_the_clients_tls_close_for_a_bounded_time(
    pki: Pki, loop_thread: LoopThread
) -> None:
    # The server closes an idle connection after 0.5 s; this client never answers its TLS close_notify,
    # and never closes its end. The connection is released anyway, after the TLS shutdown wait (2 s).
    running = start_server(pki, loop_thread, timeouts=EstTimeouts(idle=0.5))
    try:
        with tls_connection(pki, running.port, "127.0.0.6"):
            wait_until(lambda: running.server.active_connections == 1)
            wait_until(lambda: running.server.active_connections == 0, timeout=10.0)
    finally:
        loop_thread.run(running.server.stop())


@pytest.mark.parametrize(
    ("peername", "client"),
    [
        (("192.0.2.7", 50123), "192.0.2.7"),
        (("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 443, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2::9", 443, 0, 0), "2001:db8:1:2::/64"),
        (("::ffff:192.0.2.7", 443, 0, 0), "192.0.2.7"),
        (("::1", 443, 0, 0), "::1"),
        (("fe80::1%eth0", 443, 0, 2), "fe80::/64"),
        (None, "?"),
    ],
    ids=["ipv4", "ipv6", "ipv6-same-64", "ipv4-mapped", "ipv6-loopback", "link-local-with-zone", "unknown"],
)
def test_connections_are_counted_per_address_and_per_ipv6_64(peername: object, client: str) -> None:
    assert client_address(peername) == client
