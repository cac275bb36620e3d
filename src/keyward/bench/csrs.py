"""Requests to certify, generated before any clock starts (EC P-256: cheap to make and to verify)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def leaf_csr_pem(common_name: str) -> bytes:
    """A PEM PKCS#10 request for ``common_name``, with it as the DNS subjectAltName too."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def leaf_csr_pems(count: int, domain: str = "bench.keyward.test") -> list[bytes]:
    return [leaf_csr_pem(f"leaf-{index}.{domain}") for index in range(count)]
