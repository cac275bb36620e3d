"""An EST server that behaves like Cisco's libest: one request per connection, closed without telling.

libest answers one request and then closes the TLS connection, without a ``Connection: close`` header,
so an HTTP/1.1 client believes the connection may be reused. Here the close is held back until the
client sends its next request (or 2 s pass), so that a client that reuses the connection meets the
close every time, not only when it loses the race against the server's FIN.

It speaks real TLS (asyncio's, with the project's server context), HTTP/1.1 through h11 (the parser of
httpx's own stack, used here on the server side), and authenticates enrollment with HTTP Basic, HTTP
Digest (RFC 7616, MD5, qop=auth, as libest offers) or a TLS client certificate. /csrattrs answers with
trailing NUL bytes and line breaks, as libest's answers carry.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import secrets
import ssl
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Literal

import h11

from keyward.est.server.tls import server_ssl_context
from keyward.est.wire import decode_csr, encode_certs_only
from tests.support.pki import Issuer

from ..helpers import PASSWORD, USER, Pki

Authentication = Literal["basic", "digest", "certificate"]
REALM = "estrealm"
#: RFC 7030 section 4.5.2's example CsrAttrs, base64; libest ends its answers with a NUL byte.
CSRATTRS_BODY = (
    b"MEEGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiMBYGCSqGSIb3DQEJDjEJ\n"
    b"BgcrBgEBAQEWBggqhkjOPQQDAw==\r\n\x00\x00"
)


class DigestCheck:
    """RFC 7616 Digest (qop=auth) written out, so that the client is checked against the RFC: one challenge
    per algorithm offered (MD5 unless told), an answer accepted with any of them (``answered_with``)."""

    def __init__(self, algorithms: tuple[str, ...] = ("MD5",)) -> None:
        self.algorithms = algorithms
        self.nonces: set[str] = set()
        self.answered_with: list[str] = []

    def challenge(self) -> str:
        return self.challenges()[0]

    def challenges(self) -> list[str]:
        nonce = secrets.token_hex(16)
        self.nonces.add(nonce)
        return [
            f'Digest realm="{REALM}", qop="auth", algorithm={algorithm}, nonce="{nonce}"'
            for algorithm in self.algorithms
        ]

    def valid(self, method: str, path: str, authorization: str | None) -> bool:
        scheme, _, rest = (authorization or "").partition(" ")
        if scheme != "Digest":
            return False
        fields = urllib.request.parse_keqv_list(urllib.request.parse_http_list(rest))
        if fields.get("nonce") not in self.nonces or fields.get("uri") != path:
            return False
        algorithm = fields.get("algorithm", "MD5")
        if algorithm not in self.algorithms:
            return False
        hash_name = _DIGEST_HASHES[algorithm]

        def digest(text: str) -> str:
            return hashlib.new(hash_name, text.encode(), usedforsecurity=False).hexdigest()

        ha1 = digest(f"{USER}:{REALM}:{PASSWORD}")
        ha2 = digest(f"{method}:{path}")
        parts = [fields.get(k, "") for k in ("nonce", "nc", "cnonce", "qop")]
        expected = digest(":".join([ha1, *parts, ha2]))
        self.answered_with.append(algorithm)
        return fields.get("username") == USER and hmac.compare_digest(expected, fields.get("response", ""))


#: RFC 7616 section 3.2: algorithm names of a challenge and their hashes.
_DIGEST_HASHES = {"MD5": "md5", "SHA-256": "sha256"}


@dataclass
class Answered:
    """One request the server answered: on which connection, what it asked, what it got."""

    connection: int
    method: str
    path: str
    authorization: str | None
    status: int


@dataclass
class ClosingEstServer:
    issuer: Issuer
    authentication: Authentication
    #: False: read each request and close without any answer (a server that fails mid-request).
    answers: bool = True
    port: int = 0
    answered: list[Answered] = field(default_factory=list)
    #: Connections on which the client sent a second request, which was not read.
    reused: list[int] = field(default_factory=list)
    _digest: DigestCheck = field(default_factory=DigestCheck)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _open: dict[asyncio.StreamWriter, asyncio.Task[None]] = field(default_factory=dict)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = next(self._ids)
        task = asyncio.current_task()
        assert task is not None
        self._open[writer] = task
        try:
            http = h11.Connection(h11.SERVER)
            parsed = await _read_request(http, reader)
            if parsed is None:
                return
            request, body = parsed
            if not self.answers:
                self.answered.append(
                    Answered(connection, request.method.decode(), request.target.decode(), None, 0)
                )
                return
            status, headers, content = self._answer(request, body, writer.get_extra_info("ssl_object"))
            path = request.target.decode()
            authorization = _header(request, b"authorization")
            self.answered.append(Answered(connection, request.method.decode(), path, authorization, status))
            # No "Connection: close": like libest, the server closes without announcing it.
            head = h11.Response(status_code=status, headers=[*headers, ("Content-Length", str(len(content)))])
            writer.write(http.send(head) + http.send(h11.Data(data=content)) + http.send(h11.EndOfMessage()))
            await writer.drain()
            # One request per connection: the next one is not read, the connection is just closed.
            with suppress(TimeoutError):
                async with asyncio.timeout(2):
                    if await reader.read(1):
                        self.reused.append(connection)
        except (ConnectionError, ssl.SSLError, h11.ProtocolError):
            pass
        finally:
            del self._open[writer]
            writer.close()

    async def close_connections(self) -> None:
        """End the connections still open (their handlers see the close and finish)."""
        for writer, task in list(self._open.items()):
            writer.transport.abort()
            await asyncio.gather(task, return_exceptions=True)

    def _answer(
        self, request: h11.Request, body: bytes, ssl_object: ssl.SSLObject | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        path = request.target.decode()
        operation = path.rpartition("/")[2]
        if operation == "cacerts":
            return (
                200,
                [("Content-Type", "application/pkcs7-mime")],
                encode_certs_only([self.issuer.certificate]),
            )
        if not self._authenticated(request, ssl_object):
            if self.authentication == "digest":
                return 401, [("WWW-Authenticate", self._digest.challenge())], b"digest required\n"
            if self.authentication == "basic":
                return 401, [("WWW-Authenticate", f'Basic realm="{REALM}"')], b"log in\n"
            return 401, [], b"a client certificate is required\n"
        if operation == "csrattrs":
            return 200, [("Content-Type", "application/csrattrs")], CSRATTRS_BODY
        if operation == "simpleenroll":
            csr = decode_csr(body)
            certificate = self.issuer.issue(csr.subject, csr.public_key())
            return 200, [("Content-Type", "application/pkcs7-mime")], encode_certs_only([certificate])
        return 404, [], b"no such operation\n"

    def _authenticated(self, request: h11.Request, ssl_object: ssl.SSLObject | None) -> bool:
        authorization = _header(request, b"authorization")
        if self.authentication == "digest":
            return self._digest.valid(request.method.decode(), request.target.decode(), authorization)
        if self.authentication == "basic":
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            return authorization is not None and hmac.compare_digest(authorization, expected)
        # The handshake verified a presented certificate against the bootstrap CA.
        return ssl_object is not None and ssl_object.getpeercert(binary_form=True) is not None


async def _read_request(
    parser: h11.Connection, reader: asyncio.StreamReader
) -> tuple[h11.Request, bytes] | None:
    request: h11.Request | None = None
    body = b""
    while True:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data:
                return None
            parser.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            return request, body
        else:
            return None


def _header(request: h11.Request, name: bytes) -> str | None:
    return next((value.decode() for key, value in request.headers if key == name), None)


@asynccontextmanager
async def closing_est_server(
    pki: Pki, authentication: Authentication, *, answers: bool = True
) -> AsyncIterator[ClosingEstServer]:
    """The server on a free port of 127.0.0.1, with the test PKI's localhost certificate, enrolling with
    the alpha CA; client certificates of the bootstrap CA are verified in the handshake."""
    server = ClosingEstServer(pki.alpha, authentication, answers)
    context = server_ssl_context(pki.server_chain_pem(), pki.server_key_pem(), [pki.bootstrap_ca.certificate])
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=context)
    server.port = listening.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listening.close()
        await server.close_connections()
        await listening.wait_closed()
