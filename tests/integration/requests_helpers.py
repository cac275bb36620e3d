"""Building and driving signing requests in integration tests."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import kr8s.asyncio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keyward.kube.client import Kube
from keyward.kube.resources import CERTIFICATE_REQUESTS, CSRS, Resource
from keyward.kube.watching import list_and_watch
from keyward.sandbox.certmanager import approve
from keyward.sandbox.runner import Sandbox
from tests.integration.helpers import ready_condition
from tests.support.pki import make_csr as kit_csr
from tests.support.pki import pem
from tests.support.waiting import wait_for


def make_csr(cn: str = "svc.example", *, dns: tuple[str, ...] = (), key: Any = None) -> bytes:
    """A PEM CSR for CN=``cn`` and DNS names ``dns`` (default: a new P-256 key)."""
    return pem(kit_csr(key, cn, [x509.DNSName(d) for d in dns]))


def weak_rsa_csr() -> bytes:
    return make_csr("weak.example", key=rsa.generate_private_key(65537, 1024))


def tampered_csr() -> bytes:
    der = bytearray(
        x509.load_pem_x509_csr(make_csr("tampered.example")).public_bytes(serialization.Encoding.DER)
    )
    der[-3] ^= 0xFF  # inside the signature
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)


async def create_request(
    kube: Kube,
    namespace: str,
    name: str,
    pem: bytes,
    *,
    issuer: str = "my-ca",
    kind: str = "TCSIssuer",
    group: str = "tcs.intel.com",
    duration: str | None = None,
    usages: list[str] | None = None,
    is_ca: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "request": base64.b64encode(pem).decode(),
        "issuerRef": {"group": group, "kind": kind, "name": issuer},
    }
    if duration:
        spec["duration"] = duration
    if usages:
        spec["usages"] = usages
    if is_ca:
        spec["isCA"] = True
    return await kube.create(
        CERTIFICATE_REQUESTS, {"metadata": {"name": name, "namespace": namespace}, "spec": spec}, namespace
    )


async def wait_request(
    kube: Kube, namespace: str, name: str, *, reason: str, timeout: float = 30
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        obj = await kube.find(CERTIFICATE_REQUESTS, name, namespace)
        return obj if ready_condition(obj).get("reason") == reason else None

    return await wait_for(probe, timeout=timeout, what=f"CertificateRequest {name} Ready reason {reason}")


def chain_of(obj: dict[str, Any]) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(base64.b64decode(obj["status"]["certificate"]))


async def wait_all_issued(kube: Kube, namespace: str, names: list[str], *, timeout: float = 60) -> None:
    """Wait until every named CertificateRequest is Ready=True/Issued with a certificate chain."""
    for name in names:
        obj = await wait_request(kube, namespace, name, reason="Issued", timeout=timeout)
        assert ready_condition(obj)["status"] == "True"
        assert chain_of(obj), f"{name} is Issued without a certificate"


async def create_csr(
    kube: Kube,
    name: str,
    pem: bytes,
    signer: str,
    *,
    usages: list[str] | None = None,
    expiration_seconds: int | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "request": base64.b64encode(pem).decode(),
        "signerName": signer,
        "usages": usages or ["client auth"],
    }
    if expiration_seconds:
        spec["expirationSeconds"] = expiration_seconds
    return await kube.create(CSRS, {"metadata": {"name": name}, "spec": spec})


async def approve_csr(kube: Kube, name: str) -> None:
    csr = await kube.get(CSRS, name)
    conditions = (csr.get("status") or {}).get("conditions") or []
    conditions.append({"type": "Approved", "status": "True", "reason": "Test", "message": "approved by test"})
    csr.setdefault("status", {})["conditions"] = conditions
    await kube.replace(CSRS, csr, subresource="approval")


async def wait_csr_certificate(kube: Kube, name: str, timeout: float = 30) -> list[x509.Certificate]:
    async def probe() -> dict[str, Any] | None:
        obj = await kube.find(CSRS, name)
        return obj if obj and (obj.get("status") or {}).get("certificate") else None

    obj = await wait_for(probe, timeout=timeout, what=f"CSR {name} certificate")
    return chain_of(obj)


def lifetime(cert: x509.Certificate) -> timedelta:
    return cert.not_valid_after_utc - cert.not_valid_before_utc


class CertificatesSeen:
    """Every certificate a watch shows for each CertificateRequest of a namespace (or each object of
    ``resource``, e.g. CSRs): proof that no request ever got a second one, whatever happened to the
    operators in between."""

    def __init__(
        self, kube: Kube, namespace: str | None, *, resource: Resource = CERTIFICATE_REQUESTS
    ) -> None:
        self.by_request: dict[str, set[str]] = {}
        self._watch = asyncio.create_task(list_and_watch(kube, resource, namespace, self._record))

    async def _record(self, kind: str, obj: dict[str, Any]) -> None:
        certificate = (obj.get("status") or {}).get("certificate")
        if certificate:
            self.by_request.setdefault(obj["metadata"]["name"], set()).add(certificate)

    async def first(self) -> None:
        await wait_for(self._any, what="the first issuance")

    async def each_once(self, names: list[str]) -> None:
        """Wait until the watch saw every request issued, and check none was issued twice."""
        await wait_for(lambda: self._all(names), what="every issuance seen by the watch")
        assert all(len(seen) == 1 for seen in self.by_request.values()), "a request got a second certificate"

    def stop(self) -> None:
        self._watch.cancel()

    async def _any(self) -> bool:
        return bool(self.by_request)

    async def _all(self, names: list[str]) -> bool:
        return all(name in self.by_request for name in names)


async def approved_requests(kube: Kube, namespace: str, prefix: str, count: int) -> list[str]:
    """Create ``count`` CertificateRequests for the namespace's my-ca and approve them all at once."""
    names = [f"{prefix}-{index}" for index in range(count)]
    for name in names:
        await create_request(kube, namespace, name, make_csr(f"{name}.example"))
    await asyncio.gather(*(approve(kube, name, namespace) for name in names))
    return names


