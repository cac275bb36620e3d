"""Shared helpers for integration tests: object access, conditions, token inspection."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyward.keystore.config import HsmConfig
from keyward.kube.client import Kube
from keyward.kube.resources import SECRETS, TCS_CLUSTER_ISSUERS, TCS_ISSUERS

T = TypeVar("T")


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 20.0, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
    """What pkcs11-tool (OpenSC), an independent PKCS#11 client, sees in the token."""
    env = {**os.environ}
    if hsm.softhsm2_conf:
        env["SOFTHSM2_CONF"] = hsm.softhsm2_conf
    result = await asyncio.to_thread(
        subprocess.run,
        [
            "pkcs11-tool",
            "--module",
            hsm.module,
            "--token-label",
            hsm.token_label,
            "--login",
            "--pin",
            hsm.user_pin,
            "-O",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, "pkcs11-tool could not list the token objects"
    return result.stdout


def object_blocks(listing: str, label: str) -> list[str]:
    """The pkcs11-tool -O blocks whose label is exactly ``label``."""
    blocks = listing.split("\n\n") if "\n\n" in listing else _split_objects(listing)
    return [
        b
        for b in blocks
        if any(
            line.strip() == f"label:      {label}"
            or (line.strip().startswith("label:") and line.split(":", 1)[1].strip() == label)
            for line in b.splitlines()
        )
    ]


def _split_objects(listing: str) -> list[str]:
    blocks: list[str] = []
    for line in listing.splitlines():
        if line and not line.startswith(" "):
            blocks.append(line)
        elif blocks:
            blocks[-1] += "\n" + line
    return blocks


async def kubectl(
    *args: str, check: bool = True, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real kubectl off the event loop (the sandbox API serves from this loop)."""
    result = await asyncio.to_thread(
        subprocess.run,
        ["kubectl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        input=input_text,
    )
    if check:
        assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
    return result


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1)[:2000]


def openssl_verify(directory: Path, ca: x509.Certificate, chain_pem: bytes) -> str:
    """What `openssl verify -CAfile ca.pem chain.pem` says of a chain (blocking; openssl is the judge)."""
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "chain.pem").write_bytes(chain_pem)
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(directory / "ca.pem"), str(directory / "chain.pem")],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    return result.stdout.strip()
