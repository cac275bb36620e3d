"""The stand-in against the sandbox API server, with the test playing the issuer.

Each test gets its own namespace and its own stand-in watching only that namespace; the test signs
CertificateRequests itself with a tiny CA (as keyward's operator would) and watches what a user sees:
requests, conditions and the Secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import kr8s.asyncio
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from cryptography.x509.oid import NameOID

from keyward.errors import UserError
from keyward.kube.client import Kube
from keyward.kube.crds import cert_manager_crds_path, crd_dir
from keyward.kube.resources import CERTIFICATE_REQUESTS, CERTIFICATES, NAMESPACES, SECRETS
from keyward.sandbox.apiserver import ApiServer
from keyward.sandbox.certmanager import (
    NAMESPACE,
    RBAC_PATH,
    SERVICE_ACCOUNT,
    CertManagerStandIn,
    approve,
    deny,
    renew,
)
from tests.support.pki import b64
from tests.support.waiting import wait_for

T = TypeVar("T")
Body = dict[str, Any]
TIMEOUT = 15.0
ISSUER = {"group": "tcs.intel.com", "kind": "TCSIssuer", "name": "my-ca"}
REQUESTOR = "system:serviceaccount:cert-manager:cert-manager"


# -- the API server, a namespace and a stand-in per test -------------------------------------------------


@pytest.fixture(scope="session")
async def certmanager_api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiServer]:
    crds = [*sorted(crd_dir().glob("tcs.intel.com_tcs*issuers.yaml")), cert_manager_crds_path()]
    server = ApiServer(host="127.0.0.1", port=0, crd_paths=crds)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="session")
async def api_kube(certmanager_api: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Kube:
    """The test's own client: cluster-admin, like a person with the admin kubeconfig."""
    kubeconfig = tmp_path_factory.mktemp("certmanager-api") / "kubeconfig"
    certmanager_api.write_kubeconfig(kubeconfig)
    return Kube(await kr8s.asyncio.api(kubeconfig=str(kubeconfig)))


@pytest.fixture(scope="session")
async def standin_kube(certmanager_api: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Kube:
    """The stand-in's client: cert-manager's ServiceAccount with cert-manager's RBAC only."""
    path = tmp_path_factory.mktemp("certmanager-sa") / "kubeconfig"
    certmanager_api.service_account_kubeconfig(path, NAMESPACE, SERVICE_ACCOUNT, roles=RBAC_PATH)
    return Kube(await kr8s.asyncio.api(kubeconfig=str(path)))


@pytest.fixture
async def namespace(api_kube: Kube) -> str:
    name = f"cm-{uuid.uuid4().hex[:8]}"
    await api_kube.create(NAMESPACES, {"metadata": {"name": name}})
    return name


class StandIns:
    """Starts stand-ins for the test's namespace and stops them all at the end."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, *, auto_approve: bool = False) -> asyncio.Task[None]:
        standin = CertManagerStandIn(self.kube, auto_approve=auto_approve, namespaces=[self.namespace])
        task = asyncio.create_task(standin.run())
        self.tasks.append(task)
        return task

    async def stop(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled(), "the stand-in stopped by itself"


@pytest.fixture
async def standins(standin_kube: Kube, namespace: str) -> AsyncIterator[StandIns]:
    started = StandIns(standin_kube, namespace)
    yield started
    for task in started.tasks:
        if not task.done():
            await started.stop(task)


# -- helpers ---------------------------------------------------------------------------------------------


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll ``probe`` (the API is the only place to look) until it returns something truthy; fail naming
    ``what`` after TIMEOUT seconds."""
    return await wait_for(probe, TIMEOUT, what)


def condition(obj: Body, kind: str) -> Body:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


async def create_certificate(kube: Kube, namespace: str, name: str, **spec: Any) -> Body:
    body = {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"secretName": f"{name}-tls", "commonName": "intel.sgx.demo", "issuerRef": ISSUER, **spec},
    }
    return await kube.create(CERTIFICATES, body, namespace)


async def requests_of(kube: Kube, namespace: str, certificate: str) -> list[Body]:
    found = [
        r
        for r in await kube.list(CERTIFICATE_REQUESTS, namespace)
        if r["metadata"].get("annotations", {}).get("cert-manager.io/certificate-name") == certificate
    ]
    return sorted(
        found, key=lambda r: int(r["metadata"]["annotations"]["cert-manager.io/certificate-revision"])
    )


