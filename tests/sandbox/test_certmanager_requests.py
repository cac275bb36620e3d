"""The stand-in's pure parts: keys and CSRs from a Certificate spec, and when to issue again.

openssl reads every CSR we build, as an independent check of what cert-manager would have sent.
"""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from keyward.sandbox.certmanager.conditions import with_condition
from keyward.sandbox.certmanager.keys import (
    KeySpec,
    PrivateKey,
    SpecError,
    encode_private_key,
    generate_private_key,
    key_spec,
    load_private_key,
)
from keyward.sandbox.certmanager.policy import check_spec, issuance_trigger, renewal_time
from keyward.sandbox.certmanager.request import build_csr, csr_pem, identity_from_spec, identity_of
from keyward.sandbox.certmanager.secret import tls_secret_content
from tests.support.pki import b64

NOW = datetime(2030, 1, 1, tzinfo=UTC)
ISSUER = {"name": "my-ca", "kind": "TCSIssuer", "group": "tcs.intel.com"}


@pytest.fixture(scope="module")
def ec_key() -> PrivateKey:
    return generate_private_key(KeySpec(algorithm="ECDSA", size=256))


@pytest.fixture(scope="module")
def rsa_key() -> PrivateKey:
    return generate_private_key(KeySpec())


def openssl_text(tmp_path: Path, csr: x509.CertificateSigningRequest) -> str:
    """``openssl req -text -verify``: fails unless openssl parses the CSR and its signature checks out."""
    path = tmp_path / "request.pem"
    path.write_bytes(csr_pem(csr))
    done = subprocess.run(
        ["openssl", "req", "-in", str(path), "-noout", "-text", "-verify"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "verify OK" in done.stdout + done.stderr
    return done.stdout


# -- keys ----------------------------------------------------------------------------------------------


def test_private_key_defaults_follow_cert_manager() -> None:
    assert key_spec({}) == KeySpec(algorithm="RSA", size=2048, encoding="PKCS1", rotation_policy="Always")
    assert key_spec({"privateKey": {"algorithm": "ECDSA"}}).size == 256
    assert key_spec({"privateKey": {"algorithm": "Ed25519", "size": 4096}}).size == 0
    assert key_spec({"privateKey": {"rotationPolicy": "Never"}}).reuses_key


@pytest.mark.parametrize(
    ("private_key", "expected"),
    [
        ({"algorithm": "RSA", "size": 1024}, "spec.privateKey.size 1024 is out of range for RSA"),
        ({"algorithm": "ECDSA", "size": 255}, "use 256, 384 or 521"),
        ({"algorithm": "DSA"}, 'spec.privateKey.algorithm "DSA" is not supported'),
        ({"encoding": "DER"}, "use one of PKCS1, PKCS8"),
        ({"rotationPolicy": "Sometimes"}, "use one of Never, Always"),
    ],
)
def test_unusable_private_key_specs_are_refused_with_the_field_and_the_fix(
    private_key: dict[str, Any], expected: str
) -> None:
    with pytest.raises(SpecError, match=re.escape(expected)):
        key_spec({"privateKey": private_key})


@pytest.mark.parametrize(
    ("spec", "encoding", "header", "openssl_type"),
    [
        (KeySpec(algorithm="ECDSA", size=384), "PKCS1", b"-----BEGIN EC PRIVATE KEY-----", "384 bit"),
        (KeySpec(algorithm="ECDSA", size=521), "PKCS8", b"-----BEGIN PRIVATE KEY-----", "521 bit"),
        (KeySpec(algorithm="Ed25519", size=0), "PKCS1", b"-----BEGIN PRIVATE KEY-----", "ED25519"),
    ],
)
def test_keys_are_written_in_the_requested_encoding_and_openssl_reads_them(
    tmp_path: Path, spec: KeySpec, encoding: str, header: bytes, openssl_type: str
) -> None:
    pem = encode_private_key(generate_private_key(spec), encoding)
    assert pem.startswith(header)
    path = tmp_path / "tls.key"
    path.write_bytes(pem)
    done = subprocess.run(
        ["openssl", "pkey", "-in", str(path), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert openssl_type in done.stdout
    assert load_private_key(pem) is not None


def test_rsa_keys_default_to_pkcs1_and_load_back(rsa_key: PrivateKey) -> None:
    assert isinstance(rsa_key, rsa.RSAPrivateKey) and rsa_key.key_size == 2048
    assert encode_private_key(rsa_key, "PKCS1").startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert encode_private_key(rsa_key, "PKCS8").startswith(b"-----BEGIN PRIVATE KEY-----")


def test_garbage_and_encrypted_keys_count_as_no_key(ec_key: PrivateKey) -> None:
    encrypted = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass"),
    )
    assert load_private_key(b"") is None
    assert load_private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n") is None
    assert load_private_key(encrypted) is None


# -- CSRs ----------------------------------------------------------------------------------------------


def test_seed_certificate_csr_has_the_common_name_and_default_usages(
    tmp_path: Path, rsa_key: PrivateKey
) -> None:
    spec = {"secretName": "demo-cert-tls", "commonName": "intel.sgx.demo", "issuerRef": ISSUER}
    text = openssl_text(tmp_path, build_csr(spec, rsa_key))
    assert "Subject: CN = intel.sgx.demo" in text
    assert "Public-Key: (2048 bit)" in text
    assert "Signature Algorithm: sha256WithRSAEncryption" in text
    assert "X509v3 Key Usage: critical" in text
    assert "Digital Signature, Key Encipherment" in text
    assert "Basic Constraints" not in text
    assert "Extended Key Usage" not in text


def test_full_spec_csr_carries_subject_names_ca_and_usages(tmp_path: Path) -> None:
    key = generate_private_key(KeySpec(algorithm="ECDSA", size=384))
    spec = {
        "commonName": "app.example",
        "subject": {
            "organizations": ["Example Org"],
            "countries": ["FI"],
            "organizationalUnits": ["Platform"],
            "localities": ["Espoo"],
            "provinces": ["Uusimaa"],
            "streetAddresses": ["1 Main St"],
            "postalCodes": ["02100"],
            "serialNumber": "42",
        },
        "dnsNames": ["app.example", "*.app.example"],
        "ipAddresses": ["10.0.0.1", "2001:db8::1"],
        "uris": ["spiffe://cluster.local/ns/sandbox/sa/app"],
        "emailAddresses": ["ops@app.example"],
        "isCA": True,
        "usages": ["digital signature", "server auth", "client auth"],
    }
    text = openssl_text(tmp_path, build_csr(spec, key))
    for expected in (
        "C = FI",
        "O = Example Org",
        "OU = Platform",
        "L = Espoo",
        "ST = Uusimaa",
        "street = 1 Main St",
        "postalCode = 02100",
        "serialNumber = 42",
        "CN = app.example",
        "ASN1 OID: secp384r1",
        "ecdsa-with-SHA384",
        "DNS:app.example, DNS:*.app.example, IP Address:10.0.0.1, IP Address:2001:DB8:0:0:0:0:0:1, "
        "URI:spiffe://cluster.local/ns/sandbox/sa/app, email:ops@app.example",
        "X509v3 Basic Constraints: critical",
        "CA:TRUE",
        "Digital Signature, Certificate Sign",
        "TLS Web Server Authentication, TLS Web Client Authentication",
    ):
        assert expected in text, expected
    assert text.index("C = FI") < text.index("CN = app.example")


def test_san_is_critical_when_the_subject_is_empty(tmp_path: Path) -> None:
    key = generate_private_key(KeySpec(algorithm="Ed25519", size=0))
    text = openssl_text(tmp_path, build_csr({"dnsNames": ["only.example"]}, key))
    assert "X509v3 Subject Alternative Name: critical" in text
    assert "DNS:only.example" in text
    assert "ED25519" in text


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"issuerRef": ISSUER}, "set spec.commonName or at least one of spec.dnsNames"),
        ({"ipAddresses": ["10.0.0.300"]}, 'spec.ipAddresses: "10.0.0.300" is not an IP address'),
        ({"dnsNames": ["bücher.example"]}, "punycode"),
        ({"commonName": "x" * 65}, "spec.commonName"),
        ({"commonName": "a", "subject": {"countries": ["Finland"]}}, "spec.subject.countries"),
        ({"commonName": "a", "usages": ["encipher only"]}, "spec.usages"),
    ],
)
def test_unusable_names_are_refused_before_any_request(
    ec_key: PrivateKey, spec: dict[str, Any], expected: str
) -> None:
    with pytest.raises(SpecError, match=re.escape(expected)):
        build_csr(spec, ec_key)
    with pytest.raises(SpecError, match=re.escape(expected)):
        check_spec({"secretName": "s", "issuerRef": ISSUER, **spec})