# ---- requesters of Kubernetes CSRs other than the admin --------------------------------------------


#: What a requester needs to create CSRs at all (kube's system:node-bootstrapper has the like).
CSR_CREATOR = [
    {
        "apiGroups": ["certificates.k8s.io"],
        "resources": ["certificatesigningrequests"],
        "verbs": ["create", "get"],
    }
]


def reference_grant(group: str, namespace: str, issuer: str, subject_namespace: str, subject: str) -> str:
    """The Role and RoleBinding of the README ("Kubernetes CSRs for namespaced issuers"): ``subject``
    may have CSRs signed by ``issuer`` (``*``: every issuer of ``group`` in ``namespace``)."""
    name = "all" if issuer == "*" else issuer
    return f"""apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: use-{name}
  namespace: {namespace}
rules:
  - apiGroups: [{group}]
    resources: [signers]
    verbs: [reference]
    resourceNames: ["{issuer}"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: use-{name}
  namespace: {namespace}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: use-{name}
subjects:
  - kind: ServiceAccount
    name: {subject}
    namespace: {subject_namespace}
"""


async def csr_requester(sandbox: Sandbox, directory: Path) -> tuple[Kube, str]:
    """A ServiceAccount of a namespace of its own that may create CSRs, as (its client, its username)."""
    namespace, name = f"apps-{uuid.uuid4().hex[:6]}", "builder"
    config = sandbox.service_account_kubeconfig(
        namespace, name, path=directory / "requester.kubeconfig", cluster_rules=CSR_CREATOR
    )
    return Kube(await kr8s.asyncio.api(kubeconfig=str(config))), f"system:serviceaccount:{namespace}:{name}"


async def failed_condition(kube: Kube, name: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        obj = await kube.get(CSRS, name)
        conditions = (obj.get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Failed"), None)

    return await wait_for(probe, what=f"a Failed condition on CSR {name}")
