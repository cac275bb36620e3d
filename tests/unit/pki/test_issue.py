"""Issuing certificates: what is copied from the CSR, what the profile decides, and how the CA signs."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keyward.pki.errors import IssuerError, RequestError
from keyward.pki.issue import (
    CLOCK_SKEW,
    CertificateAuthority,
    IssuedCertificate,
    certificate_matches_key,
    issue_certificate,
    load_pem_chain,
    pem_chain,
    self_signed_ca,
)
from keyward.pki.profile import IssuerPolicy, RequestProfile
from tests.support.pki import make_csr, name

from .helpers import NOW, extension, issue, plain_ca, validity

SANS: list[x509.GeneralName] = [
    x509.DNSName("app.example"),
    x509.DNSName("*.app.example"),
    x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/app"),
    x509.RFC822Name("ops@app.example"),
]


class OpaqueRSAKey(rsa.RSAPrivateKey):
    """Stands in for a token key: it signs, but its private part cannot be read."""

    def __init__(self, inner: rsa.RSAPrivateKey) -> None:
        self._inner = inner
        self.signatures = 0

    def sign(self, data: bytes, padding: Any, algorithm: Any) -> bytes:
        self.signatures += 1
        return self._inner.sign(data, padding, algorithm)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._inner.public_key()

    @property
    def key_size(self) -> int:
        return self._inner.key_size

    def decrypt(self, ciphertext: bytes, padding: Any) -> bytes:
        raise TypeError("the token key only signs")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise TypeError("the token key is not extractable")

    def private_bytes(self, *args: Any) -> bytes:
        raise TypeError("the token key is not extractable")

    def __copy__(self) -> OpaqueRSAKey:
        return self

    def __deepcopy__(self, memo: Any) -> OpaqueRSAKey:
        return self


# ---- what comes from the CSR ----


def test_subject_and_sans_are_copied(ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
            x509.NameAttribute(NameOID.COMMON_NAME, "app.example"),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject)
    csr = csr.add_extension(x509.SubjectAlternativeName(SANS), critical=False)
    certificate = issue(csr.sign(leaf_key, hashes.SHA256()), ca)
    assert certificate.subject == subject
    assert certificate.issuer == ca.certificate.subject
    san = extension(certificate, x509.SubjectAlternativeName)
    assert list(san.value) == SANS
    assert not san.critical
    assert certificate_matches_key(certificate, leaf_key.public_key())


def test_other_san_kinds_and_requested_extensions_are_ignored(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    csr = make_csr(
        leaf_key,
        sans=[
            x509.DNSName("kept.example"),
            x509.DirectoryName(name("someone else")),
            x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")),
            x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x03a@b"),
        ],
        extensions=[
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False),
            (x509.OCSPNoCheck(), False),
        ],
    )
    certificate = issue(csr, ca)
    assert list(extension(certificate, x509.SubjectAlternativeName).value) == [x509.DNSName("kept.example")]
    assert extension(certificate, x509.BasicConstraints).value.ca is False
    with pytest.raises(x509.ExtensionNotFound):
        extension(certificate, x509.ExtendedKeyUsage)
    with pytest.raises(x509.ExtensionNotFound):
        extension(certificate, x509.OCSPNoCheck)


def test_san_is_critical_when_the_subject_is_empty(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    certificate = issue(make_csr(leaf_key, None, sans=[x509.DNSName("only-san.example")]), ca)
    assert len(certificate.subject) == 0
    assert extension(certificate, x509.SubjectAlternativeName).critical


def test_neither_subject_nor_san_is_refused(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(RequestError, match="neither a subject nor subject alternative names"):
        issue(make_csr(leaf_key, None, sans=[x509.DirectoryName(name("dropped"))]), ca)


def test_key_identifiers(ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey) -> None:
    certificate = issue(make_csr(leaf_key), ca)
    ski = extension(certificate, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key())
    ca_ski = extension(ca.certificate, x509.SubjectKeyIdentifier).value
    assert extension(certificate, x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski.digest


def test_aki_falls_back_to_the_ca_key_when_the_ca_has_no_ski(
    ec_key: ec.EllipticCurvePrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    ca = CertificateAuthority(plain_ca(ec_key, "no ski", with_ski=False), ec_key)
    certificate = issue(make_csr(leaf_key), ca)
    expected = x509.AuthorityKeyIdentifier.from_issuer_public_key(ec_key.public_key())
    assert extension(certificate, x509.AuthorityKeyIdentifier).value == expected


# ---- usages and basic constraints ----


def test_default_usages_and_not_a_ca(ca: CertificateAuthority, rsa_key: rsa.RSAPrivateKey) -> None:
    certificate = issue(make_csr(rsa_key), ca)
    key_usage = extension(certificate, x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value.digital_signature and key_usage.value.key_encipherment
    assert not key_usage.value.key_cert_sign
    basic = extension(certificate, x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    with pytest.raises(x509.ExtensionNotFound):
        extension(certificate, x509.ExtendedKeyUsage)


def test_requested_usages_become_extensions(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    profile = RequestProfile(usages=("digital signature", "server auth", "client auth", "microsoft sgc"))
    certificate = issue(make_csr(leaf_key), ca, profile)
    eku = extension(certificate, x509.ExtendedKeyUsage)
    assert not eku.critical
    assert [oid.dotted_string for oid in eku.value] == [
        "1.3.6.1.5.5.7.3.1",
        "1.3.6.1.5.5.7.3.2",
        "1.3.6.1.4.1.311.10.3.3",
    ]
    assert extension(certificate, x509.KeyUsage).value.digital_signature
    assert not extension(certificate, x509.KeyUsage).value.key_encipherment


def test_only_extended_usages_leave_out_key_usage(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    certificate = issue(make_csr(leaf_key), ca, RequestProfile(usages=("server auth",)))
    with pytest.raises(x509.ExtensionNotFound):
        extension(certificate, x509.KeyUsage)


def test_unknown_usage_fails_the_request(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(RequestError, match='unknown usage "foo"'):
        issue(make_csr(leaf_key), ca, RequestProfile(usages=("foo",)))


def test_is_ca_is_refused_unless_allowed(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(RequestError, match="allowCA"):
        issue(make_csr(leaf_key), ca, RequestProfile(is_ca=True))


def test_allowed_is_ca_gives_a_ca_certificate(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    certificate = issue(make_csr(leaf_key), ca, RequestProfile(is_ca=True), IssuerPolicy(allow_ca=True))
    basic = extension(certificate, x509.BasicConstraints)
    assert basic.critical and basic.value.ca is True and basic.value.path_length is None
    key_usage = extension(certificate, x509.KeyUsage).value
    assert key_usage.key_cert_sign and key_usage.digital_signature


def test_sub_ca_path_length_stays_within_the_issuers(
    ec_key: ec.EllipticCurvePrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    allowed = IssuerPolicy(allow_ca=True)
    limited = CertificateAuthority(plain_ca(ec_key, "path length 2", path_length=2), ec_key)
    certificate = issue(make_csr(leaf_key), limited, RequestProfile(is_ca=True), allowed)
    assert extension(certificate, x509.BasicConstraints).value.path_length == 1
    last = CertificateAuthority(plain_ca(ec_key, "path length 0", path_length=0), ec_key)
    with pytest.raises(RequestError, match="path length constraint is 0"):
        issue(make_csr(leaf_key), last, RequestProfile(is_ca=True), allowed)


# ---- validity ----


def test_default_validity_is_90_days_backdated_5_minutes(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    assert validity(issue(make_csr(leaf_key), ca)) == (NOW - timedelta(minutes=5), NOW + timedelta(days=90))
    assert timedelta(minutes=5) == CLOCK_SKEW


def test_requested_duration_is_honoured(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    certificate = issue(make_csr(leaf_key), ca, RequestProfile(duration=timedelta(hours=1)))
    assert certificate.not_valid_after_utc == NOW + timedelta(hours=1)


def test_duration_is_capped_at_the_policy_maximum(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    certificate = issue(make_csr(leaf_key), ca, RequestProfile(duration=timedelta(days=5000)))
    assert certificate.not_valid_after_utc == NOW + timedelta(hours=8760)


def test_duration_below_the_minimum_fails(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(RequestError, match="below this issuer's minimum"):
        issue(make_csr(leaf_key), ca, RequestProfile(duration=timedelta(minutes=5)))


def test_validity_is_capped_at_the_ca_not_after(
    ec_key: ec.EllipticCurvePrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    ca = CertificateAuthority(
        self_signed_ca(ec_key, name("short-lived CA"), timedelta(days=2), now=NOW), ec_key
    )
    certificate = issue(make_csr(leaf_key), ca, RequestProfile(duration=timedelta(days=30)))
    assert certificate.not_valid_after_utc == ca.certificate.not_valid_after_utc == NOW + timedelta(days=2)


def test_not_before_is_never_before_the_cas(
    ec_key: ec.EllipticCurvePrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    ca = CertificateAuthority(self_signed_ca(ec_key, name("new CA"), timedelta(days=365), now=NOW), ec_key)
    issued = issue_certificate(
        make_csr(leaf_key), RequestProfile(), ca, IssuerPolicy(), now=NOW - timedelta(minutes=2)
    )
    assert issued.certificate.not_valid_before_utc == ca.certificate.not_valid_before_utc


def test_ca_expiring_too_soon_is_an_issuer_problem(
    ec_key: ec.EllipticCurvePrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    ca = CertificateAuthority(self_signed_ca(ec_key, name("old CA"), timedelta(days=1), now=NOW), ec_key)
    with pytest.raises(IssuerError, match="rotate the CA"):
        issue_certificate(
            make_csr(leaf_key), RequestProfile(), ca, IssuerPolicy(), now=NOW + timedelta(days=1)
        )


# ---- serials, signatures, keys ----


def test_serials_are_random_positive_and_at_least_64_bits(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    csr = make_csr(leaf_key)
    serials = [issue(csr, ca).serial_number for _ in range(20)]
    assert len(set(serials)) == len(serials)
    assert all(serial > 0 for serial in serials)
    assert all(serial.bit_length() >= 64 for serial in serials)


def test_signature_hash_follows_the_ca_key(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    certificate = issue(make_csr(leaf_key), ca)
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA256)
    certificate.verify_directly_issued_by(ca.certificate)


def test_p384_and_ed25519_cas_sign_with_their_hash(
    ed_key: ed25519.Ed25519PrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    for key, expected in ((p384, hashes.SHA384), (ed_key, type(None))):
        ca_key: CertificateIssuerPrivateKeyTypes = key
        ca = CertificateAuthority(self_signed_ca(ca_key, name("CA"), timedelta(days=30), now=NOW), ca_key)
        certificate = issue(make_csr(leaf_key), ca)
        assert isinstance(certificate.signature_hash_algorithm, expected)
        certificate.verify_directly_issued_by(ca.certificate)


def test_a_key_that_only_signs_is_enough(
    rsa_key: rsa.RSAPrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    token_key = OpaqueRSAKey(rsa_key)
    ca_certificate = self_signed_ca(token_key, name("token CA"), timedelta(days=365), now=NOW)
    certificate = issue(make_csr(leaf_key), CertificateAuthority(ca_certificate, token_key))
    assert token_key.signatures == 2
    rsa_key.public_key().verify(
        certificate.signature, certificate.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256()
    )


class FaultyRSAKey(OpaqueRSAKey):
    """A token that starts returning corrupted signatures once the CA exists (a broken HSM)."""

    faulty = False

    def sign(self, data: bytes, padding: Any, algorithm: Any) -> bytes:
        signature = bytearray(super().sign(data, padding, algorithm))
        if self.faulty:
            signature[-1] ^= 0x01
        return bytes(signature)


class FaultyECKey(ec.EllipticCurvePrivateKey):
    """The ECDSA counterpart of ``FaultyRSAKey``: signs with ``inner``, wrongly once ``faulty``."""

    faulty = False

    def __init__(self, inner: ec.EllipticCurvePrivateKey) -> None:
        self._inner = inner

    def sign(self, data: bytes, algorithm: Any) -> bytes:
        r, s = decode_dss_signature(self._inner.sign(data, algorithm))
        return encode_dss_signature(r, s + 1 if self.faulty else s)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._inner.public_key()

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._inner.curve

    @property
    def key_size(self) -> int:
        return self._inner.key_size

    def exchange(self, *args: Any) -> bytes:
        raise TypeError("the token key only signs")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise TypeError("the token key is not extractable")

    def private_bytes(self, *args: Any) -> bytes:
        raise TypeError("the token key is not extractable")

    def __copy__(self) -> FaultyECKey:
        return self

    def __deepcopy__(self, memo: Any) -> FaultyECKey:
        return self


@pytest.mark.parametrize("curve_key", [False, True], ids=["rsa-ca", "ecdsa-ca"])
def test_a_certificate_the_ca_key_signed_wrongly_is_never_returned(
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    leaf_key: ec.EllipticCurvePrivateKey,
    curve_key: bool,
) -> None:
    if curve_key:
        key: FaultyRSAKey | FaultyECKey = FaultyECKey(ec_key)
    else:
        key = FaultyRSAKey(rsa_key)
    ca = CertificateAuthority(self_signed_ca(key, name("faulty token CA"), timedelta(days=30), now=NOW), key)
    assert issue(make_csr(leaf_key), ca).issuer == ca.certificate.subject  # healthy: issues
    key.faulty = True
    with pytest.raises(IssuerError, match="does not verify against the CA certificate"):
        issue(make_csr(leaf_key), ca)


def test_ca_certificate_and_key_mismatch_is_an_issuer_problem(
    ca: CertificateAuthority, ed_key: ed25519.Ed25519PrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(IssuerError, match="does not match the CA key"):
        CertificateAuthority(ca.certificate, ed_key)


def test_request_signature_is_checked_again(ca: CertificateAuthority, rsa_key: rsa.RSAPrivateKey) -> None:
    tampered = bytearray(make_csr(rsa_key).public_bytes(Encoding.DER))
    tampered[-1] ^= 0x01
    with pytest.raises(RequestError, match="signature does not verify"):
        issue(x509.load_der_x509_csr(bytes(tampered)), ca)


def test_request_key_is_checked_again(ca: CertificateAuthority) -> None:
    weak = rsa.generate_private_key(65537, 1024)
    with pytest.raises(RequestError, match="RSA-1024"):
        issue(make_csr(weak), ca)


# ---- PEM output ----


def test_chain_pem_is_leaf_then_ca_then_chain(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    root = self_signed_ca(rsa_key, name("root"), timedelta(days=3650), now=NOW)
    root_ca = CertificateAuthority(root, rsa_key)
    intermediate_csr = make_csr(ec_key, "intermediate")
    intermediate = issue(intermediate_csr, root_ca, RequestProfile(is_ca=True), IssuerPolicy(allow_ca=True))
    issued = issue_certificate(
        make_csr(leaf_key),
        RequestProfile(),
        CertificateAuthority(intermediate, ec_key, (root,)),
        IssuerPolicy(),
        now=NOW,
    )
    assert load_pem_chain(issued.chain_pem()) == [issued.certificate, intermediate, root]
    assert load_pem_chain(issued.ca_pem()) == [root]
    assert load_pem_chain(issued.leaf_pem()) == [issued.certificate]


def test_ca_pem_without_chain_is_the_issuing_ca(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    issued = issue_certificate(make_csr(leaf_key), RequestProfile(), ca, IssuerPolicy(), now=NOW)
    assert isinstance(issued, IssuedCertificate)
    assert load_pem_chain(issued.ca_pem()) == [ca.certificate]
    assert load_pem_chain(issued.chain_pem()) == [issued.certificate, ca.certificate]


def test_pem_chain_round_trips(ca: CertificateAuthority) -> None:
    assert pem_chain([]) == b""
    assert load_pem_chain(pem_chain([ca.certificate, ca.certificate])) == [ca.certificate, ca.certificate]


@pytest.mark.parametrize(
    "data", [b"", b"nothing here", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]
)
def test_load_pem_chain_refuses_non_certificates(data: bytes) -> None:
    with pytest.raises(ValueError, match="PEM CERTIFICATE blocks"):
        load_pem_chain(data)


def test_certificate_matches_key(ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey) -> None:
    assert certificate_matches_key(ca.certificate, ca.key.public_key())
    assert not certificate_matches_key(ca.certificate, leaf_key.public_key())


def test_a_ca_and_what_it_issued_travel_to_another_process_and_back() -> None:
    """Signing processes receive the CA with each job: it arrives as the same, cached CA object, and the
    certificates come back intact (they pickle as DER), the CA's parsed once."""
    import pickle

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pickled CA")])
    handle = ReferencedECKey(key)  # pickles as a reference, as token keys do
    ca = CertificateAuthority(self_signed_ca(handle, name, timedelta(days=30)), handle)
    request = make_csr(ec.generate_private_key(ec.SECP256R1()), "leaf.example")
    issued = issue_certificate(request, RequestProfile(), ca, IssuerPolicy())

    first, second = pickle.loads(pickle.dumps(ca)), pickle.loads(pickle.dumps(ca))  # noqa: S301 (ours)
    back = pickle.loads(pickle.dumps(issued))  # noqa: S301 (ours)

    assert first is second  # what the CA read from its certificate is read once per process
    assert first.certificate == ca.certificate
    assert back.certificate == issued.certificate and back.ca_certificate == ca.certificate
    assert back.ca_certificate is first.certificate  # answers bring the CA back: not parsed again
    assert back.chain_pem() == issued.chain_pem()


_REFERENCED: dict[int, ReferencedECKey] = {}


def _referenced_key(reference: int) -> ReferencedECKey:
    return _REFERENCED[reference]


class ReferencedECKey(FaultyECKey):
    """A key that pickles as a reference to itself, like a token key sent to a signing process."""

    def __init__(self, inner: ec.EllipticCurvePrivateKey) -> None:
        super().__init__(inner)
        _REFERENCED[id(self)] = self

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return _referenced_key, (id(self),)
