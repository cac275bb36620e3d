"""The operator's EST server: TCS issuers with spec.est, served over RFC 7030 to curl, in the sandbox.

Two operators, each scoped to its own namespace: one whose TLS certificate is issued by a TCS issuer
(--est-issuer), one serving a kubernetes.io/tls Secret (--est-tls-secret) that the test then replaces.
curl and openssl run off the event loop: the sandbox API the operators talk to serves from this loop.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7

from keyward.issuers.tcs.est_ca import issue_tls_server_certificate
from keyward.kube.client import Kube
from keyward.kube.resources import EVENTS, NAMESPACES, SECRETS, TCS_ISSUERS
from keyward.pki.issue import CertificateAuthority, self_signed_ca
from keyward.pki.profile import IssuerPolicy
from tests.integration.conftest import OperatorRunner
from tests.integration.helpers import ca_from_secret, create_issuer, ready_condition, wait_ready
from tests.support.ports import free_port
from tests.support.tools import Response, run
from tests.support.waiting import wait_for
from tests.unit.est.helpers import openssl_csr_in

PASSWORD = "first-Passw0rd"


def basic_auth_secret(name: str, namespace: str, password: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/basic-auth",
        "data": {
            "username": base64.b64encode(b"est").decode(),
            "password": base64.b64encode(password.encode()).decode(),
        },
    }


@dataclass
class EstEndpoint:
    """An operator's EST server as curl sees it, trusting only ``trust`` (the Explicit TA)."""

    port: int
    trust: Path
    work: Path

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}/.well-known/est/{path}"

    async def curl(self, path: str, *options: str | Path, data: Path | None = None) -> Response:
        body, head = self.work / f"body-{uuid.uuid4().hex}", self.work / f"head-{uuid.uuid4().hex}"
        args: list[str | Path] = ["curl", "-sS", "--cacert", self.trust, "-o", body, "-D", head]
        args += ["-w", "%{http_code}", *options]
        if data is not None:
            args += ["-H", "Content-Type: application/pkcs10", "--data-binary", f"@{data}"]
        done = await asyncio.to_thread(run, [*args, self.url(path)], check=False)
        status = int(done.decode().strip() or 0)
        headers: dict[str, str] = {}
        if head.exists():
            for line in head.read_text(errors="replace").splitlines()[1:]:
                key, colon, value = line.partition(":")
                if colon:
                    headers[key.strip().lower()] = value.strip()
        return Response(status, headers, body.read_bytes() if body.exists() else b"")

    async def answers(self, path: str, status: int = 200, *options: str, timeout: float = 90) -> Response:
        async def probe() -> Response | None:
            response = await self.curl(path, *options)
            return response if response.status == status else None

        return await wait_for(probe, timeout=timeout, what=f"GET {path} -> {status}")


@dataclass
class IssuerSetup:
    namespace: str
    est: EstEndpoint
    devices_ca: x509.Certificate


async def make_namespace(kube: Kube) -> str:
    name = f"est-{uuid.uuid4().hex[:8]}"
    await kube.create(NAMESPACES, {"metadata": {"name": name}})
    return name


