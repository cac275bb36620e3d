"""Objects as the two upstreams leave them on a cluster, for the tests of keyward taking over.

The TCS seed (intel/trusted-certificate-issuer): a CA key and certificate in its token (seed_token.py),
the issuer's CA Secret (internal/k8sutil ``CreateCASecret``: type kubernetes.io/tls, an empty tls.key, the
certificate in tls.crt, no ca.crt, an ownerReference to the issuer, its labels, the finalizer
``tcs.intel.com/issuer-protection``), the Ready condition it writes (reason Reconcile, message Success), a
QuoteAttestation for a self-signed-false issuer (``QuoteAttestationDeliver``), CertificateRequests it
signed (leaf only in status.certificate, Ready reason Issued, message Signed) and CSRs it signed.

The EST seed (mitre/est-operator, kopf 0.28): an EstOrder ``<request>-order`` per CertificateRequest,
owned by it (``kopf.adopt``), its handler's result in status.estorder_create and kopf's progress in the
annotation ``kopf.zalando.org/estorder_create``; the request's Ready condition "Created new EstOrder ...";
the issuer's status.estissuer_create.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from keyward.kube.client import Kube
from keyward.kube.resources import (
    CERTIFICATE_REQUESTS,
    EST_ISSUERS,
    EST_ORDERS,
    QUOTE_ATTESTATIONS,
    SECRETS,
    TCS_SEED_FINALIZER,
)
from tests.support.pki import b64, pem

KOPF_LAST_HANDLED = "kopf.zalando.org/last-handled-configuration"


def seed_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def seed_ca_in_token(hsm_config: Path, signer_name: str) -> x509.Certificate:
    """The seed's CA for ``signer_name``, made in the token in a process of its own."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.integration.seed_token", str(hsm_config), signer_name],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"could not make the seed's CA in the token: {done.stderr[-2000:]}"
    return x509.load_pem_x509_certificate(done.stdout.encode())


def owner(issuer: dict[str, Any]) -> dict[str, Any]:
    """The ownerReference the TCS seed writes (no controller flag)."""
    return {
        "apiVersion": issuer["apiVersion"],
        "kind": issuer["kind"],
        "name": issuer["metadata"]["name"],
        "uid": issuer["metadata"]["uid"],
    }


async def seed_issuer_status(kube: Kube, resource: Any, issuer: dict[str, Any]) -> dict[str, Any]:
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Reconcile",
        "message": "Success",
        "lastTransitionTime": seed_time(datetime.now(UTC)),
    }
    meta = issuer["metadata"]
    return await kube.patch(
        resource,
        meta["name"],
        {"status": {"conditions": [ready]}},
        meta.get("namespace"),
        subresource="status",
    )


async def seed_ca_secret(
    kube: Kube, issuer: dict[str, Any], name: str, namespace: str, certificate: x509.Certificate
) -> dict[str, Any]:
    secret = {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "ownerReferences": [owner(issuer)],
            "finalizers": [TCS_SEED_FINALIZER],
        },
        "type": "kubernetes.io/tls",
        "data": {"tls.key": "", "tls.crt": b64(pem(certificate))},
    }
    return await kube.create(SECRETS, secret, namespace)


async def seed_quote_attestation(
    kube: Kube, issuer: dict[str, Any], namespace: str, signer: str
) -> dict[str, Any]:
    """The KeyProvisioning request the seed creates for a selfSign: false issuer (named after it)."""
    body = {
        "apiVersion": "tcs.intel.com/v1alpha2",
        "kind": "QuoteAttestation",
        "metadata": {
            "name": issuer["metadata"]["name"],
            "namespace": namespace,
            "ownerReferences": [owner(issuer)],
            "finalizers": [TCS_SEED_FINALIZER],
        },
        "spec": {
            "type": "KeyProvisioning",
            "quote": b64(b64(b"an SGX quote").encode()),
            "nonce": b64(b64(bytes(range(32))).encode()),
            "quoteVersion": "ECDSA Quote 3",
            "signerName": signer,
            "serviceId": "",
            "publicKey": b64(b"-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n"),
            "secretName": issuer["metadata"]["name"],
        },
    }
    return await kube.create(QUOTE_ATTESTATIONS, body, namespace)


