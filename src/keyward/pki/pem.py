"""PEM certificate chains, leaf first, as cert-manager and Kubernetes CSRs carry them."""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding


def pem_chain(certificates: Iterable[x509.Certificate]) -> bytes:
    """Concatenate certificates as PEM ``CERTIFICATE`` blocks, in the order given."""
    return b"".join(certificate.public_bytes(Encoding.PEM) for certificate in certificates)


def load_pem_chain(data: bytes) -> list[x509.Certificate]:
    """All PEM ``CERTIFICATE`` blocks in ``data``, in order; ``ValueError`` when there is none or one is
    malformed."""
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(
            "expected one or more PEM CERTIFICATE blocks, found none or a malformed one"
        ) from None


def unique_certificates(certificates: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    """Certificates without duplicates, first occurrence kept (for building anchor sets of many CAs)."""
    seen: set[bytes] = set()
    result: list[x509.Certificate] = []
    for certificate in certificates:
        fingerprint = certificate.fingerprint(hashes.SHA256())
        if fingerprint not in seen:
            seen.add(fingerprint)
            result.append(certificate)
    return result
