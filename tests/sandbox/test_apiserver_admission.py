"""Admission: kube's CertificateSigning/CertificateApproval plugins and cert-manager's webhook.

Cases ported from plugin/pkg/admission/certificates/{signing,approval}/admission_test.go, the CSR
strategy and validation tests of pkg/apis/certificates/validation/validation_test.go, and cert-manager's
internal/apis/certmanager/validation/certificaterequest_test.go and
internal/plugin/admission/certificaterequest/{approval,identity} tests, played over HTTP by
ServiceAccounts holding exactly the RBAC each case needs.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keyward.kube.crds import cert_manager_crds_path, crd_dir
from keyward.sandbox.apiserver import ApiServer
from tests.support.pki import b64

from .helpers import CSRS, Pki, http_client, unique

MERGE = {"Content-Type": "application/merge-patch+json"}
SIGNER = "example.com/sandbox-test"
STATUS_WRITER = {
    "apiGroups": ["certificates.k8s.io"],
    "resources": ["certificatesigningrequests/status"],
    "verbs": ["update", "patch"],
}
APPROVAL_WRITER = {
    "apiGroups": ["certificates.k8s.io"],
    "resources": ["certificatesigningrequests/approval"],
    "verbs": ["update", "patch"],
}


def signers(verb: str, group: str, *names: str) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": ["signers"], "verbs": [verb], "resourceNames": list(names)}


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[ApiServer]:
    crds = [*sorted(crd_dir().glob("tcs.intel.com_tcs*issuers.yaml")), cert_manager_crds_path()]
    async with ApiServer(crd_paths=crds) as api:
        yield api


@pytest.fixture
async def admin(server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(server, timeout=10) as client:
        yield client


@pytest.fixture
async def account(server: ApiServer) -> AsyncIterator[Any]:
    """ServiceAccounts with the given cluster rules, each in a namespace of its own."""
    clients: list[httpx.AsyncClient] = []

    def make(*rules: dict[str, Any], namespace: str = "") -> httpx.AsyncClient:
        namespace = namespace or f"a-{uuid.uuid4().hex[:8]}"
        token = server.service_account_token(namespace, "signer", cluster_rules=list(rules))
        client = http_client(server, token, timeout=10)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def new_csr(admin: httpx.AsyncClient, pki: Pki, signer: str = SIGNER) -> str:
    name = unique("csr")
    response = await admin.post(CSRS, json=pki.csr_object(name, signerName=signer))
    assert response.status_code == 201, response.text
    return f"{CSRS}/{name}"


def certificate_patch(pki: Pki) -> dict[str, Any]:
    return {"status": {"certificate": b64(pki.certificate_pem())}}


def failed_patch() -> dict[str, Any]:
    return {
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "Broken", "message": "no"}]}
    }


# -- CertificateSigning --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "granted",
    [(SIGNER,), ("example.com/*",), ("example.com/sandbox-test", "other.com/x")],
    ids=["exact-signer-name", "domain-wildcard", "one-of-several"],
)
async def test_signer_with_sign_on_the_signer_name_may_write_the_certificate(
    admin: httpx.AsyncClient, account: Any, pki: Pki, granted: tuple[str, ...]
) -> None:
    url = await new_csr(admin, pki)
    signer = account(STATUS_WRITER, signers("sign", "certificates.k8s.io", *granted))
    response = await signer.patch(url + "/status", json=certificate_patch(pki), headers=MERGE)
    assert response.status_code == 200, response.text
    assert response.json()["status"]["certificate"]


@pytest.mark.parametrize(
    "rules",
    [
        [STATUS_WRITER],
        [STATUS_WRITER, signers("sign", "certificates.k8s.io", "example.com/other")],
        [STATUS_WRITER, signers("sign", "certificates.k8s.io", "other.com/*")],
        [STATUS_WRITER, signers("approve", "certificates.k8s.io", SIGNER)],
        [STATUS_WRITER, signers("sign", "cert-manager.io", SIGNER)],
    ],
    ids=["no-sign", "other-signer", "other-domain", "approve-is-not-sign", "other-group"],
)
@pytest.mark.parametrize("write", ["certificate", "condition"])
async def test_writing_the_certificate_or_a_condition_without_sign_is_forbidden(
    admin: httpx.AsyncClient, account: Any, pki: Pki, rules: list[dict[str, Any]], write: str
) -> None:
    url = await new_csr(admin, pki)
    body = certificate_patch(pki) if write == "certificate" else failed_patch()
    response = await account(*rules).patch(url + "/status", json=body, headers=MERGE)
    assert response.status_code == 403
    name = url.rsplit("/", 1)[1]
    assert response.json()["message"] == (
        f'certificatesigningrequests.certificates.k8s.io "{name}" is forbidden: user not permitted to sign '
        f'requests with signerName "{SIGNER}"'
    )
    assert "status" not in (await admin.get(url)).json()


async def test_a_status_write_that_changes_neither_certificate_nor_conditions_needs_no_sign(
    admin: httpx.AsyncClient, account: Any, pki: Pki
) -> None:
    url = await new_csr(admin, pki)
    response = await account(STATUS_WRITER).patch(url + "/status", json={"status": {}}, headers=MERGE)
    assert response.status_code == 200


async def test_status_permission_is_needed_besides_sign(
    admin: httpx.AsyncClient, account: Any, pki: Pki
) -> None:
    url = await new_csr(admin, pki)
    signer = account(signers("sign", "certificates.k8s.io", SIGNER))
    response = await signer.patch(url + "/status", json=certificate_patch(pki), headers=MERGE)
    assert response.status_code == 403
    assert 'cannot patch resource "certificatesigningrequests/status"' in response.json()["message"]


# -- CertificateApproval -------------------------------------------------------------------------------


def approved(csr: dict[str, Any]) -> dict[str, Any]:
    csr["status"] = {
        "conditions": [{"type": "Approved", "status": "True", "reason": "Test", "message": "ok"}]
    }
    return csr


@pytest.mark.parametrize("granted", [SIGNER, "example.com/*"], ids=["exact", "wildcard"])
async def test_approver_with_approve_on_the_signer_name_may_approve(
    admin: httpx.AsyncClient, account: Any, pki: Pki, granted: str
) -> None:
    url = await new_csr(admin, pki)
    approver = account(APPROVAL_WRITER, signers("approve", "certificates.k8s.io", granted))
    response = await approver.put(url + "/approval", json=approved((await admin.get(url)).json()))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "rules",
    [[APPROVAL_WRITER], [APPROVAL_WRITER, signers("approve", "certificates.k8s.io", "other.com/x")]],
    ids=["no-approve", "other-signer"],
)
async def test_approving_without_approve_on_the_signer_is_forbidden(
    admin: httpx.AsyncClient, account: Any, pki: Pki, rules: list[dict[str, Any]]
) -> None:
    url = await new_csr(admin, pki)
    response = await account(*rules).put(url + "/approval", json=approved((await admin.get(url)).json()))
    assert response.status_code == 403
    assert f'user not permitted to approve requests with signerName "{SIGNER}"' in response.json()["message"]


async def test_approval_is_checked_against_the_stored_signer_name_not_the_written_one(
    admin: httpx.AsyncClient, account: Any, pki: Pki
) -> None:
    url = await new_csr(admin, pki)
    approver = account(APPROVAL_WRITER, signers("approve", "certificates.k8s.io", "mine.example/*"))
    body = approved((await admin.get(url)).json())
    body["spec"]["signerName"] = "mine.example/x"
    assert (await approver.put(url + "/approval", json=body)).status_code == 403


# -- CSR validation (validation_test.go) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (
            {"conditions": [{"type": "Failed", "status": "False"}]},
            'status.conditions[0].status: Unsupported value: "False": supported values: "True"',
        ),
        ({"conditions": [{"type": "Ready"}]}, "status.conditions[0].status: Required value"),
        ({"conditions": [{"status": "True"}]}, "status.conditions[0].type: Required value"),
        (
            {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Ready", "status": "False"}]},
            'status.conditions[1].type: Duplicate value: "Ready"',
        ),
        (
            {"conditions": [{"type": "Ready", "status": "Maybe"}]},
            'supported values: "False", "True", "Unknown"',
        ),
    ],
    ids=["failed-only-true", "status-required", "type-required", "duplicate-type", "unknown-status"],
)
async def test_csr_status_conditions_are_validated(
    admin: httpx.AsyncClient, pki: Pki, status: dict[str, Any], message: str
) -> None:
    url = await new_csr(admin, pki)
    response = await admin.patch(url + "/status", json={"status": status}, headers=MERGE)
    assert response.status_code == 422
    assert message in response.json()["message"]


async def test_csr_certificate_pem_blocks_may_not_carry_headers(admin: httpx.AsyncClient, pki: Pki) -> None:
    url = await new_csr(admin, pki)
    pem = pki.certificate_pem().decode().splitlines()
    with_headers = "\n".join([pem[0], "Proc-Type: 4,ENCRYPTED", "", *pem[1:]]) + "\n"
    response = await admin.patch(
        url + "/status", json={"status": {"certificate": b64(with_headers.encode())}}, headers=MERGE
    )
    assert response.status_code == 422
    assert "no PEM block headers are permitted" in response.json()["message"]


async def test_csr_certificate_is_set_by_status_only_and_main_resource_writes_keep_the_old_status(
    admin: httpx.AsyncClient, pki: Pki
) -> None:
    url = await new_csr(admin, pki)
    csr = (await admin.get(url)).json()
    csr["status"] = {"certificate": b64(pki.certificate_pem())}
    kept = await admin.put(url, json=csr)
    assert kept.status_code == 200 and "status" not in kept.json()
    via_approval = await admin.put(
        url + "/approval",
        json={
            **approved(csr),
            "status": {**approved(csr)["status"], "certificate": b64(pki.certificate_pem())},
        },
    )
    assert via_approval.status_code == 200 and "certificate" not in via_approval.json()["status"]


# -- cert-manager's webhook ----------------------------------------------------------------------------


def csr_pem(
    *,
    usages: x509.KeyUsage | None = None,
    extended: list[x509.ObjectIdentifier] | None = None,
    ca: bool | None = None,
) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc.example")])
    )
    if usages is not None:
        builder = builder.add_extension(usages, critical=True)
    if extended is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def key_usage(**bits: bool) -> x509.KeyUsage:
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
    )
    names += ("key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: bits.get(n, False) for n in names})


def certificate_request(name: str, pem: bytes, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": name},
        "spec": {
            "request": b64(pem),
            "issuerRef": {"group": "tcs.intel.com", "kind": "TCSIssuer", "name": "my-ca"},
            **spec,
        },
    }


async def requests_url(admin: httpx.AsyncClient) -> str:
    namespace = f"cr-{uuid.uuid4().hex[:8]}"
    assert (await admin.post("/api/v1/namespaces", json={"metadata": {"name": namespace}})).status_code == 201
    return f"/apis/cert-manager.io/v1/namespaces/{namespace}/certificaterequests"


def tampered(pem: bytes) -> bytes:
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0xFF
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("pem", "spec", "message"),
    [
        (
            b"this is not a CSR",
            {},
            'spec.request: Invalid value: "<request data>": error decoding certificate request PEM block',
        ),
        (
            b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
            {},
            "x509: malformed certificate request",
        ),
        (tampered(csr_pem()), {}, "x509: ECDSA verification failure"),
        (csr_pem(ca=True), {}, "encoded CSR error: IsCA true does not match expected value false"),
        (
            csr_pem(usages=key_usage(digital_signature=True)),
            {"usages": ["digital signature", "key encipherment"]},
            "encoded CSR error: the KeyUsages [ 'digital signature' ] do not match the expected KeyUsages "
            "[ 'digital signature', 'key encipherment' ]",
        ),
        (
            csr_pem(usages=key_usage(digital_signature=True), extended=[ExtendedKeyUsageOID.CLIENT_AUTH]),
            {"usages": ["digital signature", "server auth"]},
            "encoded CSR error: the ExtKeyUsages [ 'client auth' ] do not match the expected ExtKeyUsages "
            "[ 'server auth' ]",
        ),
        (csr_pem(), {"issuerRef": {"name": ""}}, "spec.issuerRef.name: Required value: must be specified"),
        (
            csr_pem(),
            {"issuerRef": {"name": "ca", "kind": "Fake"}},
            'spec.issuerRef.kind: Invalid value: "Fake": must be one of Issuer or ClusterIssuer',
        ),
    ],
    ids=[
        "not-pem",
        "not-a-csr",
        "bad-signature",
        "isca-mismatch",
        "key-usage-mismatch",
        "ext-key-usage-mismatch",
        "no-issuer-name",
        "bad-kind",
    ],
)
async def test_webhook_refuses_unusable_certificate_requests_at_create(
    admin: httpx.AsyncClient, pem: bytes, spec: dict[str, Any], message: str
) -> None:
    response = await admin.post(await requests_url(admin), json=certificate_request("bad", pem, **spec))
    assert response.status_code == 406
    body = response.json()
    assert body["reason"] == "NotAcceptable"
    assert body["message"].startswith('admission webhook "webhook.cert-manager.io" denied the request: ')
    assert message in body["message"]


async def test_webhook_accepts_a_csr_whose_extensions_agree_with_usages_and_is_ca(
    admin: httpx.AsyncClient,
) -> None:
    url = await requests_url(admin)
    agreeing = csr_pem(
        usages=key_usage(digital_signature=True, key_encipherment=True, key_cert_sign=True),
        extended=[ExtendedKeyUsageOID.SERVER_AUTH],
        ca=True,
    )
    spec = {"usages": ["digital signature", "key encipherment", "server auth"], "isCA": True}
    assert (await admin.post(url, json=certificate_request("ok", agreeing, **spec))).status_code == 201
    assert (await admin.post(url, json=certificate_request("bare", csr_pem()))).status_code == 201


async def test_webhook_records_the_requester_whatever_the_body_says(
    server: ApiServer, admin: httpx.AsyncClient
) -> None:
    url = await requests_url(admin)
    namespace = url.split("/")[5]
    token = server.service_account_token(
        namespace,
        "requester",
        rules=[{"apiGroups": ["cert-manager.io"], "resources": ["certificaterequests"], "verbs": ["create"]}],
    )
    async with http_client(server, token) as requester:
        body = certificate_request("mine", csr_pem(), username="admin", groups=["system:masters"])
        created = (await requester.post(url, json=body)).json()
    assert created["spec"]["username"] == f"system:serviceaccount:{namespace}:requester"
    assert created["spec"]["groups"] == [
        "system:serviceaccounts",
        f"system:serviceaccounts:{namespace}",
        "system:authenticated",
    ]
    assert created["spec"]["uid"] and created["spec"]["extra"]["authentication.kubernetes.io/credential-id"]


async def test_webhook_keeps_spec_and_cert_manager_annotations_immutable(admin: httpx.AsyncClient) -> None:
    url = await requests_url(admin)
    body = certificate_request("cr", csr_pem())
    body["metadata"]["annotations"] = {"cert-manager.io/certificate-name": "demo"}
    created = (await admin.post(url, json=body)).json()
    spec_change = await admin.patch(f"{url}/cr", json={"spec": {"duration": "1h"}}, headers=MERGE)
    assert spec_change.status_code == 406
    assert "spec: Forbidden: cannot change spec after creation" in spec_change.json()["message"]
    annotation = await admin.patch(
        f"{url}/cr",
        json={"metadata": {"annotations": {"cert-manager.io/certificate-name": "other"}}},
        headers=MERGE,
    )
    assert annotation.status_code == 406
    assert "metadata.annotations.cert-manager.io/certificate-name: Forbidden" in annotation.json()["message"]
    other = await admin.patch(f"{url}/cr", json={"metadata": {"annotations": {"team": "a"}}}, headers=MERGE)
    assert other.status_code == 200 and created["metadata"]["uid"] == other.json()["metadata"]["uid"]


def condition(kind: str, status: str = "True") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": "Test", "message": "by test"}


async def test_webhook_approval_conditions_are_set_once_true_and_exclusive(admin: httpx.AsyncClient) -> None:
    url = await requests_url(admin)
    await admin.post(url, json=certificate_request("cr", csr_pem()))
    status = f"{url}/cr/status"
    false = await admin.patch(
        status, json={"status": {"conditions": [condition("Approved", "False")]}}, headers=MERGE
    )
    assert false.status_code == 406
    assert (
        'status.conditions.Approved: Invalid value: "False": "Approved" condition may only be set to True'
        in false.json()["message"]
    )
    assert (
        await admin.patch(status, json={"status": {"conditions": [condition("Approved")]}}, headers=MERGE)
    ).status_code == 200
    both = await admin.patch(
        status, json={"status": {"conditions": [condition("Approved"), condition("Denied")]}}, headers=MERGE
    )
    assert both.status_code == 406
    assert "both 'Denied' and 'Approved' conditions cannot coexist" in both.json()["message"]
    changed = await admin.patch(
        status, json={"status": {"conditions": [condition("Ready", "False")]}}, headers=MERGE
    )
    assert changed.status_code == 406
    assert "'Approved' condition may not be modified once set" in changed.json()["message"]


@pytest.mark.parametrize(
    "granted",
    ["tcsissuers.tcs.intel.com/{namespace}.my-ca", "tcsissuers.tcs.intel.com/*"],
    ids=["exact", "wildcard"],
)
async def test_approving_a_certificate_request_needs_approve_on_the_issuer_signer(
    server: ApiServer, admin: httpx.AsyncClient, granted: str
) -> None:
    url = await requests_url(admin)
    namespace = url.split("/")[5]
    await admin.post(url, json=certificate_request("cr", csr_pem()))
    writer = {
        "apiGroups": ["cert-manager.io"],
        "resources": ["certificaterequests/status"],
        "verbs": ["patch"],
    }
    approve = signers("approve", "cert-manager.io", granted.format(namespace=namespace))
    body = {"status": {"conditions": [condition("Approved")]}}
    token = server.service_account_token(namespace, "plain", rules=[writer])
    async with http_client(server, token) as plain:
        refused = await plain.patch(f"{url}/cr/status", json=body, headers=MERGE)
    assert refused.status_code == 406
    assert refused.json()["message"].endswith(
        f'status.conditions: Forbidden: user "system:serviceaccount:{namespace}:plain" does not have '
        "permissions to set approved/denied conditions for issuer {my-ca TCSIssuer tcs.intel.com}"
    )
    token = server.service_account_token(namespace, "approver", rules=[writer], cluster_rules=[approve])
    async with http_client(server, token) as approver:
        assert (await approver.patch(f"{url}/cr/status", json=body, headers=MERGE)).status_code == 200
    log = server.permissions.entries(f"system:serviceaccount:{namespace}:approver")
    assert any(e.verb == "approve" and e.resource == "signers" and e.allowed for e in log)


async def test_cluster_issuer_signer_names_have_no_namespace_and_unknown_kinds_are_refused(
    server: ApiServer, admin: httpx.AsyncClient
) -> None:
    url = await requests_url(admin)
    namespace = url.split("/")[5]
    issuer = {"group": "tcs.intel.com", "kind": "TCSClusterIssuer", "name": "root"}
    await admin.post(url, json=certificate_request("cr", csr_pem(), issuerRef=issuer))
    unknown = {"group": "example.org", "kind": "Nope", "name": "x"}
    await admin.post(url, json=certificate_request("unknown", csr_pem(), issuerRef=unknown))
    writer = {
        "apiGroups": ["cert-manager.io"],
        "resources": ["certificaterequests/status"],
        "verbs": ["patch"],
    }
    approve = signers("approve", "cert-manager.io", "tcsclusterissuers.tcs.intel.com/root")
    token = server.service_account_token(
        namespace, "cluster-approver", rules=[writer], cluster_rules=[approve]
    )
    body = {"status": {"conditions": [condition("Denied")]}}
    async with http_client(server, token) as approver:
        assert (await approver.patch(f"{url}/cr/status", json=body, headers=MERGE)).status_code == 200
        refused = await approver.patch(f"{url}/unknown/status", json=body, headers=MERGE)
    assert refused.status_code == 406
    assert (
        "spec.issuerRef: Forbidden: referenced signer resource does not exist: {x Nope example.org}"
        in refused.json()["message"]
    )


async def test_without_the_webhook_any_certificate_request_is_stored(
    server: ApiServer, admin: httpx.AsyncClient
) -> None:
    url = await requests_url(admin)
    with server.without_certmanager_webhook():
        response = await admin.post(url, json=certificate_request("junk", b"not a csr"))
    assert response.status_code == 201
    assert server.certmanager_webhook
    assert base64.b64decode(response.json()["spec"]["request"]) == b"not a csr"
