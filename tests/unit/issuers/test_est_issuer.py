"""The EST issuer check, rule by rule: spec, credential Secrets, /cacerts and the trust-anchor rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509

from keyward.est.client import BasicAuth, DigestAuth, EstError
from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.est.issuer import (
    EstIssuerSpec,
    anchors_outside_bundle,
    bundle_outside_anchors,
    check_est_issuer,
    load_credentials,
)
from tests.support.pki import Issuer, name

from .est_fixtures import FakeServer, b64, basic_secret, cacert, lookup, spec, tls_secret


@pytest.fixture(scope="module")
def root() -> Issuer:
    return Issuer.self_signed("EST Root")


@pytest.fixture(scope="module")
def stranger() -> Issuer:
    return Issuer.self_signed("Stranger CA")


def intermediate_of(root: Issuer, common_name: str = "EST Intermediate") -> Issuer:
    """A CA certified by ``root``."""
    sub = Issuer.self_signed(common_name)  # for its key; re-certify it under root
    certificate = (
        x509.CertificateBuilder()
        .subject_name(sub.certificate.subject)
        .issuer_name(root.certificate.subject)
        .public_key(sub.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC) - timedelta(hours=1))
        .not_valid_after(datetime.now(UTC) + timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root.key, root.certificate.signature_hash_algorithm)  # type: ignore[arg-type]
    )
    return Issuer(certificate, sub.key)


def not_ready(excinfo: pytest.ExceptionInfo[IssuerNotReady]) -> tuple[str, str]:
    return excinfo.value.reason, excinfo.value.message


# ---- spec ---------------------------------------------------------------------------------------------


def test_seed_spec_gets_its_defaults(root: Issuer) -> None:
    parsed = EstIssuerSpec.parse(
        {"host": "testrfc7030.com", "cacert": cacert(root.certificate), "secretName": "s"}
    )
    assert (parsed.endpoint.port, parsed.endpoint.label, parsed.auth_method) == (443, "", "Basic")
    assert parsed.trust_anchors == (root.certificate,)
    assert str(parsed.endpoint.url("simpleenroll")) == "https://testrfc7030.com/.well-known/est/simpleenroll"
    labelled = EstIssuerSpec.parse({**spec(root.certificate), "port": 8443, "label": "a/b"})
    assert str(labelled.endpoint.url("cacerts")) == "https://est.example.com:8443/.well-known/est/a/b/cacerts"


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"cacert": ""}, "spec.cacert is empty"),
        ({"cacert": "not base64!"}, "spec.cacert is not base64"),
        ({"cacert": b64(b"hello")}, "does not hold PEM certificates"),
        ({"host": "https://est.example.com/x"}, "spec.host"),
        ({"port": 0}, "spec.port"),
        ({"port": "443"}, "spec.port"),
        ({"label": "a/../b"}, "spec.label"),
        ({"authMethod": "NTLM"}, "spec.authMethod"),
        ({"authMethod": "Digest", "secretName": ""}, "needs spec.secretName"),
        ({"secretName": ""}, "enrollment needs credentials"),
    ],
)
def test_unusable_spec_names_the_field(root: Issuer, change: dict[str, Any], expect: str) -> None:
    with pytest.raises(IssuerNotReady) as excinfo:
        EstIssuerSpec.parse({**spec(root.certificate), **change})
    reason, message = not_ready(excinfo)
    assert reason == "InvalidSpec" and expect in message


def test_der_trust_anchor_is_accepted_and_client_certificate_is_the_default_method(root: Issuer) -> None:
    from cryptography.hazmat.primitives import serialization

    der = b64(root.certificate.public_bytes(serialization.Encoding.DER))
    parsed = EstIssuerSpec.parse({"host": "h", "cacert": der, "clientCertSecretName": "tls"})
    assert parsed.auth_method == "ClientCertificate" and parsed.secret_names == ("tls",)


# ---- credentials --------------------------------------------------------------------------------------


async def test_basic_and_digest_credentials_come_from_the_secret(root: Issuer) -> None:
    basic = await load_credentials(
        EstIssuerSpec.parse(spec(root.certificate)), lookup({"creds": basic_secret()}), "ns"
    )
    assert basic.auth == BasicAuth("user", "pw") and basic.client_cert is None
    assert "pw" not in repr(basic)
    digest_spec = EstIssuerSpec.parse(spec(root.certificate, authMethod="Digest"))
    digest = await load_credentials(digest_spec, lookup({"creds": basic_secret()}), "ns")
    assert digest.auth == DigestAuth("user", "pw")


@pytest.mark.parametrize(
    ("secret", "reason", "expect"),
    [
        (None, "SecretMissing", "Secret ns/creds (spec.secretName) does not exist"),
        (basic_secret(type_="Opaque"), "SecretWrongType", "has type Opaque, not kubernetes.io/basic-auth"),
        (
            {"type": "kubernetes.io/basic-auth", "data": {"username": b64(b"u")}},
            "SecretInvalid",
            "'password'",
        ),
        (basic_secret(username="a:b"), "SecretInvalid", "may not contain ':'"),
        (
            {"type": "kubernetes.io/basic-auth", "data": {"username": "%%", "password": "x"}},
            "SecretInvalid",
            "base64",
        ),
    ],
)
async def test_credential_secret_problems_are_named(
    root: Issuer, secret: dict[str, Any] | None, reason: str, expect: str
) -> None:
    secrets = {"creds": secret} if secret is not None else {}
    with pytest.raises(IssuerNotReady) as excinfo:
        await load_credentials(EstIssuerSpec.parse(spec(root.certificate)), lookup(secrets), "ns")
    got_reason, message = not_ready(excinfo)
    assert got_reason == reason and expect in message
    assert "pw" not in message


async def test_client_certificate_secret_is_checked(root: Issuer) -> None:
    parsed = EstIssuerSpec.parse(spec(root.certificate, secretName="", clientCertSecretName="tls"))
    good, certificate = tls_secret(root)
    credentials = await load_credentials(parsed, lookup({"tls": good}), "ns")
    assert credentials.client_cert is not None and credentials.client_cert.leaf() == certificate

    other, _ = tls_secret(root)
    mismatched = {"type": "kubernetes.io/tls", "data": {**good["data"], "tls.key": other["data"]["tls.key"]}}
    expired, _ = tls_secret(
        root, lifetime=timedelta(hours=1), not_before=datetime.now(UTC) - timedelta(days=2)
    )
    for broken, expect in [
        (mismatched, "tls.key does not belong to tls.crt"),
        (expired, "not now"),
        (
            {"type": "kubernetes.io/tls", "data": {"tls.crt": b64(b"junk"), "tls.key": b64(b"junk")}},
            "not a PEM",
        ),
        ({**good, "type": "kubernetes.io/basic-auth"}, "not kubernetes.io/tls"),
    ]:
        with pytest.raises(IssuerNotReady) as excinfo:
            await load_credentials(parsed, lookup({"tls": broken}), "ns")
        assert expect in excinfo.value.message


# ---- the trust-anchor rule ----------------------------------------------------------------------------


def test_anchor_in_or_chaining_to_the_bundle_passes(root: Issuer, stranger: Issuer) -> None:
    sub = intermediate_of(root)
    server = sub.issue(name("est.example.com"), sub.key.public_key())
    assert anchors_outside_bundle([root.certificate], [root.certificate]) == []
    assert anchors_outside_bundle([sub.certificate], [root.certificate]) == [], "an intermediate of the CA"
    assert anchors_outside_bundle([server, sub.certificate], [root.certificate]) == [], "chains via an anchor"
    assert anchors_outside_bundle([root.certificate], [sub.certificate, root.certificate]) == []
    assert anchors_outside_bundle([stranger.certificate], [root.certificate]) == [stranger.certificate]
    assert anchors_outside_bundle([root.certificate, stranger.certificate], [root.certificate]) == [
        stranger.certificate
    ], "every anchor must belong to the server's CA"


def test_same_name_different_key_does_not_pass(root: Issuer) -> None:
    impostor = Issuer.self_signed("EST Root")
    assert anchors_outside_bundle([impostor.certificate], [root.certificate]) == [impostor.certificate]
    forged = impostor.issue(name("est.example.com"), impostor.key.public_key())
    assert anchors_outside_bundle([forged], [root.certificate]) == [forged], "signature, not just the name"


def test_bundle_certified_by_the_anchors_passes_the_seed_rule(root: Issuer, stranger: Issuer) -> None:
    sub = intermediate_of(root)
    deeper = intermediate_of(sub, "EST Issuing CA")
    assert bundle_outside_anchors([root.certificate], [sub.certificate]) == [], "the root's intermediate"
    assert bundle_outside_anchors([root.certificate], [deeper.certificate, sub.certificate]) == []
    assert bundle_outside_anchors([root.certificate], [root.certificate, sub.certificate]) == []
    assert bundle_outside_anchors([root.certificate], [sub.certificate, stranger.certificate]) == [
        stranger.certificate
    ], "every certificate of the bundle must be certified"
    impostor = Issuer.self_signed("EST Root")
    assert bundle_outside_anchors([impostor.certificate], [sub.certificate]) == [sub.certificate]


# ---- the whole check ----------------------------------------------------------------------------------


async def check_with_bundle(anchor: x509.Certificate, bundle: list[x509.Certificate]) -> None:
    await check_est_issuer(
        EstIssuerSpec.parse(spec(anchor)), lookup({"creds": basic_secret()}), "ns", FakeServer(bundle)
    )


async def test_ready_when_the_anchor_is_in_or_chains_to_the_bundle(root: Issuer) -> None:
    sub = intermediate_of(root)
    server = sub.issue(name("est.example.com"), sub.key.public_key())
    await check_with_bundle(root.certificate, [root.certificate])
    await check_with_bundle(sub.certificate, [root.certificate])  # an intermediate configured
    await check_with_bundle(server, [sub.certificate, root.certificate])  # the server's own certificate


async def test_ready_when_every_bundle_certificate_is_certified_by_the_anchor(root: Issuer) -> None:
    # The seed's rule: spec.cacert holds the root, /cacerts distributes only its intermediates.
    sub = intermediate_of(root)
    deeper = intermediate_of(sub, "EST Issuing CA")
    await check_with_bundle(root.certificate, [sub.certificate])
    await check_with_bundle(root.certificate, [deeper.certificate, sub.certificate])


async def test_bundle_with_a_foreign_ca_beside_the_anchors_intermediate_is_refused(
    root: Issuer, stranger: Issuer
) -> None:
    sub = intermediate_of(root)
    with pytest.raises(IssuerNotReady) as excinfo:
        await check_with_bundle(root.certificate, [sub.certificate, stranger.certificate])
    reason, message = not_ready(excinfo)
    assert reason == "TrustAnchorMismatch" and excinfo.value.permanent
    assert "'CN=EST Root'" in message and "'CN=Stranger CA'" in message
    assert "nor is certified by spec.cacert" in message


async def test_check_reads_secrets_then_cacerts(root: Issuer) -> None:
    server = FakeServer([root.certificate])
    checked = await check_est_issuer(
        EstIssuerSpec.parse(spec(root.certificate)), lookup({"creds": basic_secret()}), "ns", server
    )
    assert checked.ca_certificates == (root.certificate,) and checked.credentials.auth == BasicAuth(
        "user", "pw"
    )
    missing = FakeServer([root.certificate])
    with pytest.raises(IssuerNotReady):
        await check_est_issuer(EstIssuerSpec.parse(spec(root.certificate)), lookup({}), "ns", missing)
    assert missing.calls == [], "a missing Secret is reported without contacting the server"


async def test_cacerts_mismatch_takes_the_issuer_out_of_service(root: Issuer, stranger: Issuer) -> None:
    with pytest.raises(IssuerNotReady) as excinfo:
        await check_est_issuer(
            EstIssuerSpec.parse(spec(root.certificate)),
            lookup({"creds": basic_secret()}),
            "ns",
            FakeServer([stranger.certificate]),
        )
    reason, message = not_ready(excinfo)
    assert reason == "TrustAnchorMismatch" and excinfo.value.permanent
    assert "'CN=Stranger CA'" in message and "'CN=EST Root'" in message and "out of service" in message


@pytest.mark.parametrize(
    ("kind", "reason", "permanent"),
    [
        ("tls", "TLSError", False),
        ("connect", "ConnectionFailed", False),
        ("timeout", "Timeout", False),
        ("server", "ServerError", False),
        ("protocol", "ProtocolError", False),
        ("redirect", "RedirectRefused", False),
        ("too-large", "ResponseTooLarge", False),
        ("client", "ServerRefused", False),
    ],
)
async def test_server_trouble_is_a_transient_reason(
    root: Issuer, kind: Any, reason: str, permanent: bool
) -> None:
    server = FakeServer(error=EstError(kind, f"EST cacerts: the {kind} went wrong"))
    with pytest.raises(IssuerNotReady) as excinfo:
        await check_est_issuer(
            EstIssuerSpec.parse(spec(root.certificate)), lookup({"creds": basic_secret()}), "ns", server
        )
    assert (excinfo.value.reason, excinfo.value.permanent) == (reason, permanent)
    assert excinfo.value.message == f"EST cacerts: the {kind} went wrong"
