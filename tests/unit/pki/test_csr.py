"""Loading requests: what is accepted, and every way a request is refused for good."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding

from keyward.pki.csr import NOT_A_CSR, decode_request_field, load_csr
from keyward.pki.errors import RequestError
from keyward.pki.issue import CertificateAuthority
from tests.support.pki import der, make_csr, pem


def test_loads_pem(leaf_key: ec.EllipticCurvePrivateKey) -> None:
    csr = make_csr(leaf_key, "pem.example")
    assert load_csr(pem(csr)) == csr


def test_loads_pem_wrapped_in_whitespace(leaf_key: ec.EllipticCurvePrivateKey) -> None:
    csr = make_csr(leaf_key, "pem.example")
    assert load_csr(b"\n\n  \t" + pem(csr) + b"\r\n\n  ") == csr


def test_loads_der(leaf_key: ec.EllipticCurvePrivateKey) -> None:
    csr = make_csr(leaf_key, "der.example")
    assert load_csr(der(csr)) == csr


def test_der_ending_in_a_whitespace_byte_is_kept_intact(leaf_key: ec.EllipticCurvePrivateKey) -> None:
    # ECDSA signatures are random: about one DER CSR in forty ends in a byte such as 0x0a or 0x20.
    for _ in range(5000):
        data = der(make_csr(leaf_key))
        if data[-1:].isspace():
            break
    assert data[-1:].isspace()
    assert load_csr(data).public_bytes(Encoding.DER) == data


def test_decodes_cert_manager_request_field(leaf_key: ec.EllipticCurvePrivateKey) -> None:
    csr_pem = pem(make_csr(leaf_key))
    encoded = base64.b64encode(csr_pem)
    assert decode_request_field(encoded.decode()) == csr_pem
    assert decode_request_field(encoded) == csr_pem
    wrapped = b"\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    assert decode_request_field(wrapped.decode()) == csr_pem


@pytest.mark.parametrize("value", ["not base64!", "QUJD*", "QUJDRA=x", "\u00e9t\u00e9"])
def test_bad_base64_is_a_request_error(value: str) -> None:
    with pytest.raises(RequestError, match=r"spec\.request is not valid base64"):
        decode_request_field(value)


@pytest.mark.parametrize("value", ["", "  \n", b""])
def test_empty_request_field_is_a_request_error(value: str | bytes) -> None:
    with pytest.raises(RequestError, match=r"spec\.request is empty"):
        decode_request_field(value)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world",
        b"-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgY3Ny\n-----END CERTIFICATE REQUEST-----\n",
        b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        b"\x30\x03\x02\x01\x00",
    ],
)
def test_not_a_csr_is_a_request_error(data: bytes) -> None:
    with pytest.raises(RequestError, match="request is not a PEM or DER PKCS#10 certificate signing request"):
        load_csr(data)


def test_a_certificate_is_not_a_csr(ca: CertificateAuthority) -> None:
    with pytest.raises(RequestError, match=NOT_A_CSR):
        load_csr(pem(ca.certificate))
    with pytest.raises(RequestError, match=NOT_A_CSR):
        load_csr(der(ca.certificate))


def test_tampered_signature_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    tampered = bytearray(der(make_csr(rsa_key, "victim.example")))
    tampered[-1] ^= 0x01  # the last byte of a DER CSR is the last byte of its signature
    with pytest.raises(RequestError, match="signature does not verify"):
        load_csr(bytes(tampered))


def test_subject_changed_after_signing_is_refused(leaf_key: ec.EllipticCurvePrivateKey) -> None:
    original = der(make_csr(leaf_key, "victim.example"))
    forged = original.replace(b"victim.example", b"attack.example")
    assert forged != original
    with pytest.raises(RequestError, match="no proof of possession"):
        load_csr(forged)


def test_one_mebibyte_is_refused_before_parsing() -> None:
    with pytest.raises(RequestError, match="1048576 bytes, larger than the limit of 65536 bytes"):
        load_csr(b"A" * 1024 * 1024)


def test_size_limit_is_adjustable(leaf_key: ec.EllipticCurvePrivateKey) -> None:
    data = pem(make_csr(leaf_key))
    with pytest.raises(RequestError, match="larger than the limit of 100 bytes"):
        load_csr(data, max_size=100)
    assert load_csr(data, max_size=len(data)).subject == make_csr(leaf_key).subject


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="P-384"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP521R1()), id="P-521"),
        pytest.param(ed25519.Ed25519PrivateKey.generate, id="Ed25519"),
    ],
)
def test_accepted_key_types(key: object) -> None:
    private_key: CertificateIssuerPrivateKeyTypes = key()  # type: ignore[operator]
    csr = make_csr(private_key)
    assert load_csr(pem(csr)) == csr


def test_rsa_2048_is_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    assert load_csr(pem(make_csr(rsa_key))).public_key().key_size == 2048  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("key", "named"),
    [
        pytest.param(lambda: rsa.generate_private_key(65537, 1024), "RSA-1024", id="RSA-1024"),
        pytest.param(lambda: dsa.generate_private_key(2048), "DSA-2048", id="DSA"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP256K1()), "ECDSA secp256k1", id="secp256k1"),
        pytest.param(ed448.Ed448PrivateKey.generate, "Ed448", id="Ed448"),
    ],
)
def test_refused_key_types_are_named(key: object, named: str) -> None:
    private_key: CertificateIssuerPrivateKeyTypes = key()  # type: ignore[operator]
    with pytest.raises(RequestError) as caught:
        load_csr(pem(make_csr(private_key)))
    assert f"the request's key is {named}" in str(caught.value)
    assert "RSA of at least 2048 bits" in str(caught.value)


def test_requested_extensions_are_parsed_up_front(leaf_key: ec.EllipticCurvePrivateKey) -> None:
    csr = make_csr(leaf_key, sans=[x509.DNSName("a.example")])
    assert load_csr(pem(csr)).extensions.get_extension_for_class(x509.SubjectAlternativeName)


#: A PKCS#10 request whose CertificationRequestInfo says version 4 (only 0 exists), found by the EST
#: server's fuzzer: cryptography refuses it with InvalidVersion, which is not a ValueError.
VERSION_4_CSR = base64.b64decode(
    "MIHMMHMCAQQwETEPMA0GA1UEAwwGZnV6emVkMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8SPROvdzKoYhnY4lqjJTeD89yFOvd4Qy"
    "6aiOwa4hBh0PfgEGtuVycQKtPSpJ0C6AkK5nIzGsbz7ULWuWcnDSM6AAMAoGCCqGSM49BAMCA0kAMEYCIQD5rx3isj2G/960ScFZDA"
    "N1d897PlE+hcJFxQKs9IEJMQIhAMvBk1nGOsRh+OqVEnrexqQ3ZMvA68O0cksykyYL621D"
)


def test_a_request_of_an_unknown_version_is_a_request_error() -> None:
    with pytest.raises(RequestError, match=NOT_A_CSR):
        load_csr(VERSION_4_CSR)
