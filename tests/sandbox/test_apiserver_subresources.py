"""Conformance: the status subresource and CSR rules (kube-apiserver.md "Subresources")."""

from __future__ import annotations

import httpx
import pytest

from tests.support.pki import b64

from .helpers import CSRS, WIDGETS, Pki, unique, widget

MERGE = {"Content-Type": "application/merge-patch+json"}


async def test_object_writes_ignore_changes_to_status(client: httpx.AsyncClient, namespace: str) -> None:
    body = widget("w")
    body["status"] = {"phase": "Ready"}
    created = (await client.post(WIDGETS.format(ns=namespace), json=body)).json()
    assert "status" not in created
    url = WIDGETS.format(ns=namespace) + "/w"
    await client.patch(url + "/status", json={"status": {"phase": "Pending"}}, headers=MERGE)
    patched = await client.patch(
        url, json={"status": {"phase": "Failed"}, "spec": {"port": 9}}, headers=MERGE
    )
    assert patched.json()["status"] == {"phase": "Pending"}
    assert patched.json()["spec"]["port"] == 9


async def test_status_writes_change_only_status(client: httpx.AsyncClient, namespace: str) -> None:
    await client.post(WIDGETS.format(ns=namespace), json=widget("w", port=80))
    url = WIDGETS.format(ns=namespace) + "/w"
    patch = {"metadata": {"labels": {"x": "y"}}, "spec": {"port": 1}, "status": {"phase": "Ready"}}
    written = await client.patch(url + "/status", json=patch, headers=MERGE)
    assert written.status_code == 200
    stored = (await client.get(url)).json()
    assert stored["status"] == {"phase": "Ready"}
    assert stored["spec"]["port"] == 80
    assert "labels" not in stored["metadata"]


async def test_status_put_replaces_status(client: httpx.AsyncClient, namespace: str) -> None:
    await client.post(WIDGETS.format(ns=namespace), json=widget("w"))
    url = WIDGETS.format(ns=namespace) + "/w"
    current = (await client.get(url + "/status")).json()
    current["status"] = {"phase": "Ready", "observedGeneration": 1}
    response = await client.put(url + "/status", json=current)
    assert response.status_code == 200
    assert (await client.get(url)).json()["status"] == {"phase": "Ready", "observedGeneration": 1}


async def test_status_writes_are_validated_against_the_schema(
    client: httpx.AsyncClient, namespace: str
) -> None:
    await client.post(WIDGETS.format(ns=namespace), json=widget("w"))
    url = WIDGETS.format(ns=namespace) + "/w/status"
    response = await client.patch(url, json={"status": {"phase": "Exploded"}}, headers=MERGE)
    assert response.status_code == 422
    assert (
        'status.phase: Unsupported value: "Exploded": supported values: "Pending", "Ready", "Failed"'
        in (response.json()["message"])
    )


async def test_subresource_that_the_resource_does_not_declare_is_404(
    client: httpx.AsyncClient, namespace: str
) -> None:
    await client.post(WIDGETS.format(ns=namespace), json=widget("w"))
    response = await client.get(WIDGETS.format(ns=namespace) + "/w/approval")
    assert response.status_code == 404


async def create_csr(client: httpx.AsyncClient, pki: Pki, **spec: object) -> tuple[str, dict]:
    name = unique("csr")
    response = await client.post(CSRS, json=pki.csr_object(name, **spec))
    assert response.status_code == 201, response.text
    return f"{CSRS}/{name}", response.json()


def approval(csr: dict, kind: str = "Approved") -> dict:
    csr["status"] = {"conditions": [{"type": kind, "status": "True", "reason": "Test", "message": "by test"}]}
    return csr


async def test_csr_create_sets_the_requesting_user(client: httpx.AsyncClient, pki: Pki) -> None:
    _, csr = await create_csr(client, pki, username="mallory", groups=["hackers"], uid="x")
    assert csr["spec"]["username"] == "kubernetes-admin"
    assert csr["spec"]["groups"] == ["system:masters", "system:authenticated"]
    assert "uid" not in csr["spec"]


async def test_csr_expiration_seconds_below_600_is_422(client: httpx.AsyncClient, pki: Pki) -> None:
    response = await client.post(CSRS, json=pki.csr_object(unique("csr"), expirationSeconds=599))
    assert response.status_code == 422
    assert (
        "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds"
        in (response.json()["message"])
    )
    _, ok = await create_csr(client, pki, expirationSeconds=600)
    assert ok["spec"]["expirationSeconds"] == 600


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("request", b64(b"not pem"), "PEM block type must be CERTIFICATE REQUEST"),
        ("signerName", "no-slash", "spec.signerName: Invalid value"),
        ("usages", ["teleportation"], 'spec.usages[0]: Unsupported value: "teleportation"'),
        ("usages", [], "spec.usages: Required value"),
    ],
)
async def test_csr_spec_is_validated_on_create(
    client: httpx.AsyncClient, pki: Pki, field: str, value: object, message: str
) -> None:
    response = await client.post(CSRS, json=pki.csr_object(unique("csr"), **{field: value}))
    assert response.status_code == 422
    assert message in response.json()["message"]


