"""Loading a PKCS#10 request and checking it is one we can certify.

Everything that can be wrong with the bytes of a request is found here, before any signing, and reported
as a ``RequestError``: the request then fails for good instead of being retried.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from keyward.pki.errors import RequestError
from keyward.pki.keys import check_request_algorithms

DEFAULT_MAX_SIZE = 64 * 1024
NOT_A_CSR = "request is not a PEM or DER PKCS#10 certificate signing request"
_WHITESPACE = re.compile(rb"\s+")


def decode_request_field(value: str | bytes) -> bytes:
    """Decode cert-manager's ``spec.request`` (base64 of the PEM CSR); line breaks are tolerated."""
    raw = value.encode("ascii", errors="replace") if isinstance(value, str) else value
    compact = _WHITESPACE.sub(b"", raw)
    if not compact:
        raise RequestError("spec.request is empty; it must hold the base64 of a PEM PKCS#10 request")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            "spec.request is not valid base64; it must hold the base64 of a PEM PKCS#10 request"
        ) from None


def _parse(data: bytes) -> x509.CertificateSigningRequest:
    stripped = data.strip()
    try:
        if stripped.startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(stripped)
        # Never strip DER: its last signature byte may well be 0x0a or 0x20.
        return x509.load_der_x509_csr(data)
    except (ValueError, x509.InvalidVersion):
        raise RequestError(NOT_A_CSR) from None


def load_csr(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> x509.CertificateSigningRequest:
    """Parse a PEM or DER CSR and check it: size, structure, key policy and proof of possession.

    The signature check proves the requester holds the private key; without it anyone could get a
    certificate for someone else's public key.
    """
    if len(data) > max_size:
        raise RequestError(
            f"request is {len(data)} bytes, larger than the limit of {max_size} bytes; "
            "a PKCS#10 request is normally a few kilobytes"
        )
    csr = _parse(data)
    try:
        csr.public_key()
        # Parse the subject and the extensions now, so that issuing never trips over them later.
        _ = csr.subject
        _ = csr.extensions
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise RequestError(f"{NOT_A_CSR}: {exc}") from None
    check_request_algorithms(csr)
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise RequestError(
            "the request's signature does not verify (no proof of possession of the private "
            "key); create the request again, signed with the key it names"
        )
    return csr
