"""Requests carrying SGX evidence: never signed before their very quote is verified, then signed with the
seed's "SGX Quote has been verified" extension; malformed evidence fails the request with the reason."""

from __future__ import annotations

import base64
import os
from datetime import timedelta

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyward.issuers.contract import from_csr
from keyward.issuers.objects import RequestFields
from keyward.issuers.tcs.ca import decode_and_sign
from keyward.issuers.tcs.quotes import (
    OID_QUOTE,
    OID_QUOTE_NONCE,
    OID_QUOTE_PUBLIC_KEY,
    QuoteEvidence,
    quote_evidence,
)
from keyward.pki.errors import RequestError
from keyward.pki.issue import CertificateAuthority, IssuedCertificate, self_signed_ca
from keyward.pki.profile import IssuerPolicy
from tests.support.pki import pem

from .sgx_requests import base64_string, exported_public_key, sgx_csr, sgx_quote


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "quote test CA")])
    return CertificateAuthority(certificate=self_signed_ca(key, name, timedelta(days=30)), key=key)


def csr_object(csr: x509.CertificateSigningRequest) -> RequestFields:
    """What a signing process gets of a CSR object."""
    body = {"spec": {"request": base64.b64encode(pem(csr)).decode(), "usages": ["client auth"]}}
    return RequestFields.from_body(body)


def test_a_request_without_sgx_extensions_is_signed_as_ever(ca: CertificateAuthority) -> None:
    plain = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "plain.example")])
    )
    csr = plain.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    issued = decode_and_sign(from_csr, csr_object(csr), ca, IssuerPolicy())
    assert isinstance(issued, IssuedCertificate)
    assert OID_QUOTE not in {extension.oid for extension in issued.certificate.extensions}


def test_a_request_with_a_quote_is_never_signed_before_that_quote_is_verified(
    ca: CertificateAuthority,
) -> None:
    quote, nonce = sgx_quote(), os.urandom(32)
    quoted = rsa.generate_private_key(65537, 3072).public_key()
    csr = sgx_csr(quote=quote, public_key=exported_public_key(quoted), nonce=nonce)

    for verified in (None, sgx_quote()):  # no verdict yet, or a verdict on another quote
        evidence = decode_and_sign(from_csr, csr_object(csr), ca, IssuerPolicy(), verified)
        assert isinstance(evidence, QuoteEvidence), "the evidence comes back, nothing is signed"
    assert evidence.quote == quote and evidence.nonce == nonce
    published = serialization.load_pem_public_key(evidence.public_key_pem)
    assert isinstance(published, rsa.RSAPublicKey) and published.public_numbers() == quoted.public_numbers()

    issued = decode_and_sign(from_csr, csr_object(csr), ca, IssuerPolicy(), quote)
    assert isinstance(issued, IssuedCertificate)
    added = issued.certificate.extensions.get_extension_for_oid(OID_QUOTE)
    assert not added.critical
    assert isinstance(added.value, x509.UnrecognizedExtension)
    verified_text = core.Asn1Value.load(added.value.value)
    assert isinstance(verified_text, core.UTF8String)
    assert verified_text.native == "SGX Quote has been verified"
    oids = {extension.oid for extension in issued.certificate.extensions}
    assert OID_QUOTE_PUBLIC_KEY not in oids and OID_QUOTE_NONCE not in oids, "the request's are not copied"


WEAK = rsa.generate_private_key(65537, 1024).public_key()


def _octet_string(data: bytes) -> bytes:
    return bytes(core.OctetString(data).dump())


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ({OID_QUOTE: core.UTF8String("not base64 !").dump()}, "is a string but not base64 text"),
        ({OID_QUOTE: _octet_string(base64.b64encode(sgx_quote()))}, "not a DER string of base64 text"),
        ({OID_QUOTE: base64_string(b"hello, I am a quote")}, "does not hold an SGX ECDSA quote: 19 bytes"),
        ({OID_QUOTE: base64_string(b"\x04\x00" + sgx_quote()[2:])}, "version 4"),
        ({OID_QUOTE: base64_string(sgx_quote() + b"\x00")}, "states 64 bytes of signature data"),
        ({OID_QUOTE_PUBLIC_KEY: base64_string(b"\x01" * 20)}, "does not hold an RSA public key"),
        ({OID_QUOTE_PUBLIC_KEY: base64_string(exported_public_key(WEAK))}, "an RSA-1024 key"),
        ({OID_QUOTE_NONCE: base64_string(b"")}, "nonce extension (1.3.6.1.4.1.54392.5.1547) is empty"),
    ],
    ids=[
        "quote-not-base64",
        "quote-not-a-string",
        "content-not-a-quote",
        "quote-version",
        "quote-length",
        "public-key-malformed",
        "public-key-weak",
        "nonce-empty",
    ],
)
def test_malformed_sgx_evidence_fails_the_request_with_the_reason(
    values: dict[x509.ObjectIdentifier, bytes], said: str, ca: CertificateAuthority
) -> None:
    with pytest.raises(RequestError, match=said.replace("(", r"\(").replace(")", r"\)")):
        decode_and_sign(from_csr, csr_object(sgx_csr(values=values)), ca, IssuerPolicy(), b"anything")


@pytest.mark.parametrize("missing", [OID_QUOTE_PUBLIC_KEY, OID_QUOTE_NONCE])
def test_a_quote_without_its_public_key_or_nonce_fails_the_request(missing: x509.ObjectIdentifier) -> None:
    csr = sgx_csr()
    builder = x509.CertificateSigningRequestBuilder().subject_name(csr.subject)
    for extension in csr.extensions:
        if extension.oid != missing:
            builder = builder.add_extension(extension.value, extension.critical)
    stripped = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    expected = rf"but no SGX quote [a-z ]+ extension \({missing.dotted_string}\)"
    with pytest.raises(RequestError, match=expected):
        quote_evidence(stripped)
