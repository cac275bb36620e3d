"""PEM certificate chains, leaf first, as cert-manager and Kubernetes CSRs carry them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
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


def is_self_signed(certificate: x509.Certificate) -> bool:
    """A root: its own issuer, and its signature verifies with its own key."""
    if certificate.subject != certificate.issuer:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def split_chain(chain: Sequence[x509.Certificate]) -> tuple[list[x509.Certificate], x509.Certificate]:
    """cert-manager's convention for a request's status, from a chain leaf first: (``status.certificate``,
    ``status.ca``). The certificate chain is the leaf and its intermediates, never a self-signed root (it
    would land in workloads' ``tls.crt``); ``ca`` is the top of the chain — the root, or the highest
    intermediate when the root is not in the chain. A lone self-signed certificate stays the chain."""
    top = chain[-1]
    if len(chain) > 1 and is_self_signed(top):
        return list(chain[:-1]), top
    return list(chain), top