@pytest.fixture(scope="module")
async def issued_tls(
    kube: Kube, operators: OperatorRunner, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[IssuerSetup]:
    """An operator with --est-issuer TCSIssuer/NS/tls-ca, serving "devices" (the default, Basic auth);
    "tls-ca" has no spec.est."""
    namespace, port = await make_namespace(kube), free_port()
    await kube.create(SECRETS, basic_auth_secret("est-users", namespace, PASSWORD), namespace)
    await create_issuer(
        kube, "tls-ca", namespace, {"secretName": "tls-ca-cert", "privateKey": {"algorithm": "ECDSA"}}
    )
    spec = {
        "secretName": "devices-ca",
        "privateKey": {"algorithm": "ECDSA", "size": 384},
        "est": {"label": "devices", "default": True, "basicAuthSecretRef": {"name": "est-users"}},
    }
    await create_issuer(kube, "devices", namespace, spec)
    await operators.start(
        "--namespace", namespace, "--est-listen", f"127.0.0.1:{port}",
        "--est-issuer", f"TCSIssuer/{namespace}/tls-ca", "--est-hostnames", "127.0.0.1,localhost",
        "--est-default-namespaces", namespace,
    )  # fmt: skip
    await wait_ready(kube, "devices", namespace, timeout=90)
    _, tls_ca = await ca_from_secret(kube, "tls-ca-cert", namespace)
    _, devices_ca = await ca_from_secret(kube, "devices-ca", namespace)
    work = tmp_path_factory.mktemp("est-operator")
    trust = work / "tls-ca.pem"
    trust.write_bytes(tls_ca.public_bytes(serialization.Encoding.PEM))
    endpoint = EstEndpoint(port, trust, work)
    await endpoint.answers("devices/cacerts")
    yield IssuerSetup(namespace, endpoint, devices_ca)
    await kube.delete(NAMESPACES, namespace)


def leaf_of(response: Response) -> x509.Certificate:
    (certificate,) = pkcs7.load_der_pkcs7_certificates(base64.b64decode(b"".join(response.body.split())))
    return certificate


async def verify(certificate: x509.Certificate, ca: x509.Certificate, work: Path) -> str:
    leaf, anchor = work / f"leaf-{certificate.serial_number:x}.pem", work / "anchor.pem"
    leaf.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    anchor.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return (await asyncio.to_thread(run, ["openssl", "verify", "-CAfile", anchor, leaf])).decode().strip()


async def test_curl_enrolls_with_basic_auth_and_the_issuer_gets_an_event(
    kube: Kube, issued_tls: IssuerSetup
) -> None:
    est, work = issued_tls.est, issued_tls.est.work
    csr, _ = await asyncio.to_thread(openssl_csr_in, work, "sensor-1", "/CN=sensor-1", "DNS:sensor-1.example")
    response = await est.curl("devices/simpleenroll", "-u", f"est:{PASSWORD}", data=csr)
    assert response.status == 200, response.text
    leaf = leaf_of(response)
    assert (await verify(leaf, issued_tls.devices_ca, work)).endswith(": OK")
    assert leaf.subject.rfc4514_string() == "CN=sensor-1"

    async def enrolled_event() -> dict[str, Any] | None:
        wanted = ("TCSIssuer", "devices", "Enrolled")
        for event in await kube.list(EVENTS, issued_tls.namespace):
            involved = event.get("involvedObject") or {}
            found = (involved.get("kind"), involved.get("name"), event.get("reason"))
            if found == wanted and f"serial {leaf.serial_number:x}" in event.get("message", ""):
                return event
        return None

    event = await wait_for(enrolled_event, what="an Enrolled Event on TCSIssuer devices")
    assert event["type"] == "Normal"
    assert event["message"].startswith(
        "EST simpleenroll by basic:est: subject CN=sensor-1, SANs DNS:sensor-1.example"
    )
    assert PASSWORD not in event["message"]


async def test_the_default_issuer_answers_without_a_label(issued_tls: IssuerSetup) -> None:
    response = await issued_tls.est.curl("cacerts")
    assert response.status == 200
    assert pkcs7.load_der_pkcs7_certificates(base64.b64decode(b"".join(response.body.split()))) == [
        issued_tls.devices_ca
    ]
    attributes = await issued_tls.est.curl("devices/csrattrs")
    assert attributes.status == 200 and attributes.headers["content-type"] == "application/csrattrs"


async def test_wrong_password_is_401_and_an_issuer_without_spec_est_is_404(issued_tls: IssuerSetup) -> None:
    est = issued_tls.est
    csr, _ = await asyncio.to_thread(openssl_csr_in, est.work, "intruder", "/CN=intruder")
    wrong = await est.curl("devices/simpleenroll", "-u", "est:guessed", data=csr)
    assert wrong.status == 401 and wrong.headers["www-authenticate"].startswith("Basic")
    unserved = await est.curl("tls-ca/cacerts")
    assert unserved.status == 404 and "no CA is served under the label 'tls-ca'" in unserved.text


async def test_reenroll_with_the_issued_certificate_over_tls(issued_tls: IssuerSetup) -> None:
    est, work = issued_tls.est, issued_tls.est.work
    csr, key = await asyncio.to_thread(openssl_csr_in, work, "rekey", "/CN=rekey")
    first = leaf_of(await est.curl("devices/simpleenroll", "-u", f"est:{PASSWORD}", data=csr))
    cert = work / "rekey.pem"
    cert.write_bytes(first.public_bytes(serialization.Encoding.PEM))
    next_csr, _ = await asyncio.to_thread(openssl_csr_in, work, "rekey-next", "/CN=rekey")
    renewed = await est.curl("devices/simplereenroll", "--cert", cert, "--key", key, data=next_csr)
    assert renewed.status == 200, renewed.text
    assert leaf_of(renewed).subject == first.subject and leaf_of(renewed).serial_number != first.serial_number


async def test_a_changed_basic_auth_secret_counts_without_a_restart(
    kube: Kube, issued_tls: IssuerSetup
) -> None:
    est, namespace = issued_tls.est, issued_tls.namespace
    csr, _ = await asyncio.to_thread(openssl_csr_in, est.work, "rotation", "/CN=rotation")
    current = await kube.get(SECRETS, "est-users", namespace)
    current["data"]["password"] = base64.b64encode(b"second-Passw0rd").decode()
    await kube.replace(SECRETS, current)
    try:

        async def new_password_works() -> bool:
            response = await est.curl("devices/simpleenroll", "-u", "est:second-Passw0rd", data=csr)
            return response.status == 200

        await wait_for(new_password_works, what="the rotated password to be accepted")
        old = await est.curl("devices/simpleenroll", "-u", f"est:{PASSWORD}", data=csr)
        assert old.status == 401
    finally:
        current = await kube.get(SECRETS, "est-users", namespace)
        current["data"]["password"] = base64.b64encode(PASSWORD.encode()).decode()
        await kube.replace(SECRETS, current)


async def test_no_device_enrolls_a_server_certificate_for_the_est_servers_own_names(
    issued_tls: IssuerSetup,
) -> None:
    """The server's names (--est-hostnames: 127.0.0.1, localhost) with server auth: refused, even from an
    issuer whose policy allows server auth, for any of them, in the SANs or as the common name."""
    est, work = issued_tls.est, issued_tls.est.work
    for stem, subject, sans in [
        ("ip", "/CN=impostor", "IP:127.0.0.1"),
        ("dns", "/CN=impostor", "DNS:device.example,DNS:localhost"),
        ("cn", "/CN=localhost", None),
    ]:
        csr, _ = await asyncio.to_thread(
            openssl_csr_in,
            work,
            f"impostor-{stem}",
            subject,
            sans,
            extensions=["extendedKeyUsage=serverAuth"],
        )
        refused = await est.curl("devices/simpleenroll", "-u", f"est:{PASSWORD}", data=csr)
        assert refused.status == 400 and refused.text.startswith("policy est-server-names: "), refused.text
    csr, _ = await asyncio.to_thread(
        openssl_csr_in,
        work,
        "other-server",
        "/CN=x",
        "DNS:device.example",
        extensions=["extendedKeyUsage=serverAuth"],
    )
    assert (await est.curl("devices/simpleenroll", "-u", f"est:{PASSWORD}", data=csr)).status == 200


async def test_the_issuers_spec_policy_governs_what_the_est_server_enrolls(
    kube: Kube, issued_tls: IssuerSetup
) -> None:
    spec = {
        "privateKey": {"algorithm": "ECDSA"},
        "policy": {"allowedDNSNames": ["*.plant.example"]},
        "est": {"label": "plant-floor", "basicAuthSecretRef": {"name": "est-users"}},
    }
    await create_issuer(kube, "plant-floor", issued_tls.namespace, spec)
    est, work = issued_tls.est, issued_tls.est.work
    await est.answers("plant-floor/cacerts")
    inside, _ = await asyncio.to_thread(
        openssl_csr_in, work, "inside", "/CN=press-1", "DNS:press-1.plant.example"
    )
    assert (await est.curl("plant-floor/simpleenroll", "-u", f"est:{PASSWORD}", data=inside)).status == 200
    outside, _ = await asyncio.to_thread(openssl_csr_in, work, "outside", "/CN=x", "DNS:mail.example")
    refused = await est.curl("plant-floor/simpleenroll", "-u", f"est:{PASSWORD}", data=outside)
    assert refused.status == 400
    assert refused.text.startswith('policy allowed-dns-names: dNSName "mail.example" matches none of'), (
        refused.text
    )


# --- --est-tls-secret: a Secret's certificate, reloaded when the Secret changes -----------------------


def tls_secret(name: str, namespace: str, root: CertificateAuthority) -> dict[str, Any]:
    issued = issue_tls_server_certificate(root, ["127.0.0.1"], IssuerPolicy())
    return {
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(issued.chain_pem).decode(),
            "tls.key": base64.b64encode(issued.key_pem).decode(),
        },
    }


