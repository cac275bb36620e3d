"""cert-manager CertificateRequests and Kubernetes CSRs signed by TCS issuers (issue 5)."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from keyward.kube.client import Kube
from keyward.kube.resources import CERTIFICATE_REQUESTS, CERTIFICATES, CSRS, EVENTS, SECRETS
from keyward.sandbox.certmanager import approve, deny
from keyward.sandbox.runner import Sandbox
from tests.integration.conftest import OperatorRunner
from tests.integration.helpers import create_issuer, openssl_verify, ready_condition, ready_issuer_ca
from tests.integration.requests_helpers import (
    CertificatesSeen,
    approve_csr,
    approved_requests,
    chain_of,
    create_csr,
    create_request,
    lifetime,
    make_csr,
    tampered_csr,
    wait_all_issued,
    wait_csr_certificate,
    wait_request,
    weak_rsa_csr,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
async def issuer(kube: Kube, namespace: str) -> x509.Certificate:
    return await ready_issuer_ca(
        kube, "my-ca", namespace, {"secretName": "my-ca-cert", "maxDuration": "720h"}
    )


async def test_seed_certificate_walkthrough(
    kube: Kube, namespace: str, issuer: x509.Certificate, tmp_path: Path
) -> None:
    await kube.create(
        CERTIFICATES,
        {
            "metadata": {"name": "my-certificate", "namespace": namespace},
            "spec": {
                "secretName": "demo-cert-tls",
                "commonName": "intel.sgx.demo",
                "issuerRef": {"group": "tcs.intel.com", "kind": "TCSIssuer", "name": "my-ca"},
            },
        },
        namespace,
    )
    requests = await wait_for(
        lambda: kube.list(CERTIFICATE_REQUESTS, namespace), what="the CertificateRequest"
    )
    name = requests[0]["metadata"]["name"]
    await approve(kube, name, namespace)
    issued = await wait_request(kube, namespace, name, reason="Issued")
    assert ready_condition(issued)["status"] == "True"
    assert base64.b64decode(issued["status"]["ca"]) == issuer.public_bytes(serialization.Encoding.PEM)
    (leaf,) = chain_of(issued)  # cert-manager's convention: the self-signed root is in status.ca only
    assert leaf.issuer == issuer.subject

    async def secret() -> dict[str, Any] | None:
        return await kube.find(SECRETS, "demo-cert-tls", namespace)

    tls = await wait_for(secret, what="Secret demo-cert-tls")
    chain = base64.b64decode(tls["data"]["tls.crt"])
    assert openssl_verify(tmp_path, issuer, chain).endswith(": OK")
    assert x509.load_pem_x509_certificates(chain) == [leaf], "the workload's tls.crt holds no root"
    assert leaf.subject.rfc4514_string() == "CN=intel.sgx.demo"

    events = await kube.list(EVENTS, namespace)
    assert any(e["involvedObject"]["name"] == name and e["reason"] == "Issued" for e in events)


async def test_nothing_is_signed_before_approval(
    kube: Kube, namespace: str, issuer: x509.Certificate
) -> None:
    await create_request(kube, namespace, "waiting", make_csr("waiting.example"))
    await create_request(kube, namespace, "approved", make_csr("approved.example"))
    await approve(kube, "approved", namespace)
    await wait_request(kube, namespace, "approved", reason="Issued")
    waiting = await kube.get(CERTIFICATE_REQUESTS, "waiting", namespace)
    assert not (waiting.get("status") or {}).get("certificate")
    assert ready_condition(waiting).get("reason") != "Issued"


async def test_denied_request_is_never_signed(kube: Kube, namespace: str, issuer: x509.Certificate) -> None:
    await create_request(kube, namespace, "denied", make_csr())
    await deny(kube, "denied", namespace, message="no such service")
    obj = await wait_request(kube, namespace, "denied", reason="Denied")
    assert ready_condition(obj)["status"] == "False"
    assert ready_condition(obj)["message"] == "no such service"
    assert obj["status"].get("failureTime")
    assert not obj["status"].get("certificate")


async def test_missing_issuer_is_pending_then_issued_once_it_is_ready(kube: Kube, namespace: str) -> None:
    await create_request(kube, namespace, "early", make_csr(), issuer="late-ca")
    await approve(kube, "early", namespace)
    pending = await wait_request(kube, namespace, "early", reason="Pending")
    assert (
        "late-ca" in ready_condition(pending)["message"]
        and "not found" in ready_condition(pending)["message"]
    )
    await create_issuer(kube, "late-ca", namespace, {"secretName": "late-ca-cert"})
    issued = await wait_request(kube, namespace, "early", reason="Issued")
    assert len(chain_of(issued)) == 1 and issued["status"]["ca"]


async def test_issuer_of_another_namespace_is_not_used(
    kube: Kube, namespace: str, issuer: x509.Certificate
) -> None:
    other = f"{namespace}-x"
    from keyward.kube.resources import NAMESPACES

    await kube.create(NAMESPACES, {"metadata": {"name": other}})
    try:
        await create_request(kube, other, "cross", make_csr())
        await approve(kube, "cross", other)
        pending = await wait_request(kube, other, "cross", reason="Pending")
        assert f"TCSIssuer {other}/my-ca not found" in ready_condition(pending)["message"]
    finally:
        await kube.delete(NAMESPACES, other)


async def test_requested_duration_and_usages_are_honoured(
    kube: Kube, namespace: str, issuer: x509.Certificate
) -> None:
    await create_request(
        kube,
        namespace,
        "profile",
        make_csr("api.example", dns=("api.example", "b.example")),
        duration="48h",
        usages=["digital signature", "server auth", "client auth"],
    )
    await create_request(kube, namespace, "too-long", make_csr(), duration="2000h")
    for name in ("profile", "too-long"):
        await approve(kube, name, namespace)
    profile = await wait_request(kube, namespace, "profile", reason="Issued")
    (leaf,) = chain_of(profile)
    assert x509.load_pem_x509_certificate(base64.b64decode(profile["status"]["ca"])) == issuer
    assert timedelta(hours=48) <= lifetime(leaf) <= timedelta(hours=48, minutes=10)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.example", "b.example"]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    (capped,) = chain_of(await wait_request(kube, namespace, "too-long", reason="Issued"))
    assert timedelta(hours=720) <= lifetime(capped) <= timedelta(hours=720, minutes=10), (
        "capped at maxDuration"
    )


@pytest.mark.parametrize(
    ("pem", "duration", "is_ca", "expect"),
    [
        (b"this is not PEM at all", None, False, "not a PEM or DER"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", None, False, "not a PEM or DER"),
        (None, None, False, "signature"),
        (b"weak", None, False, "1024"),
        (b"ok", "5m", False, "duration"),
        (b"ok", None, True, "CA"),
        (b"x" * (1 << 20), None, False, "larger than the limit"),
    ],
    ids=["not-pem", "not-a-csr", "bad-signature", "rsa-1024", "too-short", "isca-not-allowed", "1MiB"],
)
async def test_unusable_request_fails_with_reason_and_others_keep_flowing(
    sandbox: Sandbox,
    kube: Kube,
    namespace: str,
    issuer: x509.Certificate,
    pem: bytes | None,
    duration: str | None,
    is_ca: bool,
    expect: str,
) -> None:
    if pem is None:
        pem = tampered_csr()
    elif pem == b"weak":
        pem = weak_rsa_csr()
    elif pem == b"ok":
        pem = make_csr()
    # cert-manager's webhook refuses requests that are not signed PEM CSRs (tests/sandbox); the issuer's
    # own checks are proven on requests stored as on a cluster without the webhook.
    with sandbox.api.without_certmanager_webhook():
        await create_request(kube, namespace, "bad", pem, duration=duration, is_ca=is_ca)
    await create_request(kube, namespace, "good", make_csr())
    await approve(kube, "bad", namespace)
    await approve(kube, "good", namespace)
    failed = await wait_request(kube, namespace, "bad", reason="Failed")
    assert expect.lower() in ready_condition(failed)["message"].lower()
    assert failed["status"].get("failureTime") and not failed["status"].get("certificate")
    await wait_request(kube, namespace, "good", reason="Issued")


async def test_kubernetes_csr_is_signed_after_approval(
    kube: Kube, namespace: str, issuer: x509.Certificate, tmp_path: Path
) -> None:
    name = f"csr-{uuid.uuid4().hex[:6]}"
    signer = f"tcsissuer.tcs.intel.com/{namespace}.my-ca"
    await create_csr(kube, name, make_csr("foo.bar.com"), signer, expiration_seconds=3600)
    try:
        await approve_csr(kube, name)
        chain = await wait_csr_certificate(kube, name)
        assert len(chain) == 1, "leaf only without --csr-full-cert-chain"
        leaf = chain[0]
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert timedelta(hours=1) <= lifetime(leaf) <= timedelta(hours=1, minutes=10)
        assert openssl_verify(tmp_path, issuer, leaf.public_bytes(serialization.Encoding.PEM)).endswith(
            ": OK"
        )
    finally:
        await kube.delete(CSRS, name)


async def test_plural_signer_name_and_csr_failures(
    kube: Kube, namespace: str, issuer: x509.Certificate
) -> None:
    plural = f"tcsissuers.tcs.intel.com/{namespace}.my-ca"
    names = {k: f"{k}-{uuid.uuid4().hex[:6]}" for k in ("plural", "weak", "malformed", "foreign")}
    await create_csr(kube, names["plural"], make_csr(), plural)
    await create_csr(kube, names["weak"], weak_rsa_csr(), plural)
    await create_csr(kube, names["malformed"], make_csr(), "tcsissuer.tcs.intel.com/no-namespace-here")
    await create_csr(kube, names["foreign"], make_csr(), "example.com/someone-else")
    try:
        for name in names.values():
            await approve_csr(kube, name)
        await wait_csr_certificate(kube, names["plural"])

        async def failed() -> dict[str, Any] | None:
            obj = await kube.get(CSRS, names["weak"])
            conds = (obj.get("status") or {}).get("conditions") or []
            return next((c for c in conds if c["type"] == "Failed"), None)

        condition = await wait_for(failed, what="Failed condition on the RSA-1024 CSR")
        assert condition["status"] == "True" and "1024" in condition["message"]
        for ignored in ("malformed", "foreign"):
            obj = await kube.get(CSRS, names[ignored])
            assert not (obj.get("status") or {}).get("certificate")
            assert all(c["type"] == "Approved" for c in obj["status"]["conditions"])
    finally:
        for name in names.values():
            await kube.delete(CSRS, name)


async def test_two_operators_issue_each_request_exactly_once(
    kube: Kube, namespace: str, issuer: x509.Certificate, operators: OperatorRunner
) -> None:
    second = await operators.start()  # a second replica racing the module's operator
    seen = CertificatesSeen(kube, namespace)
    try:
        names = await approved_requests(kube, namespace, "r", 20)
        await wait_all_issued(kube, namespace, names)
        await seen.each_once(names)
    finally:
        seen.stop()
        await second.stop()