def test_spec_check_names_missing_secret_issuer_and_bad_durations() -> None:
    base = {"secretName": "s", "issuerRef": ISSUER, "commonName": "a"}
    check_spec(base)
    with pytest.raises(SpecError, match=re.escape("spec.secretName")):
        check_spec({**base, "secretName": ""})
    with pytest.raises(SpecError, match=re.escape("spec.issuerRef.name")):
        check_spec({**base, "issuerRef": {"kind": "TCSIssuer"}})
    with pytest.raises(SpecError, match=re.escape("spec.duration")):
        check_spec({**base, "duration": "90 days"})


names = st.lists(st.from_regex(r"[a-z][a-z0-9]{0,10}\.example", fullmatch=True), max_size=4)


@settings(max_examples=25, deadline=None)
@given(
    dns=names,
    common_name=st.one_of(st.just(""), st.from_regex(r"[a-z]{1,20}", fullmatch=True)),
    is_ca=st.booleans(),
    ips=st.lists(st.ip_addresses().map(str), max_size=3),
)
def test_the_csr_asks_for_exactly_the_identity_of_the_spec(
    ec_key: PrivateKey, dns: list[str], common_name: str, is_ca: bool, ips: list[str]
) -> None:
    spec = {"commonName": common_name, "dnsNames": dns, "ipAddresses": ips, "isCA": is_ca}
    if not (common_name or dns or ips):
        spec["uris"] = ["urn:example"]
    assert identity_of(build_csr(spec, ec_key)) == identity_from_spec(spec)


