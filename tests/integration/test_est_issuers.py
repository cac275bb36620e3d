"""EstIssuer / EstClusterIssuer / EstOrder (issue 7): a real operator process against the sandbox API,
enrolling at the project's EST server on 127.0.0.1 (and at misbehaving peers), checked with openssl."""

from __future__ import annotations

import base64
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from keyward.kube.client import Kube
from keyward.kube.resources import (
    CERTIFICATE_REQUESTS,
    CERTIFICATES,
    CSRS,
    EST_CLUSTER_ISSUERS,
    EST_ISSUERS,
    EST_ORDERS,
    SECRETS,
)
from keyward.sandbox.certmanager import approve, deny, renew
from keyward.sandbox.operator_process import OperatorProcess
from keyward.sandbox.runner import Sandbox
from tests.integration.conftest import OPERATOR_NAMESPACE, OperatorRunner
from tests.integration.est_peers import (
    IP_ONLY,
    LOCALHOST,
    PASSWORD,
    Peer,
    RunningEst,
    basic_auth_secret,
    elsewhere,
    est_server,
    misbehaving,
    start_peer,
    tls_identity,
)
from tests.integration.helpers import openssl_verify, ready_condition
from tests.integration.requests_helpers import (
    approve_csr,
    chain_of,
    create_csr,
    csr_requester,
    failed_condition,
    make_csr,
    reference_grant,
    wait_csr_certificate,
)
from tests.support.pki import Issuer, b64, cacert, ec_key, key_pem, name, pem
from tests.support.tools import kubectl
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("est_operator")

OPERATOR_ENV = {
    "KEYWARD_EST_RECHECK_INTERVAL": "2",
    "KEYWARD_EST_AUTH_RETRY_DELAY": "1",
    "KEYWARD_EST_BACKOFF_LIMIT": "1",
    "KEYWARD_EST_MAX_RETRY_DURATION": "3",
    "KEYWARD_EST_TIMEOUT": "5",
}


# ---- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def est_ca() -> Issuer:
    return Issuer.self_signed("Test EST CA")


@pytest.fixture(scope="module")
def other_ca() -> Issuer:
    return Issuer.self_signed("Some Other CA")


@pytest.fixture(scope="module")
async def est(est_ca: Issuer, other_ca: Issuer) -> AsyncIterator[RunningEst]:
    running = est_server(est_ca, other_ca)
    await running.start()
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def est_operator(operators: OperatorRunner) -> OperatorProcess:
    """The operator with short EST delays (401 retry 1 s, give up on transient failures after 3 s)."""
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in OPERATOR_ENV.items():
            patch.setenv(variable, value)
        return await operators.start()


@pytest.fixture(scope="module")
async def peers(est_ca: Issuer) -> AsyncIterator[dict[str, Peer]]:
    """``odd``: misbehaves by label, certificate for 127.0.0.1 only; ``elsewhere``: another host."""
    started: dict[str, Peer] = {}
    started["elsewhere"] = await start_peer(elsewhere(est_ca), tls_identity(est_ca, LOCALHOST))
    started["odd"] = await start_peer(
        misbehaving(est_ca, lambda: started["elsewhere"].port), tls_identity(est_ca, IP_ONLY)
    )
    yield started
    for peer in started.values():
        await peer.stop()


# ---- helpers --------------------------------------------------------------------------------------------


async def make_issuer(
    kube: Kube,
    namespace: str | None,
    port: int,
    anchors: tuple[x509.Certificate, ...],
    *,
    name: str = "est",
    credentials: str | None = "est-credentials",
    cluster: bool = False,
    **spec: Any,
) -> None:
    body: dict[str, Any] = {"host": "127.0.0.1", "port": port, "cacert": cacert(*anchors), **spec}
    if credentials:
        body["secretName"] = credentials
    meta: dict[str, Any] = {"name": name}
    if not cluster:
        meta["namespace"] = namespace
    await kube.create(
        EST_CLUSTER_ISSUERS if cluster else EST_ISSUERS, {"metadata": meta, "spec": body}, namespace
    )


