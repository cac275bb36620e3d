"""Helpers for the EST client tests: small scripted TLS peers (aiohttp) and request/identity builders.

The peers run on the test's own event loop; the project's EstServer (``est`` fixture) runs on its thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from keyward.est.client import ClientCertificate, EstEndpoint
from keyward.est.server.tls import server_ssl_context
from keyward.est.wire import decode_csr, encode_certs_only
from tests.support.pki import Issuer, ec_key, key_pem, pem
from tests.support.pki import make_csr as kit_csr

from ..helpers import Pki

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOCALHOST_SANS: tuple[x509.GeneralName, ...] = (
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
)


def endpoint(pki: Pki, port: int, *, host: str = "127.0.0.1", label: str = "") -> EstEndpoint:
    """An endpoint trusting only the test TLS root (the Explicit TA)."""
    return EstEndpoint(host, port, label, (pki.tls_root.certificate,))


def make_csr(
    common_name: str, key: ec.EllipticCurvePrivateKey | None = None, sans: Sequence[str] = ()
) -> tuple[x509.CertificateSigningRequest, ec.EllipticCurvePrivateKey]:
    key = key or ec_key()
    return kit_csr(key, common_name, [x509.DNSName(s) for s in sans]), key


def identity(certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> ClientCertificate:
    return ClientCertificate(pem(certificate), key_pem(key))


def server_identity(issuer: Issuer, sans: Sequence[x509.GeneralName] = LOCALHOST_SANS) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a TLS server certificate issued by ``issuer``."""
    return issuer.tls_identity("peer", sans)


async def issue_from_body(issuer: Issuer, request: web.Request) -> list[x509.Certificate]:
    """Certify the CSR of an enrollment request: (leaf, issuer)."""
    csr = decode_csr(await request.read())
    return [issuer.issue(csr.subject, csr.public_key()), issuer.certificate]


def pkcs7_response(certificates: Sequence[x509.Certificate]) -> web.Response:
    return web.Response(
        body=encode_certs_only(certificates),
        headers={"Content-Type": "application/pkcs7-mime; smime-type=certs-only"},
    )


@dataclass
class Seen:
    """What a peer received: enough to check which credentials went where."""

    path: str
    authorization: str | None
    client_certificate: bool


@dataclass
class Peer:
    port: int
    seen: list[Seen] = field(default_factory=list)


PeerFactory = Callable[..., Awaitable[Peer]]


@pytest.fixture(name="peer")
async def peer_fixture(pki: Pki) -> AsyncIterator[PeerFactory]:
    """Start scripted HTTPS peers on 127.0.0.1: ``await peer(handler, tls=..., client_trust=...)``.

    ``handler`` answers every path; ``tls`` is (certificate PEM, key PEM), by default a localhost
    certificate from the test TLS root; ``client_trust`` are the anchors for TLS client certificates.
    """
    runners: list[web.AppRunner] = []

    async def start(
        handler: Handler,
        *,
        tls: tuple[bytes, bytes] | None = None,
        client_trust: Sequence[x509.Certificate] = (),
        context: ssl.SSLContext | None = None,
    ) -> Peer:
        chain, key = tls or (pki.server_chain_pem(), pki.server_key_pem())
        ssl_context = context or server_ssl_context(chain, key, list(client_trust))
        started = Peer(0)

        async def recording(request: web.Request) -> web.StreamResponse:
            ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
            presented = bool(ssl_object and ssl_object.getpeercert(binary_form=True))
            started.seen.append(Seen(request.path, request.headers.get("Authorization"), presented))
            return await handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", recording)
        runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        runners.append(runner)
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listening.bind(("127.0.0.1", 0))
        started.port = listening.getsockname()[1]
        await web.SockSite(runner, listening, ssl_context=ssl_context).start()
        return started

    yield start
    for runner in runners:
        await runner.cleanup()


@dataclass
class OpensslServer:
    port: int
    process: asyncio.subprocess.Process


@asynccontextmanager
async def openssl_s_server(
    directory: Path, chain_pem: bytes, key_pem_bytes: bytes, *options: str
) -> AsyncIterator[OpensslServer]:
    """``openssl s_server`` on a free port of 127.0.0.1, as a TLS peer that behaves like OpenSSL servers."""
    cert_file, key_file = directory / "s_server.pem", directory / "s_server.key"
    cert_file.write_bytes(chain_pem)
    key_file.write_bytes(key_pem_bytes)
    process = await asyncio.create_subprocess_exec(
        "openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", str(cert_file), "-key", str(key_file),
        "-www", *options,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            line = b""
            while not line.startswith(b"ACCEPT"):
                line = await process.stdout.readline()
                assert line, "openssl s_server exited before accepting connections"
        yield OpensslServer(int(line.strip().rpartition(b":")[2]), process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
