"""The EST adapter over a TCS CA: what enrolling clients get, and how it says no."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, PublicKeyAlgorithmOID

from keyward.est.server.ca import CaUnavailable, ClientIdentity, EnrollRejected
from keyward.est.wire import CsrAttribute, decode_csrattrs, encode_csrattrs, oid_value
from keyward.issuers.signer_names import IssuerRef
from keyward.issuers.tcs.est_ca import (
    BasicCredential,
    EstServing,
    TcsEstCa,
    issue_tls_server_certificate,
    parse_est_spec,
    parse_issuer_reference,
    renewal_time,
)
from keyward.keystore import KeystoreError, SigningProcessDied
from keyward.pki.issue import CertificateAuthority, self_signed_ca
from keyward.pki.profile import IssuerPolicy
from tests.support.pki import ThreadWorkers, make_csr, memory_ca, name, rsa_ca

CLIENT = ClientIdentity.from_basic("est")
SECRET = BasicCredential("est", "correct horse battery staple")


def adapter(
    ca: CertificateAuthority | None = None,
    *,
    policy: IssuerPolicy | None = None,
    workers: ThreadWorkers | None = None,
    credentials: BasicCredential | None = SECRET,
    faults: list[Exception] | None = None,
) -> TcsEstCa:
    pool = workers or ThreadWorkers()
    return TcsEstCa(
        "my-ca",
        ca or memory_ca(),
        policy or IssuerPolicy(),
        pool.get,
        credentials=lambda: credentials,
        on_token_fault=faults.append if faults is not None else None,
    )


async def test_enroll_signs_through_the_token_pool_as_a_client_certificate() -> None:
    ca, workers = memory_ca(), ThreadWorkers()
    sans: list[x509.GeneralName] = [
        x509.DNSName("device.example"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.7")),
    ]
    chain = await adapter(ca, workers=workers).enroll(
        make_csr(common_name="device", sans=sans), CLIENT, renewal=False
    )

    assert len(chain) == 1, "simpleenroll answers with the leaf; /cacerts has the CA"
    leaf = chain[0]
    leaf.verify_directly_issued_by(ca.certificate)
    assert workers.calls == ["sign"]
    assert leaf.subject == name("device")
    assert list(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == sans
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert not usage.key_encipherment, "an ECDSA key cannot encipher: the policy drops it"
    extended = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(extended) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = leaf.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=89) < lifetime <= timedelta(days=90), "the issuer's default duration"


async def test_enroll_grants_the_tls_usages_a_csr_requests_and_nothing_else() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    asked = x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.CODE_SIGNING]
    )
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name("web"))
        .add_extension(asked, critical=False)
        .sign(key, hashes.SHA256())
    )
    (leaf,) = await adapter().enroll(request, CLIENT, renewal=False)
    extended = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(extended) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


async def test_enroll_keeps_within_the_issuers_max_duration() -> None:
    policy = IssuerPolicy(max_duration=timedelta(hours=1), default_duration=timedelta(hours=1))
    (leaf,) = await adapter(policy=policy).enroll(make_csr(common_name="device"), CLIENT, renewal=True)
    assert leaf.not_valid_after_utc - datetime.now(UTC) <= timedelta(hours=1)


async def test_a_request_the_issuer_refuses_is_rejected_with_the_reason() -> None:
    weak = make_csr(rsa.generate_private_key(public_exponent=65537, key_size=1024), "device")
    with pytest.raises(EnrollRejected, match="RSA-1024, which this issuer does not certify"):
        await adapter().enroll(weak, CLIENT, renewal=False)


async def test_a_ca_too_close_to_expiry_is_unavailable_not_a_client_error() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    dying = CertificateAuthority(self_signed_ca(key, name("Dying CA"), timedelta(minutes=6)), key)
    with pytest.raises(CaUnavailable, match="too soon to issue certificates"):
        await adapter(dying).enroll(make_csr(common_name="device"), CLIENT, renewal=False)


async def test_a_token_fault_answers_503_with_retry_after_and_tells_the_owner() -> None:
    workers, faults = ThreadWorkers(), []
    workers.failure = KeystoreError("token 'keyward' could not sign (DeviceRemoved)", "check the token")
    with pytest.raises(CaUnavailable) as raised:
        await adapter(workers=workers, faults=faults).enroll(
            make_csr(common_name="device"), CLIENT, renewal=False
        )
    assert raised.value.retry_after == 30
    assert "DeviceRemoved" not in str(raised.value), "token internals stay in the server log"
    assert faults == [workers.failure]


async def test_a_signing_process_dying_mid_enrollment_asks_for_a_quick_retry_and_blames_no_token() -> None:
    workers, faults = ThreadWorkers(), []
    workers.failure = SigningProcessDied("the signing process for token 'keyward' was killed by signal 9")
    with pytest.raises(CaUnavailable) as raised:
        await adapter(workers=workers, faults=faults).enroll(
            make_csr(common_name="device"), CLIENT, renewal=False
        )
    assert raised.value.retry_after == 2  # a new process is ready at once
    assert faults == [], "the token is fine: the issuer stays in service"


async def test_basic_credentials_are_checked_against_the_current_secret() -> None:
    current: list[BasicCredential | None] = [SECRET]
    ca = TcsEstCa("my-ca", memory_ca(), IssuerPolicy(), ThreadWorkers().get, credentials=lambda: current[0])
    assert ca.check_basic("est", SECRET.password)
    assert not ca.check_basic("est", "wrong")
    assert not ca.check_basic("other", SECRET.password)
    current[0] = BasicCredential("est", "rotated")
    assert ca.check_basic("est", "rotated") and not ca.check_basic("est", SECRET.password)
    current[0] = None
    assert not ca.check_basic("", ""), "no Secret: Basic is refused, even empty credentials"
    assert SECRET.password not in repr(SECRET)


def test_cacerts_and_csrattrs_describe_the_issuer() -> None:
    ec_ca = memory_ca(ec.generate_private_key(ec.SECP384R1()))
    served = adapter(ec_ca)
    assert list(served.ca_certificates()) == [ec_ca.certificate]
    attributes = served.csr_attributes()
    assert attributes is not None
    curve = oid_value(ec.EllipticCurveOID.SECP384R1)
    assert attributes.items == (CsrAttribute(PublicKeyAlgorithmOID.EC_PUBLIC_KEY, (curve,)),)
    assert decode_csrattrs(encode_csrattrs(attributes)) == attributes

    rsa_attributes = adapter(rsa_ca()).csr_attributes()
    assert rsa_attributes is not None and rsa_attributes.items == (PublicKeyAlgorithmOID.RSAES_PKCS1_v1_5,)


@pytest.mark.parametrize(
    ("requested", "ca_kind", "expected"),
    [
        (ec.generate_private_key(ec.SECP384R1()), "ec", "secp384r1"),
        (ed25519.Ed25519PrivateKey.generate(), "ec", "ed25519"),
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "rsa", "rsa-2048"),
    ],
    ids=["csr-key-type", "csr-ed25519", "weak-csr-key-falls-back-to-issuer"],
)
async def test_serverkeygen_returns_a_fresh_key_of_the_right_type_and_its_certificate(
    requested: object, ca_kind: str, expected: str
) -> None:
    ca, workers = (rsa_ca() if ca_kind == "rsa" else memory_ca()), ThreadWorkers()
    request = make_csr(requested, "keygen", sans=[x509.DNSName("keygen.example")])
    pkcs8, chain = await adapter(ca, workers=workers).server_keygen(request, CLIENT)

    key = serialization.load_der_private_key(pkcs8, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        kind = key.curve.name
    elif isinstance(key, rsa.RSAPrivateKey):
        kind = f"rsa-{key.key_size}"
    else:
        kind = "ed25519"
    assert kind == expected
    assert chain[0].public_key() == key.public_key()
    assert chain[0].public_key() != request.public_key()
    assert chain[0].subject == name("keygen")
    assert list(chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == [
        x509.DNSName("keygen.example")
    ]
    chain[0].verify_directly_issued_by(ca.certificate)
    assert workers.calls == ["sign"], "the key is generated in memory; the token only signs"


def test_parse_est_spec_defaults_the_label_to_the_issuer_name() -> None:
    assert parse_est_spec("my-ca", {}) == EstServing(label="my-ca")
    full = parse_est_spec(
        "my-ca",
        {
            "label": "devices/v1",
            "default": True,
            "basicAuthSecretRef": {"name": "est-users"},
            "clientCATrust": {"secretRef": {"name": "client-ca", "key": "ca.crt"}},
        },
    )
    assert full == EstServing("devices/v1", True, "est-users", None, ("client-ca", "ca.crt"))
    assert parse_est_spec("x", {"clientCATrust": {"pem": "PEM"}}).client_ca_pem == "PEM"


def test_issuer_references_name_tcs_issuers() -> None:
    assert parse_issuer_reference("TCSIssuer/ns/ca") == IssuerRef("tcs.intel.com", "TCSIssuer", "ca", "ns")
    assert parse_issuer_reference("tcsclusterissuers/ca") == IssuerRef(
        "tcs.intel.com", "TCSClusterIssuer", "ca"
    )
    for bad in ("TCSIssuer/ca", "TCSClusterIssuer/ns/ca", "EstIssuer/ns/ca", "TCSIssuer//ca", ""):
        with pytest.raises(ValueError, match="neither TCSIssuer/NAMESPACE/NAME nor TCSClusterIssuer/NAME"):
            parse_issuer_reference(bad)


def test_the_est_servers_tls_certificate_from_a_ca() -> None:
    ca = memory_ca()
    issued = issue_tls_server_certificate(ca, ["est.example", "127.0.0.1"], IssuerPolicy())
    leaf, ca_certificate = x509.load_pem_x509_certificates(issued.chain_pem)
    assert ca_certificate == ca.certificate and leaf == issued.certificate
    assert list(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == [
        x509.DNSName("est.example"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    extended = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(extended) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment, "its key is ECDSA P-256"
    key = serialization.load_pem_private_key(issued.key_pem, password=None)
    assert key.public_key() == leaf.public_key()
    assert "PRIVATE" not in repr(issued)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert renewal_time(leaf) == leaf.not_valid_before_utc + lifetime * 2 / 3
