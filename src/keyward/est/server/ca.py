"""The CA side of the EST server: what a CA must offer to be served, and how it says no.

The server knows nothing about tokens or Kubernetes; the operator implements ``EstCa`` over its issuers,
and tests implement it with an in-memory CA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from cryptography import x509

from keyward.est.wire import CsrAttrs


@dataclass(frozen=True)
class ClientIdentity:
    """Who enrolled, for audit and for the CA's own policy.

    ``str()`` is ``basic:<user>`` for HTTP Basic, ``cert:<subject> serial 0x<hex>`` for a TLS client
    certificate. ``certificate`` is the client's TLS certificate when it authenticated with one.
    """

    method: Literal["basic", "cert"]
    name: str
    serial: int | None = None
    certificate: x509.Certificate | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_basic(cls, username: str) -> ClientIdentity:
        return cls("basic", username)

    @classmethod
    def from_certificate(cls, certificate: x509.Certificate) -> ClientIdentity:
        return cls("cert", certificate.subject.rfc4514_string(), certificate.serial_number, certificate)

    def __str__(self) -> str:
        if self.method == "basic":
            return f"basic:{self.name}"
        return f"cert:{self.name} serial {self.serial:#x}"


class EnrollRejected(Exception):
    """A policy refusal: the client gets 400 with ``str(exc)``, so say what is wrong and how to fix it."""


class EnrollPending(Exception):
    """The request is accepted but not issued yet: the client gets 202 and retries after ``retry_after``."""

    def __init__(self, retry_after: int, message: str = "the request is pending; repeat it later") -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class CaUnavailable(Exception):
    """The CA cannot sign right now (token down, CA expired): 503, with Retry-After when known."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EstCa(Protocol):
    """One CA served under one label. The synchronous methods run on the event loop: keep them cheap."""

    label: str

    def ca_certificates(self) -> Sequence[x509.Certificate]:
        """The CA chain for /cacerts; its certificates are also the issuers accepted for /simplereenroll."""
        ...

    def csr_attributes(self) -> CsrAttrs | None:
        """What /csrattrs returns; ``None`` (or no items) answers 204."""
        ...

    def check_basic(self, username: str, password: str) -> bool:
        """Whether HTTP Basic credentials may enroll; compare in constant time (``hmac.compare_digest``)."""
        ...

    def client_ca_trust(self) -> Sequence[x509.Certificate]:
        """Trust anchors for TLS client certificates that may enroll (each certificate is an anchor)."""
        ...

    async def enroll(
        self, csr: x509.CertificateSigningRequest, client: ClientIdentity, *, renewal: bool
    ) -> list[x509.Certificate]:
        """Sign ``csr`` (already checked: signature, and for renewals subject/SAN); leaf first.

        Raise ``EnrollRejected`` for a policy refusal, ``EnrollPending`` or ``CaUnavailable`` otherwise.
        """
        ...

    async def server_keygen(
        self, csr: x509.CertificateSigningRequest, client: ClientIdentity
    ) -> tuple[bytes, list[x509.Certificate]]:
        """Generate a key as ``csr`` asks, certify it: (unencrypted DER PKCS#8 key, chain with leaf first)."""
        ...