def throwaway_root(common_name: str) -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    return CertificateAuthority(
        self_signed_ca(key, x509.Name.from_rfc4514_string(f"CN={common_name}"), timedelta(days=1)), key
    )


async def test_a_tls_secret_is_served_and_reloaded_when_it_changes(
    kube: Kube, operators: OperatorRunner, tmp_path: Path
) -> None:
    namespace, port = await make_namespace(kube), free_port()
    try:
        first_root, second_root = throwaway_root("first TLS root"), throwaway_root("second TLS root")
        await kube.create(SECRETS, tls_secret("est-tls", namespace, first_root), namespace)
        await create_issuer(kube, "lab", namespace, {"privateKey": {"algorithm": "ECDSA"}, "est": {}})
        await operators.start(
            "--namespace",
            namespace,
            "--est-listen",
            f"127.0.0.1:{port}",
            "--est-tls-secret",
            f"{namespace}/est-tls",
        )
        trust = tmp_path / "first.pem"
        trust.write_bytes(first_root.certificate.public_bytes(serialization.Encoding.PEM))
        first = EstEndpoint(port, trust, tmp_path)
        await first.answers("lab/cacerts")
        assert (await first.curl("cacerts")).status == 404, "no issuer is the default"

        current = await kube.get(SECRETS, "est-tls", namespace)
        current["data"] = tls_secret("est-tls", namespace, second_root)["data"]
        await kube.replace(SECRETS, current)
        second_trust = tmp_path / "second.pem"
        second_trust.write_bytes(second_root.certificate.public_bytes(serialization.Encoding.PEM))
        await EstEndpoint(port, second_trust, tmp_path).answers("lab/cacerts")
        assert (await first.curl("lab/cacerts")).status == 0, "the first root no longer verifies the server"
    finally:
        await kube.delete(NAMESPACES, namespace)


