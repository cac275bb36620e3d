"""TCSIssuer / TCSClusterIssuer with a real SoftHSM2 token, the sandbox API and an operator process."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyward.kube.client import ApiError, Kube
from keyward.kube.resources import NAMESPACES, SECRETS, TCS_CLUSTER_ISSUERS, TCS_ISSUERS
from keyward.sandbox.runner import Sandbox
from tests.integration.conftest import OPERATOR_NAMESPACE
from tests.integration.helpers import (
    ca_from_secret,
    create_issuer,
    ready_condition,
    token_objects,
    wait_ready,
)
from tests.support.tools import kubectl, object_blocks
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("operator")


async def test_seed_flow_issuer_ready_with_ca_secret_and_empty_key(kube: Kube, namespace: str) -> None:
    await create_issuer(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
    issuer = await wait_ready(kube, "my-ca", namespace, reason="Reconcile")
    ready = next(c for c in issuer["status"]["conditions"] if c["type"] == "Ready")
    assert ready["message"] == "Success"
    assert ready["observedGeneration"] == issuer["metadata"]["generation"]
    assert issuer["status"]["signerName"] == f"tcsissuer.tcs.intel.com/{namespace}.my-ca"

    secret, ca = await ca_from_secret(kube, "my-ca-cert", namespace)
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["data"]["tls.key"] == ""
    assert secret["data"]["ca.crt"] == secret["data"]["tls.crt"]
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("TCSIssuer", "my-ca")

    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert (
        usage.critical
        and usage.value.key_cert_sign
        and usage.value.crl_sign
        and usage.value.digital_signature
    )
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ca.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert ca.subject.rfc4514_string() == "CN=my-ca"
    assert ca.subject == ca.issuer
    key = ca.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 3072
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert timedelta(hours=87600) <= lifetime <= timedelta(hours=87600, minutes=10)
    ca.verify_directly_issued_by(ca)


async def test_kubectl_prints_the_seed_columns(kube: Kube, namespace: str) -> None:
    await create_issuer(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
    await wait_ready(kube, "my-ca", namespace)
    out = (await kubectl("get", "tcsissuers", "-n", namespace)).stdout.splitlines()
    assert out[0].split() == ["NAME", "AGE", "READY", "REASON", "MESSAGE"]
    assert out[1].split()[0] == "my-ca"
    assert out[1].split()[2:] == ["True", "Reconcile", "Success"]
    jsonpath = await kubectl(
        "get", "secrets", "-n", namespace, "my-ca-cert", "-o", "jsonpath={.data.tls\\.key}"
    )
    assert jsonpath.stdout == ""


async def test_token_holds_a_sensitive_never_extractable_ca_key(
    kube: Kube, namespace: str, sandbox: Sandbox
) -> None:
    await create_issuer(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
    await wait_ready(kube, "my-ca", namespace)
    label = f"tcsissuer.tcs.intel.com/{namespace}.my-ca"
    assert sandbox.hsm is not None
    blocks = object_blocks(await token_objects(sandbox.hsm), label)
    private = [b for b in blocks if b.startswith("Private Key Object")]
    certificates = [b for b in blocks if b.startswith("Certificate Object")]
    assert len(private) == 1 and len(certificates) == 1
    access = next(line for line in private[0].splitlines() if "Access:" in line)
    assert "never extractable" in access and "always sensitive" in access


async def test_ecdsa_issuer_and_key_change_is_refused(kube: Kube, namespace: str) -> None:
    await create_issuer(
        kube,
        "ec-ca",
        namespace,
        {
            "secretName": "ec-ca-cert",
            "privateKey": {"algorithm": "ECDSA", "size": 384},
            "subject": {"commonName": "Example EC Root", "organizations": ["Example"]},
        },
    )
    await wait_ready(kube, "ec-ca", namespace)
    _, ca = await ca_from_secret(kube, "ec-ca-cert", namespace)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    assert ca.subject.rfc4514_string() == "CN=Example EC Root,O=Example"

    await kube.patch(
        TCS_ISSUERS, "ec-ca", {"spec": {"privateKey": {"algorithm": "RSA", "size": 2048}}}, namespace
    )
    issuer = await wait_ready(kube, "ec-ca", namespace, status="False", reason="KeyChangeRefused")
    message = next(c for c in issuer["status"]["conditions"] if c["type"] == "Ready")["message"]
    assert "new issuer" in message
    _, still = await ca_from_secret(kube, "ec-ca-cert", namespace)
    assert still == ca


async def test_self_sign_false_waits_for_key_provisioning(kube: Kube, namespace: str) -> None:
    await create_issuer(kube, "provisioned", namespace, {"secretName": "p-cert", "selfSign": False})

    async def waiting() -> dict[str, Any] | None:
        issuer = await kube.find(TCS_ISSUERS, "provisioned", namespace)
        waits = str(ready_condition(issuer).get("message")).startswith("Waiting for key provisioning")
        return issuer if waits else None

    await wait_for(waiting, what="the issuer waiting for its key")
    assert await kube.find(SECRETS, "p-cert", namespace) is None, "no Secret and no CA before the key"


async def test_cluster_issuer_secret_lands_in_operator_namespace(kube: Kube) -> None:
    await create_issuer(kube, "cluster-ca", None, {"secretName": "cluster-ca-cert"}, cluster=True)
    try:
        issuer = await wait_ready(kube, "cluster-ca", None, cluster=True)
        assert issuer["status"]["signerName"] == "tcsclusterissuer.tcs.intel.com/cluster-ca"
        secret, _ = await ca_from_secret(kube, "cluster-ca-cert", OPERATOR_NAMESPACE)
        assert secret["metadata"]["ownerReferences"][0]["kind"] == "TCSClusterIssuer"
    finally:
        await kube.delete(TCS_CLUSTER_ISSUERS, "cluster-ca")
    await wait_for(
        lambda: _gone(kube, SECRETS, "cluster-ca-cert", OPERATOR_NAMESPACE),
        what="cluster issuer Secret removed",
    )


async def _gone(kube: Kube, resource: object, name: str, namespace: str | None) -> bool:
    return await kube.find(resource, name, namespace) is None  # type: ignore[arg-type]


async def test_same_name_in_two_namespaces_gets_two_keys(kube: Kube, namespace: str) -> None:
    other = f"{namespace}-b"
    await kube.create(NAMESPACES, {"metadata": {"name": other}})
    try:
        await create_issuer(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
        await create_issuer(kube, "my-ca", other, {"secretName": "my-ca-cert"})
        await wait_ready(kube, "my-ca", namespace)
        await wait_ready(kube, "my-ca", other)
        _, first = await ca_from_secret(kube, "my-ca-cert", namespace)
        _, second = await ca_from_secret(kube, "my-ca-cert", other)
        assert first.public_key() != second.public_key()
    finally:
        await kube.delete(NAMESPACES, other)


async def test_deleted_or_altered_secret_is_put_back(kube: Kube, namespace: str) -> None:
    await create_issuer(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
    await wait_ready(kube, "my-ca", namespace)
    original, _ = await ca_from_secret(kube, "my-ca-cert", namespace)
    await kube.patch(
        SECRETS, "my-ca-cert", {"data": {"tls.crt": base64.b64encode(b"tampered").decode()}}, namespace
    )

    async def restored() -> bool:
        secret = await kube.find(SECRETS, "my-ca-cert", namespace)
        return bool(secret) and secret["data"]["tls.crt"] == original["data"]["tls.crt"]  # type: ignore[index]

    await wait_for(restored, what="tampered tls.crt restored")
    await kube.delete(SECRETS, "my-ca-cert", namespace)
    await wait_for(restored, what="deleted Secret restored")


async def test_schema_rejects_bad_key_size(kube: Kube, namespace: str) -> None:
    with pytest.raises(ApiError) as failure:
        await create_issuer(kube, "bad", namespace, {"privateKey": {"algorithm": "RSA", "size": 1234}})
    assert failure.value.status == 422
    assert "spec.privateKey.size" in str(failure.value)


async def test_deletion_removes_token_objects_and_secret(
    kube: Kube, namespace: str, sandbox: Sandbox
) -> None:
    await create_issuer(kube, "doomed", namespace, {"secretName": "doomed-cert"})
    await wait_ready(kube, "doomed", namespace)
    label = f"tcsissuer.tcs.intel.com/{namespace}.doomed"
    assert sandbox.hsm is not None
    assert object_blocks(await token_objects(sandbox.hsm), label)
    await kube.delete(TCS_ISSUERS, "doomed", namespace)
    await wait_for(lambda: _gone(kube, TCS_ISSUERS, "doomed", namespace), what="issuer finalized")
    assert await kube.find(SECRETS, "doomed-cert", namespace) is None
    assert object_blocks(await token_objects(sandbox.hsm), label) == []
