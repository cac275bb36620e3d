"""EST servers for the EST issuer tests, on 127.0.0.1 in the test process: the project's EstServer over a
scriptable in-memory CA, and small aiohttp peers that misbehave on purpose."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from asn1crypto import cms
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keyward.est.server import EstServer, ServerTls
from keyward.est.server.ca import CaUnavailable, ClientIdentity, EnrollPending, EnrollRejected
from keyward.est.server.tls import server_ssl_context
from keyward.est.wire import CsrAttrs, encode_base64, encode_certs_only
from tests.support.pki import Issuer, b64

USER = "est-user"
PASSWORD = "correct-horse-battery"
LOCALHOST = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
IP_ONLY = (x509.IPAddress(ipaddress.ip_address("127.0.0.1")),)


def tls_identity(issuer: Issuer, sans: Sequence[x509.GeneralName]) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a TLS server certificate from ``issuer``."""
    return issuer.tls_identity("est-server", sans)


@dataclass
class Enrollment:
    common_name: str
    renewal: bool
    client: ClientIdentity


@dataclass
class ScriptedCa:
    """An EstCa in memory whose answers the test chooses by the request's common name:
    ``hold`` → 202 while it is in ``held``; ``pending`` → 202 (Retry-After 1) for the first
    ``pending_times`` attempts; ``busy`` → 503; ``refuse`` → 400 with a policy message."""

    label: str
    issuer: Issuer
    password: str = PASSWORD
    username: str = USER
    pending_times: int = 2
    held: set[str] = field(default_factory=set)
    enrollments: list[Enrollment] = field(default_factory=list)
    _seen: dict[str, int] = field(default_factory=dict)

    def ca_certificates(self) -> Sequence[x509.Certificate]:
        return [self.issuer.certificate]

    def csr_attributes(self) -> CsrAttrs | None:
        return None

    def check_basic(self, username: str, password: str) -> bool:
        user_ok = hmac.compare_digest(username.encode(), self.username.encode())
        return hmac.compare_digest(password.encode(), self.password.encode()) and user_ok

    def client_ca_trust(self) -> Sequence[x509.Certificate]:
        return [self.issuer.certificate]

    def attempts(self, common_name: str) -> int:
        return self._seen.get(common_name, 0)

    async def enroll(
        self, csr: x509.CertificateSigningRequest, client: ClientIdentity, *, renewal: bool
    ) -> list[x509.Certificate]:
        common_name = str(csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        self._seen[common_name] = self._seen.get(common_name, 0) + 1
        if common_name in self.held:
            raise EnrollPending(1)
        if common_name.startswith("pending") and self._seen[common_name] <= self.pending_times:
            raise EnrollPending(1)
        if common_name.startswith("busy"):
            raise CaUnavailable("the signing backend is down for maintenance")
        if common_name.startswith("refuse"):
            raise EnrollRejected(f"CN={common_name} is not allowed by this CA's policy; ask for another name")
        try:
            sans = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            sans = []
        usages = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
        leaf = self.issuer.issue(csr.subject, csr.public_key(), sans, usages=usages)
        self.enrollments.append(Enrollment(common_name, renewal, client))
        return [leaf, self.issuer.certificate]

    async def server_keygen(
        self, csr: x509.CertificateSigningRequest, client: ClientIdentity
    ) -> tuple[bytes, list[x509.Certificate]]:
        raise EnrollRejected("server key generation is not offered here")


@dataclass
class RunningEst:
    """The project's EST server with a ``main`` CA (the default label) and an ``other`` CA."""

    ca: ScriptedCa
    other: ScriptedCa
    server: EstServer
    tls: ServerTls
    port: int = 0

    async def start(self, port: int = 0) -> None:
        await self.server.start("127.0.0.1", port, self.tls.context)
        self.port = self.server.port

    async def stop(self) -> None:
        await self.server.stop()


@contextlib.asynccontextmanager
async def serving(
    est_ca: Issuer, *, username: str = USER, password: str = PASSWORD
) -> AsyncIterator[RunningEst]:
    """The project's EST server for ``est_ca`` on 127.0.0.1, taking these Basic credentials, while in use."""
    running = est_server(est_ca, Issuer.self_signed("Some Other CA"))
    running.ca.username, running.ca.password = username, password
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def est_server(est_ca: Issuer, other_ca: Issuer) -> RunningEst:
    main = ScriptedCa("main", est_ca)
    other = ScriptedCa("other", other_ca)
    server = EstServer({"main": main, "other": other}, default_label="main")
    chain, key = tls_identity(est_ca, LOCALHOST)
    tls = ServerTls(chain, key, server.client_trust_anchors())
    return RunningEst(main, other, server, tls)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


@dataclass
class Peer:
    """A scripted HTTPS peer; ``seen`` records what arrived (to check where credentials went)."""

    runner: web.AppRunner
    port: int
    seen: list[Seen]

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_peer(handler: Handler, tls: tuple[bytes, bytes]) -> Peer:
    seen: list[Seen] = []

    async def recording(request: web.Request) -> web.StreamResponse:
        seen.append(Seen(request.method, request.path, request.headers.get("Authorization")))
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recording)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    context: ssl.SSLContext = server_ssl_context(tls[0], tls[1], [])
    await web.SockSite(runner, listening, ssl_context=context).start()
    return Peer(runner, listening.getsockname()[1], seen)


def certs_only(certificates: Sequence[x509.Certificate]) -> web.Response:
    return web.Response(
        body=encode_certs_only(certificates),
        headers={"Content-Type": "application/pkcs7-mime; smime-type=certs-only"},
    )


def empty_certs_only() -> bytes:
    """A certs-only PKCS#7 that holds no certificate at all (base64, as EST sends it)."""
    signed = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [],
            "encap_content_info": {"content_type": "data"},
            "certificates": [],
            "signer_infos": [],
        }
    )
    return encode_base64(cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def misbehaving(est_ca: Issuer, redirect_port: Callable[[], int]) -> Handler:
    """Answers by label: html, oversized, empty (PKCS#7 without certificates), redirect (to localhost)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        parts = request.path.removeprefix("/.well-known/est/").split("/")
        label, operation = parts[0], parts[-1]
        if label == "html":
            return web.Response(
                text="<html><body><h1>Welcome to nginx!</h1></body></html>", content_type="text/html"
            )
        if label == "oversized":
            return web.Response(
                body=b"A" * (2 << 20),
                headers={"Content-Type": "application/pkcs7-mime; smime-type=certs-only"},
            )
        if label == "empty":
            return web.Response(
                body=empty_certs_only(),
                headers={"Content-Type": "application/pkcs7-mime; smime-type=certs-only"},
            )
        if label == "redirect":
            target = f"https://localhost:{redirect_port()}/.well-known/est/{operation}"
            return web.Response(status=307, headers={"Location": target})
        return web.Response(status=404, text="no such label")

    return handle


def elsewhere(est_ca: Issuer) -> Handler:
    """Another host: distributes the right CA, and refuses every enrollment (it never gets credentials)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/cacerts"):
            return certs_only([est_ca.certificate])
        return web.Response(status=401, text="who are you?", headers={"WWW-Authenticate": 'Basic realm="x"'})

    return handle


def basic_auth_secret(name: str, username: str = USER, password: str = PASSWORD) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "type": "kubernetes.io/basic-auth",
        "data": {"username": b64(username.encode()), "password": b64(password.encode())},
    }