async def request_for(kube: Kube, namespace: str, certificate: str, revision: int) -> Body:
    async def probe() -> Body | None:
        for request in await requests_of(kube, namespace, certificate):
            annotations = request["metadata"]["annotations"]
            if annotations["cert-manager.io/certificate-revision"] == str(revision):
                return request
        return None

    return await eventually(probe, f"a CertificateRequest for {certificate} revision {revision}")


async def certificate_condition(kube: Kube, namespace: str, name: str, kind: str, status: str) -> Body:
    async def probe() -> Body | None:
        certificate = await kube.get(CERTIFICATES, name, namespace)
        return certificate if condition(certificate, kind).get("status") == status else None

    return await eventually(probe, f"Certificate {name} {kind}={status}")


def csr_of(request: Body) -> x509.CertificateSigningRequest:
    return x509.load_pem_x509_csr(base64.b64decode(request["spec"]["request"]))


def spki(key: Any) -> bytes:
    return bytes(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


class TinyCA:
    """Plays the external issuer: signs a CertificateRequest's CSR and writes the status it would."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tiny test CA")])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.certificate.public_bytes(Encoding.PEM)

    def sign(self, csr: x509.CertificateSigningRequest, lifetime: timedelta) -> x509.Certificate:
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.certificate.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + lifetime)
        )
        for extension in csr.extensions:
            if isinstance(extension.value, x509.SubjectAlternativeName | x509.BasicConstraints):
                builder = builder.add_extension(extension.value, critical=extension.critical)
        return builder.sign(self.key, hashes.SHA256())

    async def issue(
        self, kube: Kube, request: Body, lifetime: timedelta = timedelta(days=90)
    ) -> x509.Certificate:
        leaf = self.sign(csr_of(request), lifetime)
        current = await kube.get(
            CERTIFICATE_REQUESTS, request["metadata"]["name"], request["metadata"]["namespace"]
        )
        conditions = [c for c in current.get("status", {}).get("conditions", []) if c["type"] != "Ready"]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "Issued",
                "message": "Certificate fetched from issuer",
            }
        )
        status = {"conditions": conditions, "certificate": b64(leaf.public_bytes(Encoding.PEM) + self.pem)}
        status["ca"] = b64(self.pem)
        await kube.patch(
            CERTIFICATE_REQUESTS,
            request["metadata"]["name"],
            {"status": status},
            request["metadata"]["namespace"],
            subresource="status",
        )
        return leaf


@pytest.fixture(scope="module")
def tiny_ca() -> TinyCA:
    return TinyCA()


async def issued(kube: Kube, namespace: str, name: str, ca: TinyCA, revision: int = 1) -> Body:
    """Approve the request of ``revision``, sign it, and wait until the Certificate reports it."""
    request = await request_for(kube, namespace, name, revision)
    if condition(request, "Approved").get("status") != "True":
        await approve(kube, request["metadata"]["name"], namespace)
    await ca.issue(kube, request)

    async def probe() -> Body | None:
        certificate = await kube.get(CERTIFICATES, name, namespace)
        done = certificate.get("status", {}).get("revision") == revision
        return certificate if done and condition(certificate, "Ready").get("status") == "True" else None

    return await eventually(probe, f"Certificate {name} Ready at revision {revision}")


def secret_data(secret: Body, field: str) -> bytes:
    return base64.b64decode(secret["data"][field])


# -- tests -----------------------------------------------------------------------------------------------


async def test_a_certificate_gets_one_request_that_waits_for_approval(
    api_kube: Kube, namespace: str, standins: StandIns
) -> None:
    standins.start()
    certificate = await create_certificate(api_kube, namespace, "my-certificate")
    request = await request_for(api_kube, namespace, "my-certificate", 1)

    meta = request["metadata"]
    assert meta["name"].startswith("my-certificate-")
    assert meta["ownerReferences"][0]["uid"] == certificate["metadata"]["uid"]
    assert meta["ownerReferences"][0]["controller"] is True
    assert meta["annotations"]["cert-manager.io/certificate-name"] == "my-certificate"
    assert request["spec"]["issuerRef"] == ISSUER
    assert request["spec"]["username"] == REQUESTOR
    assert request["spec"]["usages"] == ["digital signature", "key encipherment"]
    assert csr_of(request).subject.rfc4514_string() == "CN=intel.sgx.demo"

    current = await certificate_condition(api_kube, namespace, "my-certificate", "Issuing", "True")
    assert condition(current, "Ready")["reason"] == "DoesNotExist"
    key_secret = await api_kube.get(
        SECRETS, meta["annotations"]["cert-manager.io/private-key-secret-name"], namespace
    )
    assert current["status"]["nextPrivateKeySecretName"] == key_secret["metadata"]["name"]
    key = load_pem_private_key(secret_data(key_secret, "tls.key"), None)
    assert spki(key.public_key()) == spki(csr_of(request).public_key())

    # Not approved by default (as in the TCS walkthrough), and a restarted stand-in does not ask twice.
    assert condition(request, "Approved") == {}
    await standins.stop(standins.tasks[0])
    standins.start()
    await issued(api_kube, namespace, "my-certificate", TinyCA())
    assert [r["metadata"]["name"] for r in await requests_of(api_kube, namespace, "my-certificate")] == [
        meta["name"]
    ]


async def test_approved_and_signed_request_fills_the_secret_and_readies_the_certificate(
    api_kube: Kube, namespace: str, standins: StandIns, tiny_ca: TinyCA
) -> None:
    standins.start()
    await create_certificate(
        api_kube,
        namespace,
        "web",
        dnsNames=["web.sandbox.example"],
        secretTemplate={"labels": {"app": "web"}},
    )
    request = await request_for(api_kube, namespace, "web", 1)
    await approve(api_kube, request["metadata"]["name"], namespace)
    approved = await api_kube.get(CERTIFICATE_REQUESTS, request["metadata"]["name"], namespace)
    assert condition(approved, "Approved")["status"] == "True"
    assert condition(approved, "Approved")["reason"] == "KeywardSandbox"
    with pytest.raises(UserError, match="already approved"):
        await approve(api_kube, request["metadata"]["name"], namespace)
    with pytest.raises(UserError, match="already approved"):
        await deny(api_kube, request["metadata"]["name"], namespace)

    leaf = await tiny_ca.issue(api_kube, request)
    ready = await certificate_condition(api_kube, namespace, "web", "Ready", "True")
    assert condition(ready, "Ready")["message"] == "Certificate is up to date and has not expired"
    assert condition(ready, "Issuing") == {}
    assert ready["status"]["revision"] == 1
    assert "nextPrivateKeySecretName" not in ready["status"]
    assert ready["status"]["notAfter"] == leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ready["status"]["renewalTime"] < ready["status"]["notAfter"]

    secret = await api_kube.get(SECRETS, "web-tls", namespace)
    assert secret["type"] == "kubernetes.io/tls"
    chain = x509.load_pem_x509_certificates(secret_data(secret, "tls.crt"))
    assert chain[0] == leaf and chain[1] == tiny_ca.certificate
    assert secret_data(secret, "ca.crt") == tiny_ca.pem
    assert secret_data(secret, "tls.key").startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    key = load_pem_private_key(secret_data(secret, "tls.key"), None)
    assert spki(key.public_key()) == spki(leaf.public_key())
    annotations = secret["metadata"]["annotations"]
    assert annotations["cert-manager.io/issuer-name"] == "my-ca"
    assert annotations["cert-manager.io/issuer-kind"] == "TCSIssuer"
    assert annotations["cert-manager.io/issuer-group"] == "tcs.intel.com"
    assert annotations["cert-manager.io/common-name"] == "intel.sgx.demo"
    assert annotations["cert-manager.io/alt-names"] == "web.sandbox.example"
    assert secret["metadata"]["labels"]["app"] == "web"

    async def key_secret_gone() -> bool:
        return (
            await api_kube.find(
                SECRETS,
                request["metadata"]["annotations"]["cert-manager.io/private-key-secret-name"],
                namespace,
            )
            is None
        )

    await eventually(key_secret_gone, "the next-key Secret to be deleted")


async def test_auto_approve_approves_like_cert_managers_approver(
    api_kube: Kube, namespace: str, standins: StandIns
) -> None:
    standins.start(auto_approve=True)
    await create_certificate(api_kube, namespace, "auto", privateKey={"algorithm": "ECDSA"})
    await request_for(api_kube, namespace, "auto", 1)

    async def approved() -> Body | None:
        request = (await requests_of(api_kube, namespace, "auto"))[0]
        return condition(request, "Approved") or None

    approval = await eventually(approved, "the request to be approved")
    assert approval["status"] == "True"
    assert approval["reason"] == "cert-manager.io"
    assert approval["message"] == "Certificate request has been approved by cert-manager.io"


async def test_auto_approve_needs_the_approval_rbac_of_the_issuer_kind(
    certmanager_api: ApiServer, api_kube: Kube, namespace: str, tmp_path: Path
) -> None:
    controller_only = [
        d for d in yaml.safe_load_all(RBAC_PATH.read_text()) if "approve" not in d["metadata"]["name"]
    ]
    account = f"no-approval-{namespace}"
    config = certmanager_api.service_account_kubeconfig(
        tmp_path / "kubeconfig", NAMESPACE, account, roles=controller_only
    )
    standin = CertManagerStandIn(
        Kube(await kr8s.asyncio.api(kubeconfig=str(config))), auto_approve=True, namespaces=[namespace]
    )
    task = asyncio.create_task(standin.run())
    try:
        await create_certificate(api_kube, namespace, "unapproved", privateKey={"algorithm": "ECDSA"})
        request = await request_for(api_kube, namespace, "unapproved", 1)
        user = f"system:serviceaccount:{NAMESPACE}:{account}"
        signer = f"tcsissuers.tcs.intel.com/{namespace}.my-ca"

        async def refused() -> bool:
            return any(
                e.verb == "approve" and e.name == signer and not e.allowed
                for e in certmanager_api.permissions.entries(user)
            )

        await eventually(refused, "the approval to be refused by RBAC")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    request = await api_kube.get(CERTIFICATE_REQUESTS, request["metadata"]["name"], namespace)
    assert not condition(request, "Approved") and not condition(request, "Denied")
    assert request["spec"]["username"] == user


async def test_a_denied_request_fails_the_certificate_until_renewed(
    api_kube: Kube, namespace: str, standins: StandIns, tiny_ca: TinyCA
) -> None:
    standins.start()
    await create_certificate(api_kube, namespace, "nope", privateKey={"algorithm": "ECDSA"})
    request = await request_for(api_kube, namespace, "nope", 1)
    await deny(api_kube, request["metadata"]["name"], namespace, message="not for this cluster")
    with pytest.raises(UserError, match="already denied"):
        await approve(api_kube, request["metadata"]["name"], namespace)

    failed = await certificate_condition(api_kube, namespace, "nope", "Issuing", "False")
    assert condition(failed, "Ready") | {"lastTransitionTime": None} == {
        "type": "Ready",
        "status": "False",
        "reason": "Denied",
        "message": "not for this cluster",
        "lastTransitionTime": None,
        "observedGeneration": 1,
    }
    assert "keyward sandbox renew nope" in condition(failed, "Issuing")["message"]
    assert failed["status"]["lastFailureTime"]
    assert failed["status"]["failedIssuanceAttempts"] == 1

    # renew asks again, right away: a fresh request for the same revision replaces the denied one.
    await renew(api_kube, "nope", namespace)
    with pytest.raises(UserError, match="already being issued"):
        await renew(api_kube, "nope", namespace)

    async def replaced() -> list[Body] | None:
        found = await requests_of(api_kube, namespace, "nope")
        names = [r["metadata"]["name"] for r in found]
        return found if names and request["metadata"]["name"] not in names else None

    [second] = await eventually(replaced, "the denied request to be replaced")
    assert condition(second, "Denied") == {}
    done = await issued(api_kube, namespace, "nope", tiny_ca)
    assert "lastFailureTime" not in done["status"]


async def test_a_failed_request_reports_the_issuers_message(
    api_kube: Kube, namespace: str, standins: StandIns
) -> None:
    standins.start()
    await create_certificate(api_kube, namespace, "bad", privateKey={"algorithm": "ECDSA"}, isCA=True)
    request = await request_for(api_kube, namespace, "bad", 1)
    assert request["spec"]["isCA"] is True
    ready = {"type": "Ready", "status": "False", "reason": "Failed", "message": "isCA is not allowed here"}
    await api_kube.patch(
        CERTIFICATE_REQUESTS,
        request["metadata"]["name"],
        {"status": {"conditions": [ready], "failureTime": "2030-01-01T00:00:00Z"}},
        namespace,
        subresource="status",
    )
    failed = await certificate_condition(api_kube, namespace, "bad", "Issuing", "False")
    assert condition(failed, "Ready")["reason"] == "Failed"
    assert condition(failed, "Ready")["message"] == "isCA is not allowed here"


@pytest.mark.parametrize("policy", ["Never", "Always"])
async def test_renew_issues_the_next_revision_with_the_key_the_rotation_policy_asks_for(
    api_kube: Kube, namespace: str, standins: StandIns, tiny_ca: TinyCA, policy: str
) -> None:
    standins.start()
    await create_certificate(
        api_kube,
        namespace,
        "rot",
        privateKey={"algorithm": "ECDSA", "rotationPolicy": policy, "encoding": "PKCS8"},
    )
    await issued(api_kube, namespace, "rot", tiny_ca)
    first_key = secret_data(await api_kube.get(SECRETS, "rot-tls", namespace), "tls.key")
    assert first_key.startswith(b"-----BEGIN PRIVATE KEY-----")

    await renew(api_kube, "rot", namespace)
    second = await request_for(api_kube, namespace, "rot", 2)
    old_public = spki(load_pem_private_key(first_key, None).public_key())
    assert (spki(csr_of(second).public_key()) == old_public) is (policy == "Never")

    await issued(api_kube, namespace, "rot", tiny_ca, revision=2)
    secret = await api_kube.get(SECRETS, "rot-tls", namespace)
    leaf = x509.load_pem_x509_certificates(secret_data(secret, "tls.crt"))[0]
    key = load_pem_private_key(secret_data(secret, "tls.key"), None)
    assert spki(key.public_key()) == spki(leaf.public_key()) == spki(csr_of(second).public_key())
    assert len(await requests_of(api_kube, namespace, "rot")) == 2


async def test_deleting_the_secret_or_changing_the_spec_issues_again(
    api_kube: Kube, namespace: str, standins: StandIns, tiny_ca: TinyCA
) -> None:
    standins.start()
    await create_certificate(api_kube, namespace, "again", privateKey={"algorithm": "ECDSA"})
    await issued(api_kube, namespace, "again", tiny_ca)

    await api_kube.delete(SECRETS, "again-tls", namespace)
    await issued(api_kube, namespace, "again", tiny_ca, revision=2)

    await api_kube.patch(CERTIFICATES, "again", {"spec": {"dnsNames": ["again.example"]}}, namespace)
    third = await request_for(api_kube, namespace, "again", 3)
    san = csr_of(third).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["again.example"]
    renewing = await api_kube.get(CERTIFICATES, "again", namespace)
    assert "spec.dnsNames" in condition(renewing, "Issuing")["message"]


async def test_an_impossible_spec_is_reported_on_the_certificate(
    api_kube: Kube, namespace: str, standins: StandIns
) -> None:
    standins.start()
    await create_certificate(api_kube, namespace, "odd", ipAddresses=["10.0.0.300"])
    failed = await certificate_condition(api_kube, namespace, "odd", "Ready", "False")
    assert condition(failed, "Ready")["reason"] == "InvalidSpec"
    assert '"10.0.0.300" is not an IP address' in condition(failed, "Ready")["message"]
    assert await requests_of(api_kube, namespace, "odd") == []


async def test_cmctl_commands_name_missing_objects(api_kube: Kube, namespace: str) -> None:
    with pytest.raises(UserError, match='CertificateRequest "ghost" does not exist') as denied:
        await approve(api_kube, "ghost", namespace)
    assert "kubectl get certificaterequests" in str(denied.value)
    with pytest.raises(UserError, match='Certificate "ghost" does not exist'):
        await renew(api_kube, "ghost", namespace)