# --- labels across namespaces: first come keeps a label; the default is not for any namespace ----------


def est_serving(issuer: dict[str, Any] | None) -> dict[str, Any]:
    conditions = ((issuer or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "EstServing"), {})


async def wait_est_serving(kube: Kube, name: str, namespace: str, status: str, reason: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        condition = est_serving(await kube.find(TCS_ISSUERS, name, namespace))
        return condition if (condition.get("status"), condition.get("reason")) == (status, reason) else None

    return await wait_for(probe, what=f"TCSIssuer {namespace}/{name} EstServing={status} {reason}")


async def served_ca(endpoint: EstEndpoint, path: str) -> x509.Certificate:
    response = await endpoint.answers(path)
    (certificate,) = pkcs7.load_der_pkcs7_certificates(base64.b64decode(b"".join(response.body.split())))
    return certificate


async def a_second_later(kube: Kube, issuer: dict[str, Any]) -> None:
    """Wait until an object created now gets a later creationTimestamp than ``issuer`` (seconds)."""
    created = datetime.fromisoformat(issuer["metadata"]["creationTimestamp"].replace("Z", "+00:00"))

    async def later() -> bool:
        return datetime.now(UTC) >= created + timedelta(seconds=1)

    await wait_for(later, what="the next second")


async def test_a_label_is_never_taken_from_the_namespace_that_claimed_it_first(
    kube: Kube, operators: OperatorRunner, tmp_path: Path
) -> None:
    """An issuer in another namespace that claims a served label (and the default) serves nobody's
    devices: not while the holder is served, not after a restart, and it says so. Its namespace sorts
    first, as its name does: the order of names decides nothing."""
    suffix = uuid.uuid4().hex[:6]
    victim, intruder = f"z-est-{suffix}", f"a-est-{suffix}"
    port = free_port()
    for namespace in (victim, intruder):
        await kube.create(NAMESPACES, {"metadata": {"name": namespace}})
    try:
        root = throwaway_root("tenancy TLS root")
        await kube.create(SECRETS, tls_secret("est-tls", victim, root), victim)
        holder = await create_issuer(
            kube, "zz-plant", victim, {"privateKey": {"algorithm": "ECDSA"}, "est": {"label": "plant"}}
        )
        args = ["--namespace", victim, "--namespace", intruder, "--est-listen", f"127.0.0.1:{port}"]
        operator = await operators.start(*args, "--est-tls-secret", f"{victim}/est-tls")
        trust = tmp_path / "root.pem"
        trust.write_bytes(root.certificate.public_bytes(serialization.Encoding.PEM))
        endpoint = EstEndpoint(port, trust, tmp_path)
        plant_ca = await served_ca(endpoint, "plant/cacerts")
        await wait_est_serving(kube, "zz-plant", victim, "True", "Serving")

        await a_second_later(kube, holder)
        intruder_spec = {"privateKey": {"algorithm": "ECDSA"}, "est": {"label": "plant", "default": True}}
        await create_issuer(kube, "aa-plant", intruder, intruder_spec)
        await create_issuer(
            kube, "aa-own", intruder, {"privateKey": {"algorithm": "ECDSA"}, "est": {"default": True}}
        )
        taken = await wait_est_serving(kube, "aa-plant", intruder, "False", "LabelTaken")
        assert (
            f"EST label 'plant' is held by TCSIssuer {victim}/zz-plant, which claimed it first"
            in taken["message"]
        )
        await wait_ready(kube, "aa-plant", intruder)  # it signs its own requests all the same
        own = await wait_est_serving(kube, "aa-own", intruder, "True", "DefaultNotAllowed")
        assert (
            "not as the default: only a TCSClusterIssuer or an issuer in namespace keyward-system"
            in own["message"]
        )
        await served_ca(endpoint, "aa-own/cacerts")  # served under its own label
        assert await served_ca(endpoint, "plant/cacerts") == plant_ca
        assert (await endpoint.curl("cacerts")).status == 404, "no namespace's issuer is everyone's default"

        await operator.stop()
        await operators.start(*args, "--est-tls-secret", f"{victim}/est-tls")
        assert await served_ca(endpoint, "plant/cacerts") == plant_ca, "the same holder after a restart"
        assert (await endpoint.curl("cacerts")).status == 404
        await wait_est_serving(kube, "aa-plant", intruder, "False", "LabelTaken")

        await kube.delete(TCS_ISSUERS, "zz-plant", victim)  # the holder lets go: the next claimant serves
        await wait_est_serving(kube, "aa-plant", intruder, "True", "DefaultNotAllowed")

        async def intruders_ca() -> bool:
            response = await endpoint.curl("plant/cacerts")
            return response.status == 200 and leaf_of(response) != plant_ca

        await wait_for(intruders_ca, what="label plant served for the remaining claimant")

        await kube.patch(TCS_ISSUERS, "aa-own", {"spec": {"est": None}}, intruder)  # no longer served

        async def condition_gone() -> bool:
            issuer = await kube.find(TCS_ISSUERS, "aa-own", intruder)
            return not est_serving(issuer) and ready_condition(issuer).get("status") == "True"

        await wait_for(condition_gone, what="the EstServing condition gone with spec.est")
        assert (await endpoint.curl("aa-own/cacerts")).status == 404
    finally:
        for namespace in (victim, intruder):
            await kube.delete(NAMESPACES, namespace)