async def put_credentials(
    kube: Kube, namespace: str, password: str = PASSWORD, name: str = "est-credentials"
) -> None:
    await kube.create(SECRETS, basic_auth_secret(name, password=password), namespace)


async def wait_issuer(
    kube: Kube,
    name: str,
    namespace: str | None,
    status: str,
    reason: str | None = None,
    *,
    cluster: bool = False,
) -> dict[str, Any]:
    resource = EST_CLUSTER_ISSUERS if cluster else EST_ISSUERS

    async def probe() -> dict[str, Any] | None:
        ready = ready_condition(await kube.find(resource, name, namespace))
        return ready if ready.get("status") == status and reason in (None, ready.get("reason")) else None

    return await wait_for(probe, what=f"{resource.kind} {name} Ready={status} {reason or ''}")


async def ready_issuer(kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer, **spec: Any) -> None:
    await put_credentials(kube, namespace)
    await make_issuer(kube, namespace, est.port, (est_ca.certificate,), **spec)
    await wait_issuer(kube, spec.get("name", "est"), namespace, "True", "Reconcile")


async def request(
    kube: Kube, namespace: str, name: str, common_name: str, *, issuer: str = "est", kind: str = "EstIssuer"
) -> None:
    spec = {
        "request": base64.b64encode(make_csr(common_name)).decode(),
        "issuerRef": {"group": "est.mitre.org", "kind": kind, "name": issuer},
    }
    await kube.create(
        CERTIFICATE_REQUESTS, {"metadata": {"name": name, "namespace": namespace}, "spec": spec}, namespace
    )
    await approve(kube, name, namespace)


