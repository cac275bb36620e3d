"""Helpers shared by the sandbox API server tests (imported by conftest and the test modules)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyward.sandbox.apiserver import ApiServer

HERE = Path(__file__).parent
TEST_CRDS = HERE / "widgets-crd.yaml"
WIDGETS = "/apis/example.com/v1/namespaces/{ns}/widgets"
CSRS = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
TABLE = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
    "application/json"
)  # what kubectl get sends


def http_client(server: ApiServer, token: str | None = None, **options: Any) -> httpx.AsyncClient:
    """An HTTP client of ``server`` trusting its CA, authenticated by ``token`` (default: admin)."""
    headers = {"Authorization": f"Bearer {token or server.admin_token}"}
    return httpx.AsyncClient(
        base_url=server.url, headers=headers, verify=server.client_ssl_context(), **options
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def widget(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("host", "svc.example")
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


async def wait_for(condition: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Poll ``condition`` (an API read) until it holds; TimeoutError after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not await condition():  # noqa: ASYNC110 - polling the API is the point here
            await asyncio.sleep(0.02)


class WatchStream:
    """One open watch request, read event by event."""

    def __init__(
        self, client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None, **params: str
    ) -> None:
        query = {"watch": "true", **params}
        self._request = client.stream("GET", path, params=query, headers=headers, timeout=30)
        self.response: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None

    async def __aenter__(self) -> WatchStream:
        self.response = await self._request.__aenter__()
        self._lines = self.response.aiter_lines()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._request.__aexit__(None, None, None)

    async def next(self, within: float = 5.0) -> dict[str, Any]:
        assert self._lines is not None
        async with asyncio.timeout(within):
            while True:
                line = await anext(self._lines)
                if line.strip():
                    event: dict[str, Any] = json.loads(line)
                    return event

    async def take(self, count: int, *, bookmarks: bool = False, within: float = 5.0) -> list[dict[str, Any]]:
        """The next ``count`` events (BOOKMARKs skipped unless ``bookmarks``)."""
        events: list[dict[str, Any]] = []
        while len(events) < count:
            event = await self.next(within)
            if bookmarks or event["type"] != "BOOKMARK":
                events.append(event)
        return events

    async def rest(self, within: float = 5.0) -> list[dict[str, Any]]:
        """Every remaining event until the server ends the stream."""
        assert self._lines is not None
        events = []
        async with asyncio.timeout(within):
            async for line in self._lines:
                if line.strip():
                    events.append(json.loads(line))
        return events


class Pki:
    """Test keys, CSRs and certificates (never the project's real PKI code)."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())

    def csr_pem(self, common_name: str = "demo") -> bytes:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(self.key, hashes.SHA256())
        return csr.public_bytes(serialization.Encoding.PEM)

    def certificate_pem(self, common_name: str = "demo") -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM)

    def csr_object(self, name: str, **spec: Any) -> dict[str, Any]:
        body = {
            "request": base64.b64encode(self.csr_pem()).decode(),
            "signerName": "example.com/sandbox-test",
            "usages": ["digital signature", "client auth"],
            **spec,
        }
        return {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": body,
        }


class Kubectl:
    """The real kubectl binary, pointed at the sandbox with the kubeconfig it wrote."""

    def __init__(self, kubeconfig: Path, cache: Path) -> None:
        self.base = ["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache)]

    async def __call__(
        self, *args: str, stdin: str | None = None, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = await asyncio.to_thread(
            subprocess.run, [*self.base, *args], input=stdin, capture_output=True, text=True, timeout=60
        )
        if ok:
            assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr}"
        return done
