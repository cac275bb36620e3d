"""Requests to certify, generated before any clock starts.

They carry an RSA-2048 key, the key cert-manager gives a Certificate by default (spec.privateKey), so
the proof-of-possession check costs what it costs for most requests an operator sees. One key serves all
of them: only the names differ, and nothing in issuance depends on the key being new.
"""

from __future__ import annotations

import functools

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

#: What the report says the requests carry.
CSR_KEY = "RSA-2048 (cert-manager's default private key)"


@functools.cache
def _requester_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def leaf_csr_pem(common_name: str) -> bytes:
    """A PEM PKCS#10 request for ``common_name``, with it as the DNS subjectAltName too."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(_requester_key(), hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def leaf_csr_pems(count: int, domain: str = "bench.keyward.test") -> list[bytes]:
    return [leaf_csr_pem(f"leaf-{index}.{domain}") for index in range(count)]
