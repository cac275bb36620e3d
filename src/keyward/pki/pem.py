"""PEM certificate chains, leaf first, as cert-manager and Kubernetes CSRs carry them."""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509
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
