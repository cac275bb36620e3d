"""Signing requests as an SGX workload makes them: a CSR carrying its quote, the quoted key and the nonce.

There is no SGX enclave here, so the quote is laid out as sgx_quote_t version 3 is (header, report body,
signature data of the length it states) with made-up content: keyward checks the layout, and the verdict
on the content is the key manager's (in the tests, the test acting as the attestation controller)."""

from __future__ import annotations

import base64
import os
import struct

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from keyward.issuers.tcs.quotes import OID_QUOTE, OID_QUOTE_NONCE, OID_QUOTE_PUBLIC_KEY


def sgx_quote(signature_bytes: int = 64) -> bytes:
    """sgx_quote_t v3 with an ECDSA P-256 attestation key, random report body and signature data."""
    header = struct.pack("<HH", 3, 2) + os.urandom(44)
    return header + os.urandom(384) + struct.pack("<I", signature_bytes) + os.urandom(signature_bytes)


def exported_public_key(key: rsa.RSAPublicKey) -> bytes:
    """The Crypto API Toolkit's export of an RSA public key: CK_RSA_PUBLIC_KEY_PARAMS || e || n."""
    numbers = key.public_numbers()
    exponent = numbers.e.to_bytes(3, "big")
    modulus = numbers.n.to_bytes(key.key_size // 8, "big")
    return struct.pack("@LL", len(exponent), len(modulus)) + exponent + modulus


def base64_string(data: bytes) -> bytes:
    """An SGX extension's value: a DER UTF8String of the base64 text."""
    return bytes(core.UTF8String(base64.b64encode(data).decode()).dump())


def sgx_csr(
    cn: str = "sgx-workload.example",
    *,
    quote: bytes | None = None,
    public_key: bytes | None = None,
    nonce: bytes | None = None,
    values: dict[x509.ObjectIdentifier, bytes] | None = None,
) -> x509.CertificateSigningRequest:
    """A CSR with the three SGX extensions (each overridable, or replaced whole by ``values``)."""
    if public_key is None:
        public_key = exported_public_key(rsa.generate_private_key(65537, 3072).public_key())
    extensions = {
        OID_QUOTE: base64_string(quote if quote is not None else sgx_quote()),
        OID_QUOTE_PUBLIC_KEY: base64_string(public_key),
        OID_QUOTE_NONCE: base64_string(nonce if nonce is not None else os.urandom(32)),
    }
    extensions.update(values or {})
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    for oid, value in extensions.items():
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
    return builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
