"""Helpers shared by the sandbox API server tests (imported by conftest and the test modules)."""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from keyward.sandbox.apiserver import ApiServer
from tests.support.pki import b64, ec_key, make_csr, pem, self_signed_ca
from tests.support.tools import ToolRun, kubectl

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


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def widget(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("host", "svc.example")
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


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
        self.key = ec_key()

    def csr_pem(self, common_name: str = "demo") -> bytes:
        return pem(make_csr(self.key, common_name))

    def certificate_pem(self, common_name: str = "demo") -> bytes:
        """A self-signed certificate without extensions."""
        return pem(self_signed_ca(self.key, common_name, ca=None, valid_since=datetime.timedelta(0)))

    def csr_object(self, name: str, **spec: Any) -> dict[str, Any]:
        body = {
            "request": b64(self.csr_pem()),
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
        self.base = ["--kubeconfig", str(kubeconfig), "--cache-dir", str(cache)]

    async def __call__(self, *args: str, stdin: str | None = None, ok: bool = True) -> ToolRun:
        return await kubectl(*args, input_text=stdin, check=ok, base=self.base)