# -- when to issue ---------------------------------------------------------------------------------------


def sign(
    key: PrivateKey,
    spec: Mapping[str, Any],
    *,
    not_before: datetime = NOW - timedelta(days=1),
    lifetime: timedelta = timedelta(days=90),
) -> x509.Certificate:
    """What an issuer would return for the CSR of ``spec`` (self-signed by a throwaway CA key)."""
    csr = build_csr(spec, key)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")]))
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + lifetime)
    )
    for extension in csr.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(ca_key, hashes.SHA256())


def certificate(**spec: Any) -> dict[str, Any]:
    full = {"secretName": "tls", "issuerRef": ISSUER, "commonName": "app.example", **spec}
    return {"metadata": {"name": "app", "namespace": "ns", "generation": 1}, "spec": full}


def secret_for(cert: Mapping[str, Any], key: PrivateKey, leaf: x509.Certificate) -> dict[str, Any]:
    pem = leaf.public_bytes(serialization.Encoding.PEM)
    content = tls_secret_content("app", cert["spec"], pem, pem, leaf, key, "PKCS1")
    data = {k: v for k, v in content.data.items() if v is not None}
    return {"metadata": {"name": "tls", "annotations": content.annotations}, "data": data}


def test_an_up_to_date_secret_needs_nothing_until_its_renewal_time(ec_key: PrivateKey) -> None:
    cert = certificate(privateKey={"algorithm": "ECDSA"})
    leaf = sign(ec_key, cert["spec"])
    secret = secret_for(cert, ec_key, leaf)
    assert issuance_trigger(cert, secret, None, NOW) is None
    renew_at = renewal_time(leaf, cert["spec"])
    assert renew_at == leaf.not_valid_after_utc - timedelta(days=30)
    trigger = issuance_trigger(cert, secret, None, renew_at)
    assert trigger is not None and trigger.reason == "Renewing" and not trigger.unready
    expired = issuance_trigger(cert, secret, None, leaf.not_valid_after_utc)
    assert expired is not None and expired.reason == "Expired" and expired.unready


def test_renew_before_moves_the_renewal_and_is_capped_at_a_third(ec_key: PrivateKey) -> None:
    spec = certificate()["spec"]
    leaf = sign(ec_key, spec, lifetime=timedelta(hours=90))
    assert renewal_time(leaf, {"renewBefore": "1h"}) == leaf.not_valid_after_utc - timedelta(hours=1)
    assert renewal_time(leaf, {"renewBefore": "100h"}) == leaf.not_valid_after_utc - timedelta(hours=30)


def test_missing_or_broken_secrets_trigger_with_cert_managers_reasons(ec_key: PrivateKey) -> None:
    cert = certificate(privateKey={"algorithm": "ECDSA"})
    leaf = sign(ec_key, cert["spec"])
    good = secret_for(cert, ec_key, leaf)
    other = generate_private_key(KeySpec(algorithm="ECDSA", size=256))
    cases = {
        "DoesNotExist": None,
        "MissingData": {**good, "data": {"tls.key": good["data"]["tls.key"]}},
        "InvalidKeyPair": {
            **good,
            "data": {**good["data"], "tls.key": b64(encode_private_key(other, "PKCS8"))},
        },
        "InvalidCertificate": {**good, "data": {**good["data"], "tls.crt": b64(b"not a certificate")}},
    }
    for reason, secret in cases.items():
        trigger = issuance_trigger(cert, secret, None, NOW)
        assert trigger is not None and trigger.reason == reason and trigger.unready, reason


