"""EST bodies both ways: round trips, RFC 7030's own example, and garbage that is only ever a WireError."""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyward.est import wire
from keyward.est.wire import CsrAttribute, CsrAttrs, WireError
from tests.support.pki import Issuer, ec_key, name

from .conftest import RFC7030_CSRATTRS

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ISSUERS = [Issuer.self_signed(f"Pool CA {i}") for i in range(3)]
CERTIFICATES = [issuer.certificate for issuer in ISSUERS]
CSR = (
    x509.CertificateSigningRequestBuilder().subject_name(name("wire.example")).sign(ec_key(), hashes.SHA256())
)


def whitespace_sprinkled(data: st.DataObject, text: bytes) -> bytes:
    """Insert spaces, tabs and line breaks at random places, as RFC 8951 receivers must tolerate."""
    pieces = []
    for byte in text:
        pieces.append(bytes([byte]))
        pieces.append(data.draw(st.sampled_from([b"", b"", b"", b"\n", b"\r\n", b" ", b"\t"])))
    return b"".join(pieces)


@FAST
@given(payload=st.binary(min_size=1, max_size=400), data=st.data())
def test_base64_round_trip_ignores_whitespace(payload: bytes, data: st.DataObject) -> None:
    encoded = wire.encode_base64(payload)
    assert all(len(line) <= 64 for line in encoded.splitlines())
    assert wire.decode_base64(encoded, "x") == payload
    assert wire.decode_base64(whitespace_sprinkled(data, encoded), "x") == payload
    assert wire.decode_base64(base64.b64encode(payload).rstrip(b"="), "x") == payload


@pytest.mark.parametrize(
    ("body", "explanation"),
    [
        (b"", "empty"),
        (b" \r\n", "empty"),
        (b"abc*", "not valid base64"),
        (b"QUJDR", "truncated"),
        (b"-----BEGIN CERTIFICATE REQUEST-----", "PEM"),
        ("é".encode(), "not valid base64"),
    ],
)
def test_base64_garbage_is_a_wire_error_naming_the_problem(body: bytes, explanation: str) -> None:
    with pytest.raises(WireError, match=explanation):
        wire.decode_base64(body, "a PKCS#10 request")


def test_csr_round_trip() -> None:
    assert wire.decode_csr(wire.encode_csr(CSR)) == CSR
    assert wire.csr_signature_valid(CSR)


@FAST
@given(certificates=st.lists(st.sampled_from(CERTIFICATES), min_size=1, max_size=3, unique=True))
def test_certs_only_round_trip(certificates: list[x509.Certificate]) -> None:
    decoded = wire.decode_certs_only(wire.encode_certs_only(certificates))
    # A PKCS#7 carries a SET: DER sorts it, so only membership survives.
    assert sorted(c.serial_number for c in decoded) == sorted(c.serial_number for c in certificates)


def test_leaf_first_restores_chain_order() -> None:
    root = Issuer.self_signed("Chain Root")
    intermediate_key = ec_key()
    intermediate = root.issue(name("Chain Intermediate"), intermediate_key.public_key())
    leaf = Issuer(intermediate, intermediate_key).issue(name("chain-leaf"), ec_key().public_key())
    decoded = wire.decode_certs_only(wire.encode_certs_only([leaf, intermediate, root.certificate]))
    assert wire.leaf_first(decoded) == [leaf, intermediate, root.certificate]


def test_certs_only_without_certificates_is_an_error() -> None:
    with pytest.raises(WireError):
        wire.encode_certs_only([])


def test_rfc7030_csrattrs_example() -> None:
    attrs = wire.decode_csrattrs(RFC7030_CSRATTRS)
    oid = x509.ObjectIdentifier
    assert attrs.items == (
        oid("1.2.840.113549.1.9.7"),
        CsrAttribute(oid("1.2.840.10045.2.1"), (wire.oid_value(oid("1.3.132.0.34")),)),
        CsrAttribute(oid("1.2.840.113549.1.9.14"), (wire.oid_value(oid("1.3.6.1.1.1.1.22")),)),
        oid("1.2.840.10045.4.3.3"),
    )
    assert base64.b64decode(wire.encode_csrattrs(attrs)) == base64.b64decode(RFC7030_CSRATTRS)


@pytest.mark.parametrize("tail", [b"\x00", b"\n\x00", b"\x00\x00\r\n", b" \t\n", b"\r\n\x00 \x00"])
def test_csrattrs_with_trailing_nul_bytes_and_whitespace(tail: bytes) -> None:
    # RFC 8951 asks receivers to ignore whitespace; libest ends its /csrattrs answer with a NUL byte.
    body = RFC7030_CSRATTRS.encode()
    assert wire.decode_csrattrs(body + tail) == wire.decode_csrattrs(body)


def test_nul_bytes_inside_base64_are_still_an_error() -> None:
    body = RFC7030_CSRATTRS.encode()
    with pytest.raises(WireError, match="not valid base64"):
        wire.decode_csrattrs(body[:20] + b"\x00" + body[20:])


OIDS = st.builds(
    lambda first, second, rest: x509.ObjectIdentifier(".".join(map(str, [first, second, *rest]))),
    st.integers(0, 2),
    st.integers(0, 39),
    st.lists(st.integers(0, 2**40), max_size=5),
)
VALUES = st.one_of(
    OIDS.map(wire.oid_value),
    st.binary(max_size=60).map(lambda b: bytes([0x04, len(b)]) + b),  # OCTET STRING
    st.integers(0, 127).map(lambda i: bytes([0x02, 0x01, i])),  # INTEGER
)
ATTRS = st.builds(
    CsrAttrs,
    st.lists(
        st.one_of(OIDS, st.builds(CsrAttribute, OIDS, st.lists(VALUES, min_size=1, max_size=4).map(tuple))),
        max_size=6,
    ).map(tuple),
)