async def test_csr_spec_is_immutable_after_create(client: httpx.AsyncClient, pki: Pki) -> None:
    url, csr = await create_csr(client, pki)
    original = csr["spec"]
    csr["spec"] = {**original, "signerName": "example.com/other", "usages": ["server auth"]}
    csr["metadata"]["labels"] = {"seen": "yes"}
    updated = (await client.put(url, json=csr)).json()
    assert updated["spec"] == original
    assert updated["metadata"]["labels"] == {"seen": "yes"}
    via_status = await client.patch(
        url + "/status", json={"spec": {"signerName": "example.com/x"}}, headers=MERGE
    )
    assert via_status.json()["spec"] == original


async def test_csr_approval_only_through_the_approval_subresource(
    client: httpx.AsyncClient, pki: Pki
) -> None:
    url, csr = await create_csr(client, pki)
    ignored = (await client.put(url, json=approval(dict(csr)))).json()
    assert "status" not in ignored
    via_status = await client.put(url + "/status", json=approval((await client.get(url)).json()))
    assert via_status.status_code == 422
    assert 'updates may not add a condition of type "Approved"' in via_status.json()["message"]
    assert "status" not in (await client.get(url)).json()
    approved = await client.put(url + "/approval", json=approval((await client.get(url)).json()))
    assert approved.status_code == 200
    condition = approved.json()["status"]["conditions"][0]
    assert condition["type"] == "Approved"
    assert condition["lastUpdateTime"] and condition["lastTransitionTime"]


async def test_csr_approved_and_denied_are_mutually_exclusive(client: httpx.AsyncClient, pki: Pki) -> None:
    url, csr = await create_csr(client, pki)
    approved = (await client.put(url + "/approval", json=approval(csr))).json()
    approved["status"]["conditions"].append({"type": "Denied", "status": "True", "reason": "Changed"})
    response = await client.put(url + "/approval", json=approved)
    assert response.status_code == 422
    assert "Approved and Denied conditions are mutually exclusive" in response.json()["message"]


async def test_csr_approval_conditions_are_never_removed(client: httpx.AsyncClient, pki: Pki) -> None:
    url, csr = await create_csr(client, pki)
    denied = (await client.put(url + "/approval", json=approval(csr, "Denied"))).json()
    denied["status"]["conditions"] = []
    response = await client.put(url + "/approval", json=denied)
    assert response.status_code == 422
    assert 'updates may not remove a condition of type "Denied"' in response.json()["message"]
    removed_by_status = await client.patch(
        url + "/status", json={"status": {"conditions": []}}, headers=MERGE
    )
    assert removed_by_status.status_code == 422
    assert 'updates may not remove a condition of type "Denied"' in removed_by_status.json()["message"]
    assert (await client.get(url)).json()["status"]["conditions"][0]["type"] == "Denied"


async def test_csr_certificate_is_set_only_through_status(client: httpx.AsyncClient, pki: Pki) -> None:
    url, csr = await create_csr(client, pki)
    certificate = b64(pki.certificate_pem())
    approved = (await client.put(url + "/approval", json=approval(csr))).json()
    approved["status"]["certificate"] = certificate
    via_approval = (await client.put(url + "/approval", json=approved)).json()
    assert "certificate" not in via_approval["status"]
    via_object = await client.patch(url, json={"status": {"certificate": certificate}}, headers=MERGE)
    assert "certificate" not in via_object.json()["status"]
    issued = await client.patch(url + "/status", json={"status": {"certificate": certificate}}, headers=MERGE)
    assert issued.status_code == 200
    assert issued.json()["status"]["certificate"] == certificate
    assert issued.json()["status"]["conditions"][0]["type"] == "Approved"


async def test_csr_certificate_is_set_once(client: httpx.AsyncClient, pki: Pki) -> None:
    url, _ = await create_csr(client, pki)
    first = {"status": {"certificate": b64(pki.certificate_pem("one"))}}
    assert (await client.patch(url + "/status", json=first, headers=MERGE)).status_code == 200
    second = {"status": {"certificate": b64(pki.certificate_pem("two"))}}
    response = await client.patch(url + "/status", json=second, headers=MERGE)
    assert response.status_code == 422
    assert "updates may not modify existing certificate content" in response.json()["message"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello", "must contain at least one CERTIFICATE PEM block"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 'found "PRIVATE KEY"'),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "malformed certificate"),
    ],
)
async def test_csr_certificate_must_be_pem_certificate_blocks(
    client: httpx.AsyncClient, pki: Pki, content: bytes, message: str
) -> None:
    url, _ = await create_csr(client, pki)
    response = await client.patch(
        url + "/status", json={"status": {"certificate": b64(content)}}, headers=MERGE
    )
    assert response.status_code == 422
    assert message in response.json()["message"]
    assert response.json()["details"]["causes"][0]["field"] == "status.certificate"


async def test_csr_chain_of_several_certificates_is_accepted(client: httpx.AsyncClient, pki: Pki) -> None:
    url, _ = await create_csr(client, pki)
    chain = pki.certificate_pem("leaf") + pki.certificate_pem("ca")
    response = await client.patch(
        url + "/status", json={"status": {"certificate": b64(chain)}}, headers=MERGE
    )
    assert response.status_code == 200


async def test_csr_failed_condition_is_set_through_status(client: httpx.AsyncClient, pki: Pki) -> None:
    url, _ = await create_csr(client, pki)
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "SignerError"}]}}
    response = await client.patch(url + "/status", json=failed, headers=MERGE)
    assert response.json()["status"]["conditions"][0]["type"] == "Failed"
