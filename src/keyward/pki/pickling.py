"""Certificates and requests pickle as their DER encoding.

``cryptography``'s X.509 objects do not pickle by themselves; issuance jobs sent to signing processes
(``keyward.keystore.processes``) carry them, so they travel as DER and are parsed again on arrival.
Registered with ``copyreg`` when ``keyward.pki`` is imported.

Certificates are encoded and parsed through small caches: every job carries its CA's certificate and
every answer brings it back, so the same few CA certificates travel thousands of times (``public_bytes``
encodes anew at each call). Parsed once, a CA certificate also stays the same object, which keeps
``CertificateAuthority``'s own cache hitting. Certificates are immutable, so sharing them is safe.
"""

from __future__ import annotations

import copyreg
import functools
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

#: Certificates each cache keeps: the CAs in use (hit by every job) and the latest leaves (seen once).
CACHED_CERTIFICATES = 128


@functools.lru_cache(maxsize=CACHED_CERTIFICATES)
def load_certificate(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def load_request(der: bytes) -> x509.CertificateSigningRequest:
    return x509.load_der_x509_csr(der)


@functools.lru_cache(maxsize=CACHED_CERTIFICATES)
def certificate_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


def _certificate(certificate: x509.Certificate) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
    return load_certificate, (certificate_der(certificate),)


def _request(request: x509.CertificateSigningRequest) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
    return load_request, (request.public_bytes(Encoding.DER),)


copyreg.pickle(x509.Certificate, _certificate)
copyreg.pickle(x509.CertificateSigningRequest, _request)
