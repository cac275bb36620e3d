"""An issuer's spec.policy through the operator: what its CertificateRequests and Kubernetes CSRs get."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyward.kube.client import Kube
from keyward.kube.resources import CSRS
from keyward.sandbox.certmanager import approve
from tests.integration.helpers import create_issuer, ready_condition, wait_ready
from tests.integration.requests_helpers import (
    approve_csr,
    chain_of,
    create_csr,
    create_request,
    wait_csr_certificate,
    wait_request,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("operator")

POLICY = {"allowedDNSNames": ["*.team-a.example"], "allowedExtendedKeyUsages": ["server auth", "client auth"]}


def request_pem(organization: str | None, dns_name: str) -> bytes:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, "app")]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attributes))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
async def team_issuer(kube: Kube, namespace: str) -> None:
    await create_issuer(kube, "team-a", namespace, {"policy": POLICY})
    await wait_ready(kube, "team-a", namespace)


@pytest.mark.usefixtures("team_issuer")
@pytest.mark.parametrize(
    ("pem", "usages", "rule"),
    [
        (request_pem("system:masters", "app.team-a.example"), None, "forbidden-subject-organizations"),
        (request_pem(None, "app.team-b.example"), None, "allowed-dns-names"),
        (request_pem(None, "app.team-a.example"), ["digital signature", "cert sign"], "ca-usages"),
        (
            request_pem(None, "app.team-a.example"),
            ["digital signature", "ocsp signing"],
            "allowed-extended-key-usages",
        ),
    ],
    ids=["system-masters", "dns-name", "cert-sign", "ocsp-signing"],
)
async def test_certificate_requests_the_policy_refuses_fail_naming_the_rule(
    kube: Kube, namespace: str, pem: bytes, usages: list[str] | None, rule: str
) -> None:
    await create_request(kube, namespace, "refused", pem, issuer="team-a", usages=usages)
    await approve(kube, "refused", namespace)
    failed = await wait_request(kube, namespace, "refused", reason="Failed")
    assert ready_condition(failed)["message"].startswith(f"policy {rule}: ")
    assert not failed["status"].get("certificate")


@pytest.mark.usefixtures("team_issuer")
async def test_an_ecdsa_request_within_the_policy_is_issued_without_key_encipherment(
    kube: Kube, namespace: str
) -> None:
    pem = request_pem("team-a", "app.team-a.example")
    usages = ["digital signature", "key encipherment", "server auth"]
    await create_request(kube, namespace, "allowed", pem, issuer="team-a", usages=usages)
    await approve(kube, "allowed", namespace)
    leaf = chain_of(await wait_request(kube, namespace, "allowed", reason="Issued"))[0]
    key_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert key_usage.digital_signature and not key_usage.key_encipherment


@pytest.mark.usefixtures("team_issuer")
async def test_kubernetes_csrs_obey_the_same_policy(kube: Kube, namespace: str) -> None:
    signer = f"tcsissuer.tcs.intel.com/{namespace}.team-a"
    allowed, refused = f"allowed-{uuid.uuid4().hex[:6]}", f"refused-{uuid.uuid4().hex[:6]}"
    await create_csr(kube, allowed, request_pem(None, "app.team-a.example"), signer)
    await create_csr(kube, refused, request_pem("system:masters", "app.team-a.example"), signer)
    try:
        await approve_csr(kube, allowed)
        await approve_csr(kube, refused)
        assert (await wait_csr_certificate(kube, allowed))[0].issuer.rfc4514_string() == "CN=team-a"

        async def failed() -> dict[str, Any] | None:
            obj = await kube.find(CSRS, refused)
            conditions = ((obj or {}).get("status") or {}).get("conditions") or []
            return next((c for c in conditions if c.get("type") == "Failed"), None)

        condition = await wait_for(failed, what=f"CSR {refused} Failed")
        assert condition["message"].startswith("policy forbidden-subject-organizations: ")
    finally:
        await kube.delete(CSRS, allowed)
        await kube.delete(CSRS, refused)