async def seed_finished_request(
    kube: Kube, request: dict[str, Any], leaf: x509.Certificate, ca: x509.Certificate, message: str
) -> dict[str, Any]:
    """A CertificateRequest an upstream signed: Ready True (Issued) with the leaf alone and the CA."""
    meta = request["metadata"]
    conditions = [c for c in (request.get("status") or {}).get("conditions") or [] if c["type"] != "Ready"]
    conditions.append(
        {
            "type": "Ready",
            "status": "True",
            "reason": "Issued",
            "message": message,
            "lastTransitionTime": seed_time(datetime.now(UTC)),
        }
    )
    status = {"conditions": conditions, "certificate": b64(pem(leaf)), "ca": b64(pem(ca))}
    return await kube.patch(
        CERTIFICATE_REQUESTS, meta["name"], {"status": status}, meta["namespace"], subresource="status"
    )


async def seed_est_issuer_ready(kube: Kube, issuer: dict[str, Any]) -> dict[str, Any]:
    meta = issuer["metadata"]
    await kube.patch(
        EST_ISSUERS, meta["name"], {"metadata": {"annotations": {KOPF_LAST_HANDLED: "{}"}}}, meta["namespace"]
    )
    return await kube.patch(
        EST_ISSUERS,
        meta["name"],
        {"status": {"estissuer_create": {"Ready": "True"}}},
        meta["namespace"],
        subresource="status",
    )


async def seed_est_order(
    kube: Kube,
    request: dict[str, Any],
    *,
    certificate: x509.Certificate | None = None,
    retry_at: datetime | None = None,
) -> dict[str, Any]:
    """The EST seed's EstOrder for ``request`` (created with the request, before any approval), and the
    request's Ready condition it writes; ``certificate``: its handler finished; ``retry_at``: it was
    retrying (a 202, a 5xx) with kopf's next attempt at that time."""
    meta = request["metadata"]
    name = f"{meta['name']}-order"
    spec = request["spec"]
    annotations = {KOPF_LAST_HANDLED: json.dumps({"spec": {"request": spec["request"]}})}
    if retry_at is not None:
        progress = {
            "started": (retry_at - timedelta(minutes=10)).replace(tzinfo=None).isoformat(),
            "delayed": retry_at.astimezone(UTC).replace(tzinfo=None).isoformat(),
            "retries": 2,
            "success": False,
            "failure": False,
            "message": "Reqest accepted pending issuance",
        }
        annotations["kopf.zalando.org/estorder_create"] = json.dumps(progress)
    order = {
        "apiVersion": "est.mitre.org/v1alpha1",
        "kind": "EstOrder",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "cert-manager.io/v1",
                    "kind": "CertificateRequest",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"issuerRef": dict(spec["issuerRef"]), "request": spec["request"], "renewal": False},
    }
    created = await kube.create(EST_ORDERS, order, meta["namespace"])
    if certificate is not None:
        created = await kube.patch(
            EST_ORDERS,
            name,
            {"status": {"estorder_create": {"certificate": b64(pem(certificate))}}},
            meta["namespace"],
            subresource="status",
        )
    pending = {
        "type": "Ready",
        "status": "False",
        "reason": "Pending",
        "message": f"Created new EstOrder {name}",
        "lastTransitionTime": seed_time(datetime.now(UTC)),
    }
    current = await kube.get(CERTIFICATE_REQUESTS, meta["name"], meta["namespace"])
    conditions = [*((current.get("status") or {}).get("conditions") or []), pending]
    await kube.patch(
        CERTIFICATE_REQUESTS,
        meta["name"],
        {"status": {"conditions": conditions}},
        meta["namespace"],
        subresource="status",
    )
    return created
