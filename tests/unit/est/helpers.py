"""A throwaway PKI, an in-memory EstCa, a server on its own thread, and curl/openssl as clients."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keyward.est.server import AuditRecord, EstServer, ServerTls
from keyward.est.server.ca import ClientIdentity, EnrollPending, EnrollRejected
from keyward.est.wire import CsrAttrs
from tests.support.pki import Issuer, ec_key, key_pem, name, pem
from tests.support.tools import Response, curl_trusting, run

T = TypeVar("T")
PASSWORD = "s3cret-Passw0rd"
USER = "est"


class MemoryCa:
    """An EstCa in memory. CN=forbidden is refused on policy, CN=pending is answered 202."""

    def __init__(
        self,
        label: str,
        issuer: Issuer,
        *,
        client_trust: Sequence[x509.Certificate] = (),
        attributes: CsrAttrs | None = None,
    ) -> None:
        self.label = label
        self.issuer = issuer
        self._trust = list(client_trust)
        self._attributes = attributes

    def ca_certificates(self) -> Sequence[x509.Certificate]:
        return [self.issuer.certificate]

    def csr_attributes(self) -> CsrAttrs | None:
        return self._attributes

    def check_basic(self, username: str, password: str) -> bool:
        user_ok = hmac.compare_digest(username.encode(), USER.encode())
        return hmac.compare_digest(password.encode(), PASSWORD.encode()) and user_ok

    def client_ca_trust(self) -> Sequence[x509.Certificate]:
        return self._trust

    async def enroll(
        self, csr: x509.CertificateSigningRequest, client: ClientIdentity, *, renewal: bool
    ) -> list[x509.Certificate]:
        return [self._certify(csr, csr.public_key())]

    async def server_keygen(
        self, csr: x509.CertificateSigningRequest, client: ClientIdentity
    ) -> tuple[bytes, list[x509.Certificate]]:
        key = ec_key()
        certificate = self._certify(csr, key.public_key())
        pkcs8 = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return pkcs8, [certificate]

    def _certify(self, csr: x509.CertificateSigningRequest, public_key: Any) -> x509.Certificate:
        common_names = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if "forbidden" in common_names:
            raise EnrollRejected("CN=forbidden is not allowed by this CA; request another name")
        if "pending" in common_names:
            raise EnrollPending(42)
        try:
            sans = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            sans = []
        usages = (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH)
        return self.issuer.issue(csr.subject, public_key, sans, usages=usages)


@dataclass
class Pki:
    """Everything the server tests need, also written as PEM files for curl and openssl."""

    directory: Path
    tls_root: Issuer
    server_key: rsa.RSAPrivateKey
    server_certificate: x509.Certificate
    alpha: Issuer
    beta: Issuer
    bootstrap_ca: Issuer
    bootstrap_key: ec.EllipticCurvePrivateKey
    bootstrap_certificate: x509.Certificate
    files: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def create(cls, directory: Path) -> Pki:
        tls_root = Issuer.self_signed("EST Test TLS Root")
        server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        localhost = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        server_certificate = tls_root.issue(
            name("localhost"), server_key.public_key(), localhost, usages=(ExtendedKeyUsageOID.SERVER_AUTH,)
        )
        bootstrap_ca = Issuer.self_signed("Bootstrap Client CA")
        bootstrap_key = ec_key()
        bootstrap_certificate = bootstrap_ca.issue(name("bootstrap-device"), bootstrap_key.public_key())
        pki = cls(
            directory,
            tls_root,
            server_key,
            server_certificate,
            Issuer.self_signed("Alpha EST CA"),
            Issuer.self_signed("Beta EST CA"),
            bootstrap_ca,
            bootstrap_key,
            bootstrap_certificate,
        )
        pki.files = {
            "tls-root": pki.write("tls-root.pem", pem(tls_root.certificate)),
            "alpha": pki.write("alpha.pem", pem(pki.alpha.certificate)),
            "beta": pki.write("beta.pem", pem(pki.beta.certificate)),
            "bootstrap-cert": pki.write("bootstrap.pem", pem(bootstrap_certificate)),
            "bootstrap-key": pki.write("bootstrap.key", key_pem(bootstrap_key)),
        }
        return pki

    def write(self, filename: str, content: bytes) -> Path:
        path = self.directory / filename
        path.write_bytes(content)
        return path

    def server_chain_pem(self) -> bytes:
        return pem(self.server_certificate)

    def server_key_pem(self) -> bytes:
        return key_pem(self.server_key)


class LoopThread:
    """An event loop on a thread: the server lives there, so tests can block on curl and openssl."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="est-server-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass
class RunningServer:
    server: EstServer
    tls: ServerTls
    thread: LoopThread
    audit: list[AuditRecord]

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}/.well-known/est/{path}"


def curl(pki: Pki, url: str, *options: str | Path, data: Path | None = None) -> Response:
    """One request with curl, trusting only the test TLS root (the Explicit TA of RFC 7030)."""
    return curl_trusting(pki.files["tls-root"], pki.directory, url, *options, data=data)


def openssl_csr(
    pki: Pki, stem: str, subject: str, sans: str | None = None, *, key: Path | None = None
) -> tuple[Path, Path]:
    """A CSR made by openssl: (base64 DER body file, key file)."""
    return openssl_csr_in(pki.directory, stem, subject, sans, key=key)


def openssl_csr_in(
    directory: Path,
    stem: str,
    subject: str,
    sans: str | None = None,
    *,
    key: Path | None = None,
    extensions: Sequence[str] = (),
) -> tuple[Path, Path]:
    """A CSR made by openssl in ``directory``, as EST wants it: (base64 DER body file, key file); a new
    P-256 key unless ``key`` is given; ``extensions`` requested as openssl's -addext writes them."""
    key_file = key or directory / f"{stem}.key"
    args: list[str | Path] = ["openssl", "req", "-new", "-subj", subject, "-outform", "DER"]
    if key is None:
        args += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key_file]
    else:
        args += ["-key", key]
    if sans:
        args += ["-addext", f"subjectAltName={sans}"]
    for extension in extensions:
        args += ["-addext", extension]
    der_file = directory / f"{stem}.der"
    run([*args, "-out", der_file])
    b64_file = directory / f"{stem}.b64"
    run(["openssl", "base64", "-in", der_file, "-out", b64_file])
    return b64_file, key_file


# --- raw connections, for timeouts and connection limits ----------------------------------------------


def tcp_connection(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A TCP connection to the server on 127.0.0.1 from the loopback address ``source``."""
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def tls_connection(pki: Pki, port: int, source: str = "127.0.0.1") -> ssl.SSLSocket:
    """A TLS connection (handshake done) trusting the test TLS root, from the loopback address ``source``."""
    context = ssl.create_default_context(cafile=str(pki.files["tls-root"]))
    return context.wrap_socket(tcp_connection(port, source), server_hostname="localhost")


def closed_by_server(connection: socket.socket, within: float = 5.0) -> bool:
    """Whether the peer closes the connection before ``within`` seconds pass (reads, discarding, to EOF)."""
    deadline = time.monotonic() + within
    try:
        while (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            if connection.recv(65536) == b"":
                return True
    except (ssl.SSLError, ConnectionError):
        return True
    except TimeoutError:
        return False
    return False


def get_cacerts(connection: ssl.SSLSocket) -> bytes:
    connection.sendall(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n\r\n")
    return connection.recv(65536)