def test_spec_changes_trigger_naming_the_changed_fields(ec_key: PrivateKey) -> None:
    cert = certificate(privateKey={"algorithm": "ECDSA"})
    secret = secret_for(cert, ec_key, sign(ec_key, cert["spec"]))
    changed = certificate(privateKey={"algorithm": "ECDSA"}, dnsNames=["new.example"], isCA=True)
    trigger = issuance_trigger(changed, secret, None, NOW)
    assert trigger is not None and trigger.reason == "SecretMismatch"
    assert "[spec.dnsNames, spec.isCA]" in trigger.message
    rsa_wanted = issuance_trigger(certificate(privateKey={"algorithm": "RSA"}), secret, None, NOW)
    assert rsa_wanted is not None and "spec.privateKey.algorithm" in rsa_wanted.message
    moved = issuance_trigger(
        certificate(privateKey={"algorithm": "ECDSA"}, issuerRef={"name": "b"}), secret, None, NOW
    )
    assert (
        moved is not None
        and moved.reason == "IncorrectIssuer"
        and "TCSIssuer.tcs.intel.com/my-ca" in moved.message
    )


def test_with_the_issuing_request_at_hand_its_fields_are_compared(ec_key: PrivateKey) -> None:
    cert = certificate(privateKey={"algorithm": "ECDSA"}, duration="2160h")
    secret = secret_for(cert, ec_key, sign(ec_key, cert["spec"]))
    request = {
        "spec": {
            "request": b64(csr_pem(build_csr(cert["spec"], ec_key))),
            "issuerRef": ISSUER,
            "duration": "2160h0m0s",
            "usages": ["key encipherment", "digital signature"],
        }
    }
    assert issuance_trigger(cert, secret, request, NOW) is None
    longer = certificate(privateKey={"algorithm": "ECDSA"}, duration="4320h", usages=["server auth"])
    trigger = issuance_trigger(longer, secret, request, NOW)
    assert trigger is not None and trigger.reason == "RequestChanged"
    assert "[spec.usages, spec.duration]" in trigger.message


def test_conditions_keep_their_transition_time_while_the_status_holds() -> None:
    first = with_condition([], "Ready", "False", "Pending", "a", now=NOW)
    same = with_condition(first, "Ready", "False", "Pending", "b", now=NOW + timedelta(minutes=5))
    flipped = with_condition(same, "Ready", "True", "Ready", "c", now=NOW + timedelta(minutes=9))
    assert same[0]["lastTransitionTime"] == "2030-01-01T00:00:00Z" and same[0]["message"] == "b"
    assert flipped[0]["lastTransitionTime"] == "2030-01-01T00:09:00Z"
    assert len(flipped) == 1


def test_the_secret_holds_chain_key_ca_and_cert_manager_annotations(ec_key: PrivateKey) -> None:
    spec = certificate(
        dnsNames=["b.example", "a.example"],
        ipAddresses=["10.0.0.1"],
        secretTemplate={"labels": {"team": "x"}, "annotations": {"note": "y"}},
    )["spec"]
    leaf = sign(ec_key, spec)
    pem = leaf.public_bytes(serialization.Encoding.PEM)
    content = tls_secret_content("app", spec, pem, b"", leaf, ec_key, "PKCS8")
    assert content.data["ca.crt"] is None  # removed by the merge patch when the issuer gives no CA
    assert base64.b64decode(content.data["tls.key"] or "").startswith(b"-----BEGIN PRIVATE KEY-----")
    assert content.labels["team"] == "x"
    assert content.annotations["note"] == "y"
    assert content.annotations["cert-manager.io/alt-names"] == "a.example,b.example"
    assert content.annotations["cert-manager.io/ip-sans"] == "10.0.0.1"
    assert content.annotations["cert-manager.io/common-name"] == "app.example"
    assert content.annotations["cert-manager.io/issuer-kind"] == "TCSIssuer"
    assert content.annotations["cert-manager.io/issuer-group"] == "tcs.intel.com"
    assert content.annotations["cert-manager.io/certificate-name"] == "app"


def test_ed25519_key_type_is_kept_by_load() -> None:
    key = generate_private_key(KeySpec(algorithm="Ed25519", size=0))
    assert isinstance(load_private_key(encode_private_key(key, "PKCS8")), ed25519.Ed25519PrivateKey)
