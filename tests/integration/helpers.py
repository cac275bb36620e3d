"""Shared helpers for integration tests: object access, conditions, token inspection."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyward.keystore.config import HsmConfig
from keyward.kube.client import Kube
from keyward.kube.resources import SECRETS, TCS_CLUSTER_ISSUERS, TCS_ISSUERS
from keyward.sandbox.runner import Sandbox, SandboxOptions
from tests.support import tools
from tests.support.waiting import wait_for

T = TypeVar("T")


@contextlib.asynccontextmanager
async def running_sandbox(state_dir: Path, faults: str = "") -> AsyncIterator[Sandbox]:
    """A sandbox API of its own on a free port (no operator: tests start theirs), stopped after."""
    box = Sandbox(SandboxOptions(state_dir=state_dir, port=0, run_operator=False, faults=faults))
    await box.start()
    try:
        yield box
    finally:
        await box.stop()


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a plain HTTP GET on loopback (probes, metrics); status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


async def fetch(url: str) -> tuple[int, str]:
    """``http_get`` off the event loop (the sandbox API serves from this loop)."""
    return await asyncio.to_thread(http_get, url)


def ready_condition(obj: dict[str, Any] | None) -> dict[str, Any]:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition
    return {}


async def wait_ready(
    kube: Kube,
    name: str,
    namespace: str | None,
    *,
    status: str = "True",
    reason: str | None = None,
    cluster: bool = False,
    timeout: float = 30,
) -> dict[str, Any]:
    resource = TCS_CLUSTER_ISSUERS if cluster else TCS_ISSUERS

    async def probe() -> dict[str, Any] | None:
        obj = await kube.find(resource, name, namespace)
        ready = ready_condition(obj)
        if ready.get("status") == status and (reason is None or ready.get("reason") == reason):
            return obj
        return None

    return await wait_for(
        probe, timeout=timeout, what=f"{resource.kind} {name} Ready={status} {reason or ''}"
    )


async def create_issuer(
    kube: Kube, name: str, namespace: str | None, spec: dict[str, Any] | None = None, *, cluster: bool = False
) -> dict[str, Any]:
    resource = TCS_CLUSTER_ISSUERS if cluster else TCS_ISSUERS
    meta: dict[str, Any] = {"name": name}
    if not cluster:
        meta["namespace"] = namespace
    return await kube.create(resource, {"metadata": meta, "spec": spec or {}}, namespace)


async def ready_issuer_ca(kube: Kube, name: str, namespace: str, spec: dict[str, Any]) -> x509.Certificate:
    """Create a TCSIssuer, wait until it is Ready and return the CA certificate of its Secret."""
    await create_issuer(kube, name, namespace, spec)
    await wait_ready(kube, name, namespace)
    _, ca = await ca_from_secret(kube, spec["secretName"], namespace)
    return ca


async def ca_from_secret(kube: Kube, name: str, namespace: str) -> tuple[dict[str, Any], x509.Certificate]:
    secret = await wait_for(lambda: kube.find(SECRETS, name, namespace), what=f"Secret {namespace}/{name}")
    return secret, x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))


async def token_objects(hsm: HsmConfig) -> str:
    """What pkcs11-tool (OpenSC), an independent PKCS#11 client, sees in the token (off the event loop)."""
    return await asyncio.to_thread(tools.token_objects, hsm)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1)[:2000]


def openssl_verify(directory: Path, ca: x509.Certificate, chain_pem: bytes) -> str:
    """What `openssl verify -CAfile ca.pem chain.pem` says of a chain (blocking; openssl is the judge)."""
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "chain.pem").write_bytes(chain_pem)
    return tools.openssl(
        "verify", "-CAfile", directory / "ca.pem", directory / "chain.pem", check=False
    ).stdout.strip()
