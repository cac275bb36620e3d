"""Certificates and requests pickle as their DER encoding.

``cryptography``'s X.509 objects do not pickle by themselves; issuance jobs sent to signing processes
(``keyward.keystore.processes``) carry them, so they travel as DER and are parsed again on arrival.
Registered with ``copyreg`` when ``keyward.pki`` is imported.
"""

from __future__ import annotations

import copyreg
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


def load_certificate(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def load_request(der: bytes) -> x509.CertificateSigningRequest:
    return x509.load_der_x509_csr(der)


def _certificate(certificate: x509.Certificate) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
    return load_certificate, (certificate.public_bytes(Encoding.DER),)


def _request(request: x509.CertificateSigningRequest) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
    return load_request, (request.public_bytes(Encoding.DER),)


copyreg.pickle(x509.Certificate, _certificate)
copyreg.pickle(x509.CertificateSigningRequest, _request)
