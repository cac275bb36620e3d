"""Key provisioning decisions without a cluster: how a QuoteAttestation's answer reads (v1alpha2 and the
seed's v1alpha1 manual flow), and what a key manager's Secret and certificate must be to become a CA."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyward.issuers.objects import QuoteAttestationView, SecretView
from keyward.issuers.tcs.attestation import (
    answer,
    key_provisioning_name,
    object_name,
    published_public_key,
    quote_verification_name,
)
from keyward.issuers.tcs.ca import KnownCa, TcsIssuerSpec
from keyward.issuers.tcs.provisioning import ProvisioningFailed, check_certificate, read_delivery
from keyward.keystore import KeySpec
from tests.support.pki import self_signed_ca

SIGNER = "tcsissuer.tcs.intel.com/apps.my-ca"


def qa(*conditions: dict[str, str], secrets: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": "Init", "status": "True"}, *conditions]}
    if secrets is not None:
        status["secrets"] = secrets
    return {"metadata": {"name": "my-ca"}, "spec": {"secretName": "my-ca-key"}, "status": status}


@pytest.mark.parametrize(
    ("obj", "state", "detail"),
    [
        (qa(), "pending", "no verdict yet"),
        (qa({"type": "Ready", "status": "True", "message": "delivered"}), "granted", "my-ca-key"),
        (qa({"type": "Ready", "status": "False", "message": "quote revoked"}), "refused", "quote revoked"),
        (qa({"type": "Ready", "status": "Unknown"}), "pending", "no verdict yet"),
        (
            qa(
                {"type": "CASecretReady", "status": "true"},
                secrets={SIGNER: {"secretName": "wrapped-key", "secretType": "KMRA"}},
            ),
            "granted",
            "wrapped-key",
        ),
        (
            qa({"type": "CASecretReady", "status": "TRUE"}, secrets={SIGNER: {"secretName": "k"}}),
            "granted",
            "k",
        ),
        (qa({"type": "CASecretReady", "status": "true"}, secrets={}), "pending", f"no Secret for {SIGNER}"),
        (
            qa(
                {"type": "CASecretReady", "status": "true"},
                secrets={SIGNER: {"secretName": "k", "secretType": "Vault"}},
            ),
            "refused",
            "secretType 'Vault'",
        ),
        (
            qa({"type": "CASecretReady", "status": "false", "reason": "TCSReconcile"}),
            "pending",
            "no verdict yet",
        ),
        (
            qa({"type": "CASecretReady", "status": "false", "reason": "NoKey", "message": "no key"}),
            "refused",
            "no key",
        ),
        (qa({"type": "QuoteVerified", "status": "false", "message": "bad TCB"}), "refused", "bad TCB"),
    ],
    ids=[
        "nothing",
        "ready",
        "refused",
        "unknown",
        "v1alpha1",
        "v1alpha1-upper-case",
        "v1alpha1-no-entry",
        "v1alpha1-other-type",
        "v1alpha1-our-own-failure",
        "v1alpha1-refused",
        "v1alpha1-quote-refused",
    ],
)
def test_the_key_managers_answer_is_read_from_either_version(
    obj: dict[str, Any], state: str, detail: str
) -> None:
    found = answer(QuoteAttestationView.from_body(obj), SIGNER)
    assert found.state == state
    assert detail in (found.secret_name if state == "granted" else found.message)


def test_names_are_the_seeds_and_stay_valid_object_names() -> None:
    assert key_provisioning_name("my-ca", None) == "my-ca"
    assert key_provisioning_name("my-ca", "keyward-7d9f-x2") == "my-ca.keyward-7d9f-x2"
    assert quote_verification_name("req-1.certificaterequest") == "req-1.certificaterequest.quote"
    long = object_name("a" * 250, "replica")
    assert len(long) == 253 and long != object_name("a" * 250, "other"), "shortened, and still distinct"


def published(body: dict[str, Any]) -> rsa.RSAPublicKey:
    return published_public_key(QuoteAttestationView.from_body(body))


def test_the_published_public_key_is_read_as_pem_or_der_and_must_be_rsa() -> None:
    key = rsa.generate_private_key(65537, 3072).public_key()
    for encoding in (serialization.Encoding.PEM, serialization.Encoding.DER):
        raw = key.public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)
        spec = {"spec": {"publicKey": base64.b64encode(raw).decode()}}
        assert published(spec).public_numbers() == key.public_numbers()
    with pytest.raises(ValueError, match="not base64"):
        published({"spec": {"publicKey": "%%%"}})
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="not an RSA public key"):
        published({"spec": {"publicKey": base64.b64encode(ec_pem).decode()}})


def secret(key: bytes | None, certificate: bytes | None) -> SecretView:
    data = {}
    if key is not None:
        data["tls.key"] = base64.b64encode(key).decode()
    if certificate is not None:
        data["tls.crt"] = base64.b64encode(certificate).decode()
    return SecretView.from_body({"data": data})


CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA = self_signed_ca(CA_KEY, "delivered CA")
CA_PEM = CA.public_bytes(serialization.Encoding.PEM)
WRAPPED = bytes(384) + bytes(200)


def test_a_delivery_takes_the_certificate_as_base64_text_or_as_pem() -> None:
    for certificate in (base64.b64encode(CA_PEM), CA_PEM):
        delivery = read_delivery(secret(base64.b64encode(WRAPPED), certificate), "Secret apps/my-ca")
        assert delivery.certificate == CA and delivery.wrapped == WRAPPED
        assert "584 wrapped bytes" in repr(delivery) and "\\x00" not in repr(delivery)


@pytest.mark.parametrize(
    ("obj", "said"),
    [
        (secret(None, CA_PEM), "has no tls.key"),
        (secret(b"", CA_PEM), "has no tls.key"),
        (secret(b"**not base64**", CA_PEM), "is not base64 text of the wrapped key"),
        (secret(base64.b64encode(bytes(390)), CA_PEM), "too short for WSWK || WKEY"),
        (secret(base64.b64encode(bytes(384 + 5000)), CA_PEM), "more than any wrapped CA key"),
        (secret(base64.b64encode(WRAPPED), None), "tls.crt of Secret apps/my-ca is not a PEM CA certificate"),
        (secret(base64.b64encode(WRAPPED), b"garbage"), "tls.crt of Secret apps/my-ca is not a PEM"),
    ],
    ids=["no-key", "empty-key", "not-base64", "truncated", "oversized", "no-certificate", "bad-certificate"],
)
def test_a_malformed_delivery_is_refused_with_the_reason(obj: SecretView, said: str) -> None:
    with pytest.raises(ProvisioningFailed, match=said.replace("|", r"\|")) as failure:
        read_delivery(obj, "Secret apps/my-ca")
    assert failure.value.reason == "SecretInvalid"


SPEC = TcsIssuerSpec(name="my-ca", self_sign=False)
HOUR, DAY = datetime.timedelta(hours=1), datetime.timedelta(days=1)


def test_a_valid_ca_certificate_passes_and_says_its_key() -> None:
    assert check_certificate(CA, "Secret apps/my-ca", SPEC) == KeySpec("ECDSA", 256)
    assert check_certificate(CA, "here", SPEC, [KnownCa.of(CA, "Secret apps/my-ca-cert")]) == KeySpec(
        "ECDSA", 256
    )


@pytest.mark.parametrize(
    ("certificate", "spec", "known", "reason"),
    [
        (self_signed_ca(CA_KEY, "leaf", ca=False), SPEC, [], "NotACA"),
        (self_signed_ca(CA_KEY, "old", valid_for=-HOUR, valid_since=DAY), SPEC, [], "CAExpired"),
        (
            self_signed_ca(CA_KEY, "future", valid_for=DAY * 9, valid_since=-DAY),
            SPEC,
            [],
            "CANotYetValid",
        ),
        (self_signed_ca(ec.generate_private_key(ec.SECP521R1()), "p521"), SPEC, [], "UnsupportedKey"),
        (
            CA,
            TcsIssuerSpec(name="my-ca", self_sign=False, key=KeySpec("RSA", 3072), key_given=True),
            [],
            "KeyChangeRefused",
        ),
        (
            CA,
            SPEC,
            [KnownCa.of(self_signed_ca(CA_KEY, "the issuer's own"), "Secret apps/my-ca-cert")],
            "CAMismatch",
        ),
    ],
    ids=["not-a-ca", "expired", "not-yet-valid", "unsupported-key", "other-key-kind", "another-ca"],
)
def test_a_certificate_that_cannot_be_this_issuers_ca_is_refused(
    certificate: Any, spec: TcsIssuerSpec, known: list[KnownCa], reason: str
) -> None:
    with pytest.raises(ProvisioningFailed) as failure:
        check_certificate(certificate, "Secret apps/my-ca", spec, known)
    assert failure.value.reason == reason
    assert "Secret apps/my-ca" in failure.value.message