async def wait_request(
    kube: Kube, namespace: str, name: str, reason: str, timeout: float = 20
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        obj = await kube.find(CERTIFICATE_REQUESTS, name, namespace)
        return obj if ready_condition(obj).get("reason") == reason else None

    return await wait_for(probe, timeout=timeout, what=f"CertificateRequest {name} {reason}")


async def order_of(kube: Kube, namespace: str, owner: str) -> dict[str, Any] | None:
    for order in await kube.list(EST_ORDERS, namespace):
        if any(ref["name"] == owner for ref in order["metadata"].get("ownerReferences") or []):
            return order
    return None


async def wait_order(kube: Kube, namespace: str, owner: str, **status: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        order = await order_of(kube, namespace, owner)
        got = (order or {}).get("status") or {}
        return (
            order
            if all(
                check(got.get(k)) if callable(check) else got.get(k) == check for k, check in status.items()
            )
            else None
        )

    return await wait_for(probe, what=f"EstOrder of {owner} with {status}")


async def test_seed_example_issues_then_renews_with_simplereenroll(
    kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer, tmp_path: Path
) -> None:
    await put_credentials(kube, namespace)
    await make_issuer(kube, namespace, est.port, (est_ca.certificate,), name="testrfc7030")
    await wait_issuer(kube, "testrfc7030", namespace, "True", "Reconcile")
    await kube.create(
        CERTIFICATES,
        {
            "metadata": {"name": "test-cert", "namespace": namespace},
            "spec": {
                "secretName": "test-cert",
                "commonName": "example.com",
                "dnsNames": ["example.com"],
                "usages": ["server auth", "client auth"],
                "issuerRef": {"group": "est.mitre.org", "kind": "EstIssuer", "name": "testrfc7030"},
            },
        },
        namespace,
    )
    first = await wait_for(lambda: kube.list(CERTIFICATE_REQUESTS, namespace), what="the CertificateRequest")
    await approve(kube, first[0]["metadata"]["name"], namespace)
    issued = await wait_request(kube, namespace, first[0]["metadata"]["name"], "Issued")
    assert base64.b64decode(issued["status"]["ca"]) == est_ca.certificate.public_bytes(
        serialization.Encoding.PEM
    )

    async def secret_serial(previous: int | None = None) -> int | None:
        secret = await kube.find(SECRETS, "test-cert", namespace)
        if not secret:
            return None
        serial = x509.load_pem_x509_certificates(base64.b64decode(secret["data"]["tls.crt"]))[0].serial_number
        return serial if serial != previous else None

    old_serial = await wait_for(secret_serial, what="Secret test-cert")
    secret = await kube.get(SECRETS, "test-cert", namespace)
    chain_pem = base64.b64decode(secret["data"]["tls.crt"])
    assert openssl_verify(tmp_path, est_ca.certificate, chain_pem).endswith(": OK")
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["example.com"]
    assert set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    order = await wait_order(kube, namespace, first[0]["metadata"]["name"], state="Issued", attempts=1)
    assert order["spec"]["renewal"] is False
    listing = (await kubectl("get", "estorders", "-n", namespace)).stdout.splitlines()
    assert listing[0].split() == ["NAME", "AGE", "STATE", "ATTEMPTS", "LAST", "ERROR"]
    assert listing[1].split()[2:4] == ["Issued", "1"]

    await renew(kube, "test-cert", namespace)

    async def second_request() -> str | None:
        names = {r["metadata"]["name"] for r in await kube.list(CERTIFICATE_REQUESTS, namespace)}
        return next(iter(names - {first[0]["metadata"]["name"]}), None)

    second = await wait_for(second_request, what="the renewal CertificateRequest")
    await approve(kube, second, namespace)
    await wait_request(kube, namespace, second, "Issued")
    renewal_order = await wait_order(kube, namespace, second, state="Issued")
    assert renewal_order["spec"]["renewal"] is True
    await wait_for(lambda: secret_serial(old_serial), what="the renewed certificate in Secret test-cert")
    renewal = est.ca.enrollments[-1]
    assert (renewal.common_name, renewal.renewal) == ("example.com", True)
    assert renewal.client.method == "cert" and renewal.client.serial == old_serial, (
        "simplereenroll authenticated with the certificate being renewed"
    )


async def test_cluster_issuer_serves_requests_and_kubernetes_csrs(
    kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer
) -> None:
    issuer = f"est-{uuid.uuid4().hex[:6]}"
    secret = f"{issuer}-credentials"
    await put_credentials(kube, OPERATOR_NAMESPACE, name=secret)
    try:
        await make_issuer(
            kube, None, est.port, (est_ca.certificate,), name=issuer, credentials=secret, cluster=True
        )
        await wait_issuer(kube, issuer, None, "True", "Reconcile", cluster=True)
        await request(
            kube, namespace, "via-cluster", "cluster.example", issuer=issuer, kind="EstClusterIssuer"
        )
        issued = await wait_request(kube, namespace, "via-cluster", "Issued")
        (leaf,) = chain_of(issued)  # the root goes to status.ca, not into the chain
        leaf.verify_directly_issued_by(est_ca.certificate)
        assert x509.load_pem_x509_certificate(base64.b64decode(issued["status"]["ca"])) == est_ca.certificate

        csr_name = f"csr-{uuid.uuid4().hex[:6]}"
        await create_csr(kube, csr_name, make_csr("node.example"), f"estclusterissuer.est.mitre.org/{issuer}")
        try:
            await approve_csr(kube, csr_name)
            (csr_leaf,) = await wait_csr_certificate(kube, csr_name)
            csr_leaf.verify_directly_issued_by(est_ca.certificate)
            order = await wait_order(kube, OPERATOR_NAMESPACE, csr_name, state="Issued")
            owner = order["metadata"]["ownerReferences"][0]
            assert (owner["kind"], owner["name"]) == ("CertificateSigningRequest", csr_name)
        finally:
            await kube.delete(CSRS, csr_name)
    finally:
        await kube.delete(EST_CLUSTER_ISSUERS, issuer)
        await kube.delete(SECRETS, secret, OPERATOR_NAMESPACE)


async def test_namespaced_issuer_signs_kubernetes_csrs_by_signer_name(
    kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer
) -> None:
    await ready_issuer(kube, namespace, est, est_ca)
    csr_name = f"csr-{uuid.uuid4().hex[:6]}"
    await create_csr(kube, csr_name, make_csr("pod.example"), f"estissuer.est.mitre.org/{namespace}.est")
    try:
        await approve_csr(kube, csr_name)
        (leaf,) = await wait_csr_certificate(kube, csr_name)
        assert leaf.subject.rfc4514_string() == "CN=pod.example"
    finally:
        await kube.delete(CSRS, csr_name)


async def test_a_csr_for_another_namespaces_est_issuer_gets_no_order_unless_its_requester_may_reference_it(
    kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer, sandbox: Sandbox, tmp_path: Path
) -> None:
    await ready_issuer(kube, namespace, est, est_ca)
    client, username = await csr_requester(sandbox, tmp_path)
    denied, granted = f"denied-{uuid.uuid4().hex[:6]}", f"granted-{uuid.uuid4().hex[:6]}"
    signer = f"estissuers.est.mitre.org/{namespace}.est"  # the plural spelling: the same check
    try:
        await create_csr(client, denied, make_csr("stolen.example"), signer)
        await approve_csr(kube, denied)
        condition = await failed_condition(kube, denied)
        assert condition["reason"] == "DeniedReference"
        assert condition["message"].startswith(f"{username} may not reference EstIssuer {namespace}/est (")
        assert "signers.est.mitre.org named est or * in namespace" in condition["message"]
        assert await order_of(kube, OPERATOR_NAMESPACE, denied) is None, "no EstOrder, no enrollment"

        requester_namespace, requester_name = username.split(":")[2:]
        grant = reference_grant("est.mitre.org", namespace, "*", requester_namespace, requester_name)
        await kubectl("apply", "-f", "-", input_text=grant)
        await create_csr(client, granted, make_csr("allowed.example"), signer)
        await approve_csr(kube, granted)
        (leaf,) = await wait_csr_certificate(kube, granted)
        leaf.verify_directly_issued_by(est_ca.certificate)
    finally:
        for name in (denied, granted):
            await kube.delete(CSRS, name)


async def test_initial_enrollment_with_a_tls_client_certificate(
    kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer
) -> None:
    key = ec_key()
    device = est_ca.issue(name("bootstrap-device"), key.public_key())
    await kube.create(
        SECRETS,
        {
            "metadata": {"name": "est-client"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(pem(device)), "tls.key": b64(key_pem(key))},
        },
        namespace,
    )
    await make_issuer(
        kube, namespace, est.port, (est_ca.certificate,), credentials=None, clientCertSecretName="est-client"
    )
    await wait_issuer(kube, "est", namespace, "True", "Reconcile")
    await request(kube, namespace, "by-certificate", "by-certificate.example")
    await wait_request(kube, namespace, "by-certificate", "Issued")
    enrollment = next(e for e in est.ca.enrollments if e.common_name == "by-certificate.example")
    assert (enrollment.client.method, enrollment.client.serial) == ("cert", device.serial_number)


# ---- the request contract -------------------------------------------------------------------------------


async def test_nothing_before_approval_denial_recorded_missing_issuer_waits(
    kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer
) -> None:
    spec = {
        "request": base64.b64encode(make_csr("waiting.example")).decode(),
        "issuerRef": {"group": "est.mitre.org", "kind": "EstIssuer", "name": "est"},
    }
    for request_name in ("unapproved", "denied"):
        await kube.create(
            CERTIFICATE_REQUESTS, {"metadata": {"name": request_name, "namespace": namespace}, "spec": spec}
        )
    await deny(kube, "denied", namespace, message="not for this service")
    await request(kube, namespace, "early", "early.example")
    pending = await wait_request(kube, namespace, "early", "Pending")
    assert (
        "EstIssuer" in ready_condition(pending)["message"]
        and "not found" in ready_condition(pending)["message"]
    )
    denied = await wait_request(kube, namespace, "denied", "Denied")
    assert ready_condition(denied)["message"] == "not for this service" and denied["status"]["failureTime"]

    await ready_issuer(kube, namespace, est, est_ca)
    await wait_request(kube, namespace, "early", "Issued")
    unapproved = await kube.get(CERTIFICATE_REQUESTS, "unapproved", namespace)
    assert not (unapproved.get("status") or {}).get("certificate")
    assert await order_of(kube, namespace, "unapproved") is None
    assert await order_of(kube, namespace, "denied") is None
    assert est.ca.attempts("waiting.example") == 0


async def test_unusable_request_fails_without_reaching_the_server(
    sandbox: Sandbox, kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer
) -> None:
    await ready_issuer(kube, namespace, est, est_ca)
    spec = {
        "request": base64.b64encode(b"this is not a CSR").decode(),
        "issuerRef": {"group": "est.mitre.org", "kind": "EstIssuer", "name": "est"},
    }
    with sandbox.api.without_certmanager_webhook():  # cert-manager's webhook would refuse it at create
        await kube.create(
            CERTIFICATE_REQUESTS, {"metadata": {"name": "junk", "namespace": namespace}, "spec": spec}
        )
    await approve(kube, "junk", namespace)
    failed = await wait_request(kube, namespace, "junk", "Failed")
    assert "not a PEM or DER" in ready_condition(failed)["message"] and failed["status"]["failureTime"]
    assert await order_of(kube, namespace, "junk") is None


async def test_server_refusal_fails_the_request_with_its_message(
    kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer
) -> None:
    await ready_issuer(kube, namespace, est, est_ca)
    await request(kube, namespace, "refused", "refuse.example")
    failed = await wait_request(kube, namespace, "refused", "Failed")
    message = ready_condition(failed)["message"]
    assert "(400)" in message and "not allowed by this CA's policy" in message
    assert PASSWORD not in message
    order = await wait_order(kube, namespace, "refused", state="Failed", attempts=1)
    assert "not allowed" in order["status"]["lastError"]


async def test_202_is_retried_after_retry_after(
    kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer
) -> None:
    await ready_issuer(kube, namespace, est, est_ca)
    common_name = f"pending-{uuid.uuid4().hex[:6]}.example"
    await request(kube, namespace, "later", common_name)
    await wait_request(kube, namespace, "later", "Issued")
    order = await wait_order(kube, namespace, "later", state="Issued")
    assert order["status"]["attempts"] == est.ca.attempts(common_name) == 3, (
        "two 202 answers, then the certificate"
    )


async def test_wrong_password_is_retried_and_succeeds_once_the_secret_is_fixed(
    kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer
) -> None:
    await put_credentials(kube, namespace, password="wrong-password")
    await make_issuer(kube, namespace, est.port, (est_ca.certificate,))
    await wait_issuer(kube, "est", namespace, "True")  # /cacerts needs no credentials
    await request(kube, namespace, "creds", "creds.example")
    order = await wait_order(
        kube, namespace, "creds", state="Waiting", lastError=lambda e: bool(e and "401" in e)
    )
    assert "wrong-password" not in str(order) and "wrong-password" not in str(
        await kube.get(CERTIFICATE_REQUESTS, "creds", namespace)
    )
    pending = await kube.get(CERTIFICATE_REQUESTS, "creds", namespace)
    assert ready_condition(pending)["reason"] == "Pending" and "401" in ready_condition(pending)["message"]
    await kube.patch(SECRETS, "est-credentials", {"data": basic_auth_secret("x")["data"]}, namespace)
    await wait_request(kube, namespace, "creds", "Issued")
    order = await wait_order(kube, namespace, "creds", state="Issued", lastError="")
    assert order["status"]["attempts"] >= 2


async def test_server_errors_are_retried_then_fail_after_the_maximum_duration(
    kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer
) -> None:
    await ready_issuer(kube, namespace, est, est_ca)
    await request(kube, namespace, "busy", "busy.example")
    failed = await wait_request(kube, namespace, "busy", "Failed", timeout=30)
    message = ready_condition(failed)["message"]
    assert "gave up after" in message and "503" in message and "maintenance" in message
    order = await wait_order(kube, namespace, "busy", state="Failed")
    assert order["status"]["attempts"] >= 2


async def test_server_down_then_up(kube: Kube, namespace: str, est_ca: Issuer, other_ca: Issuer) -> None:
    own = est_server(est_ca, other_ca)
    await own.start()
    port = own.port
    try:
        await ready_issuer(kube, namespace, own, est_ca)
        await own.stop()
        await request(kube, namespace, "outage", "outage.example")
        await wait_order(
            kube, namespace, "outage", state="Waiting", lastError=lambda e: bool(e and "refused" in e)
        )
        await own.start(port)
        await wait_request(kube, namespace, "outage", "Issued")
    finally:
        await own.stop()


async def test_deleted_order_is_created_again_until_the_request_finishes(
    kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer
) -> None:
    await ready_issuer(kube, namespace, est, est_ca)
    common_name = f"hold-{uuid.uuid4().hex[:6]}.example"
    est.ca.held.add(common_name)
    await request(kube, namespace, "held", common_name)
    first = await wait_order(kube, namespace, "held", state="Waiting")
    await kube.delete(EST_ORDERS, first["metadata"]["name"], namespace)

    async def recreated() -> dict[str, Any] | None:
        order = await order_of(kube, namespace, "held")
        return order if order and order["metadata"]["uid"] != first["metadata"]["uid"] else None

    second = await wait_for(recreated, what="the EstOrder created again")
    assert second["metadata"]["name"] == first["metadata"]["name"]
    est.ca.held.discard(common_name)
    await wait_request(kube, namespace, "held", "Issued")


async def test_an_issued_order_never_enrolls_again(
    kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer
) -> None:
    await ready_issuer(kube, namespace, est, est_ca)
    common_name = f"once-{uuid.uuid4().hex[:6]}.example"
    await request(kube, namespace, "once", common_name)
    await wait_request(kube, namespace, "once", "Issued")
    order = await wait_order(kube, namespace, "once", state="Issued")
    # As if the process had died after writing the certificate but before marking the order Issued:
    stale = {
        "metadata": {"resourceVersion": order["metadata"]["resourceVersion"]},
        "status": {"state": "Enrolling", "nextAttemptTime": "2000-01-01T00:00:00Z"},
    }
    await kube.patch(EST_ORDERS, order["metadata"]["name"], stale, namespace, subresource="status")
    await wait_order(kube, namespace, "once", state="Issued", nextAttemptTime=None)
    assert est.ca.attempts(common_name) == 1


# ---- issuer checks --------------------------------------------------------------------------------------


async def test_issuer_recovers_when_its_secret_appears_and_leaves_service_on_a_ca_change(
    kube: Kube, namespace: str, est_ca: Issuer, other_ca: Issuer
) -> None:
    own = est_server(est_ca, other_ca)
    await own.start()
    try:
        await make_issuer(kube, namespace, own.port, (est_ca.certificate,))
        missing = await wait_issuer(kube, "est", namespace, "False", "SecretMissing")
        assert (
            f"Secret {namespace}/est-credentials" in missing["message"]
            and "kubernetes.io/basic-auth" in missing["message"]
        )
        await put_credentials(kube, namespace)
        await wait_issuer(kube, "est", namespace, "True", "Reconcile")

        own.ca.issuer = other_ca  # the server now distributes (and signs with) another CA
        mismatch = await wait_issuer(kube, "est", namespace, "False", "TrustAnchorMismatch")
        assert "Some Other CA" in mismatch["message"] and "Test EST CA" in mismatch["message"]
        await request(kube, namespace, "meanwhile", "meanwhile.example")
        pending = await wait_request(kube, namespace, "meanwhile", "Pending")
        assert "is not ready" in ready_condition(pending)["message"]
        assert own.ca.attempts("meanwhile.example") == 0
    finally:
        await own.stop()


@pytest.mark.parametrize(
    ("where", "reason", "expect"),
    [
        ("wrong-type", "SecretWrongType", "not kubernetes.io/basic-auth"),
        ("other-label", "TrustAnchorMismatch", "Some Other CA"),
        ("anchor-of-another-ca", "TLSError", "does not verify against the configured trust anchors"),
        ("another-host", "TLSError", "not issued for the host name"),
        ("html", "ProtocolError", "text/html"),
        ("oversized", "ResponseTooLarge", "larger than"),
        ("empty", "ProtocolError", "holds no certificate"),
        ("nothing-listening", "ConnectionFailed", "connection was refused"),
    ],
)
async def test_issuer_is_not_ready_and_says_why(
    kube: Kube,
    namespace: str,
    est: RunningEst,
    est_ca: Issuer,
    other_ca: Issuer,
    peers: dict[str, Peer],
    where: str,
    reason: str,
    expect: str,
) -> None:
    anchors = (est_ca.certificate,)
    spec: dict[str, Any] = {}
    port = est.port
    if where == "wrong-type":
        await kube.create(SECRETS, {**basic_auth_secret("est-credentials"), "type": "Opaque"}, namespace)
    else:
        await put_credentials(kube, namespace)
    if where == "other-label":
        spec["label"] = "other"
    elif where == "anchor-of-another-ca":
        anchors = (other_ca.certificate,)
    elif where == "another-host":
        port, spec["host"] = peers["odd"].port, "localhost"  # its certificate names 127.0.0.1 only
    elif where in ("html", "oversized", "empty"):
        port, spec["label"] = peers["odd"].port, where
    with socket.socket() as bound_not_listening:  # connections to it are refused
        bound_not_listening.bind(("127.0.0.1", 0))
        if where == "nothing-listening":
            port = bound_not_listening.getsockname()[1]
        await make_issuer(kube, namespace, port, anchors, **spec)
        ready = await wait_issuer(kube, "est", namespace, "False", reason)
    assert expect in ready["message"]
    assert PASSWORD not in ready["message"]


async def test_redirect_to_another_host_never_carries_the_credentials(
    kube: Kube, namespace: str, est_ca: Issuer, peers: dict[str, Peer]
) -> None:
    await put_credentials(kube, namespace)
    await make_issuer(kube, namespace, peers["odd"].port, (est_ca.certificate,), label="redirect")
    await wait_issuer(kube, "est", namespace, "True")  # /cacerts may come from elsewhere: it is public
    await request(kube, namespace, "redirected", "redirected.example")
    order = await wait_order(
        kube, namespace, "redirected", state="Waiting", lastError=lambda e: bool(e and "401" in e)
    )
    assert (
        f"https://localhost:{peers['elsewhere'].port}/.well-known/est/simpleenroll"
        in order["status"]["lastError"]
    )
    enrollments = [s for s in peers["elsewhere"].seen if s.path.endswith("/simpleenroll")]
    assert enrollments and all(s.authorization is None for s in enrollments)
    assert any(s.authorization for s in peers["odd"].seen if s.path.endswith("/simpleenroll"))
    assert (
        ready_condition(await kube.get(CERTIFICATE_REQUESTS, "redirected", namespace))["reason"] == "Pending"
    )


async def test_two_operators_enroll_each_request_exactly_once(
    kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer, operators: OperatorRunner
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in OPERATOR_ENV.items():
            patch.setenv(variable, value)
        second = await operators.start()  # a second replica racing the module's operator
    try:
        await ready_issuer(kube, namespace, est, est_ca)
        assert second.log_path is not None

        async def second_is_serving() -> bool:
            return f"EstIssuer {namespace}/est is ready" in second.log_path.read_text()  # type: ignore[union-attr]

        await wait_for(second_is_serving, what="the second operator to check the issuer too")
        tag = uuid.uuid4().hex[:6]
        names = [f"race-{i}" for i in range(8)]
        for request_name in names:
            await request(kube, namespace, request_name, f"{request_name}-{tag}.example")
        for request_name in names:
            await wait_request(kube, namespace, request_name, "Issued")
        assert [est.ca.attempts(f"{n}-{tag}.example") for n in names] == [1] * len(names)

        async def order_states() -> list[Any] | None:
            orders = [await order_of(kube, namespace, n) for n in names]
            states = [o and (o["status"].get("state"), o["status"].get("attempts")) for o in orders]
            return states if all(s and s[0] in ("Issued", "Failed") for s in states) else None

        # The order is marked Issued just after its certificate reaches the request.
        assert await wait_for(order_states, what="every EstOrder finished") == [("Issued", 1)] * len(names)
    finally:
        await second.kill()  # a replica that dies: quicker than kopf's graceful stop
        await second.stop()