@FAST
@given(attrs=ATTRS)
def test_csrattrs_round_trip(attrs: CsrAttrs) -> None:
    assert wire.decode_csrattrs(wire.encode_csrattrs(attrs)) == attrs


def test_csr_attribute_needs_well_formed_values() -> None:
    with pytest.raises(WireError, match="no value"):
        CsrAttribute(x509.ObjectIdentifier("1.2.3"), ())
    with pytest.raises(WireError, match=r"not one DER-encoded ASN\.1 element"):
        CsrAttribute(x509.ObjectIdentifier("1.2.3"), (b"\x04\x05ab",))


VALID_DER = [
    base64.b64decode(RFC7030_CSRATTRS),
    CSR.public_bytes(serialization.Encoding.DER),
    base64.b64decode(wire.encode_certs_only(CERTIFICATES[:2])),
]


@st.composite
def garbage(draw: st.DrawFn) -> bytes:
    """Random bytes, or a valid message with some bytes changed or cut off: the parser's hard cases."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    der = bytearray(draw(st.sampled_from(VALID_DER)))
    for _ in range(draw(st.integers(1, 4))):
        der[draw(st.integers(0, len(der) - 1))] = draw(st.integers(0, 255))
    return bytes(der[: draw(st.integers(0, len(der)))])


@settings(max_examples=300, deadline=None)
@given(der=garbage(), raw=st.booleans())
def test_decoders_raise_only_wire_errors(der: bytes, raw: bool) -> None:
    body = der if raw else base64.b64encode(der)
    for decode in (wire.decode_csr, wire.decode_certs_only, wire.decode_csrattrs):
        with contextlib.suppress(WireError):
            decode(body)


KEY = ec_key().private_bytes(
    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)


def test_serverkeygen_round_trip_and_shape() -> None:
    content_type, body = wire.encode_serverkeygen(KEY, CERTIFICATES[:1])
    assert content_type.startswith('multipart/mixed; boundary="est-')
    assert b"Content-Type: application/pkcs8" in body
    assert b"Content-Type: application/pkcs7-mime; smime-type=certs-only" in body
    decoded = wire.decode_serverkeygen(content_type, body)
    assert decoded.private_key_pkcs8 == KEY
    assert decoded.certificates == (CERTIFICATES[0],)
    assert "bytes" in repr(decoded) and KEY.hex() not in repr(decoded)


def test_serverkeygen_malformed_responses() -> None:
    content_type, body = wire.encode_serverkeygen(KEY, CERTIFICATES[:1])
    boundary = content_type.split('"')[1].encode()
    only_key = body.split(b"--" + boundary)[1]
    cases = [
        (
            content_type,
            b"--" + boundary + only_key + b"--" + boundary + b"--\r\n",
            "needs an application/pkcs8",
        ),
        (content_type, body.replace(b"--" + boundary, b"--other"), "malformed"),
        ("application/pkcs7-mime", body, "must be multipart/mixed"),
        (content_type + "\r\nX-Injected: 1", body, "line break"),
        (
            content_type,
            body.replace(b"smime-type=certs-only", b"smime-type=server-generated-key"),
            "encrypted",
        ),
        (content_type, body.replace(b"application/pkcs8\r\n", b"application/pkcs8\r\n\r\n!!"), "base64"),
    ]
    for case_type, case_body, explanation in cases:
        with pytest.raises(WireError, match=explanation):
            wire.decode_serverkeygen(case_type, case_body)


@settings(max_examples=200, deadline=None)
@given(content_type=st.text(max_size=80), body=st.binary(max_size=300))
def test_serverkeygen_garbage_raises_only_wire_errors(content_type: str, body: bytes) -> None:
    for header in (
        content_type,
        'multipart/mixed; boundary="b"',
        "multipart/mixed; boundary=" + content_type,
    ):
        with contextlib.suppress(WireError):
            wire.decode_serverkeygen(header, body)


NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("99999999999999999999999", 3600.0),
        ("Tue, 01 Jan 2030 12:01:30 GMT", 90.0),
        ("Tuesday, 01-Jan-30 12:00:10 GMT", 10.0),
        ("Tue Jan  1 12:00:05 2030", 5.0),
        ("Mon, 31 Dec 2029 12:00:00 GMT", 0.0),
        ("Wed, 01 Jan 2031 12:00:00 GMT", 3600.0),
    ],
)
def test_retry_after(value: str, seconds: float) -> None:
    assert wire.parse_retry_after(value, now=NOW, max_seconds=3600.0) == seconds


def test_retry_after_default_reference_time_is_now() -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=100)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 90 <= wire.parse_retry_after(soon) <= 100


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=60))
def test_retry_after_garbage_raises_only_wire_errors(value: str) -> None:
    try:
        seconds = wire.parse_retry_after(value, now=NOW)
    except WireError:
        return
    assert 0.0 <= seconds <= wire.DEFAULT_MAX_RETRY_AFTER


def test_a_request_of_an_unknown_version_is_a_wire_error_not_a_crash() -> None:
    from tests.unit.pki.test_csr import VERSION_4_CSR

    with pytest.raises(WireError, match="not a usable DER PKCS#10 request"):
        wire.decode_csr(base64.b64encode(VERSION_4_CSR))
