"""A thin async Kubernetes client for the calls kopf does not make itself.

Built on kr8s (kubeconfig, in-cluster service accounts, token refresh, TLS) with raw, typed
calls: objects stay plain dicts, so the code reads like the API reference. Status writes use
JSON merge patches that carry ``metadata.resourceVersion`` when the caller needs a precondition:
kube-apiserver then answers 409 instead of overwriting a concurrent write, which is how the
controllers make issuance exactly-once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import httpx
import kr8s.asyncio

from keyward.kube.resources import Resource

MERGE_PATCH = "application/merge-patch+json"
Body = dict[str, Any]


class ApiError(Exception):
    """The API server refused a call; ``status`` is the HTTP code, ``reason`` the Status reason.

    A call that got no answer at all (connection refused or cut, a timeout) is an ``ApiError`` too, with
    ``status`` 0 and reason ``Unreachable``: for a caller both mean "try again later".
    """

    def __init__(self, status: int, reason: str, message: str, *, retry_after: float | None = None) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        #: Seconds the server asked us to wait (its Retry-After header), if it said.
        self.retry_after = retry_after
        super().__init__(f"{status} {reason}: {message}" if status else f"{reason}: {message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def transient(self) -> bool:
        """No answer, throttled (429) or a server-side failure (5xx, e.g. a webhook restarting)."""
        return self.status == 0 or self.status == 429 or self.status >= 500


#: Calls in flight at once on one client. httpx keeps 20 idle connections: beyond that, every call
#: would open (and TLS-handshake) a new connection and close it after. A burst of writes waits its turn
#: instead, on connections that stay open.
MAX_CONCURRENT_CALLS = 16


class Kube:
    """Raw CRUD on any resource, one object at a time."""

    def __init__(self, api: Any) -> None:
        self._api = api
        self._calls = asyncio.Semaphore(MAX_CONCURRENT_CALLS)

    @property
    def raw(self) -> Any:
        """The kr8s API object, for streaming calls (watches: see keyward.kube.watching)."""
        return self._api

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> Kube:
        return cls(await kr8s.asyncio.api(kubeconfig=kubeconfig))

    async def _call(
        self, method: str, resource: Resource, namespace: str | None, tail: str, **kwargs: Any
    ) -> Body:
        ns = namespace if resource.namespaced else None
        try:
            async with (
                self._calls,
                self._api.call_api(
                    method,
                    version="",
                    base=resource.prefix,
                    namespace=ns,
                    url=f"{resource.plural}{tail}",
                    raise_for_status=False,
                    **kwargs,
                ) as response,
            ):
                return _checked(response)
        except httpx.TransportError as exc:
            raise ApiError(0, "Unreachable", f"{type(exc).__name__}: {exc}") from exc

    async def version(self) -> Body:
        """GET /version: the cheapest proof that the API answers."""
        return dict(await self._api.version())

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Body:
        return await self._call("GET", resource, namespace, f"/{name}")

    async def find(self, resource: Resource, name: str, namespace: str | None = None) -> Body | None:
        try:
            return await self.get(resource, name, namespace)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def list(
        self, resource: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Body]:
        params = {"labelSelector": label_selector} if label_selector else None
        body = await self._call("GET", resource, namespace, "", params=params)
        return list(body.get("items", []))

    async def create(self, resource: Resource, obj: Mapping[str, Any], namespace: str | None = None) -> Body:
        obj = {"apiVersion": resource.api_version, "kind": resource.kind, **obj}
        return await self._call(
            "POST",
            resource,
            namespace or obj.get("metadata", {}).get("namespace"),
            "",
            content=json.dumps(obj),
            headers={"Content-Type": "application/json"},
        )

    async def replace(self, resource: Resource, obj: Mapping[str, Any], subresource: str = "") -> Body:
        meta = obj["metadata"]
        tail = f"/{meta['name']}" + (f"/{subresource}" if subresource else "")
        return await self._call(
            "PUT",
            resource,
            meta.get("namespace"),
            tail,
            content=json.dumps(obj),
            headers={"Content-Type": "application/json"},
        )

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        subresource: str = "",
    ) -> Body:
        """JSON merge patch; put ``metadata.resourceVersion`` in ``patch`` for a precondition."""
        tail = f"/{name}" + (f"/{subresource}" if subresource else "")
        return await self._call(
            "PATCH",
            resource,
            namespace,
            tail,
            content=json.dumps(patch),
            headers={"Content-Type": MERGE_PATCH},
        )

    async def delete(self, resource: Resource, name: str, namespace: str | None = None) -> bool:
        """Delete; False when it was already gone."""
        try:
            await self._call("DELETE", resource, namespace, f"/{name}")
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return True


def _checked(response: httpx.Response) -> Body:
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = {}
    if response.is_error:
        reason = body.get("reason") or response.reason_phrase
        message = body.get("message") or response.text[:200]
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        raise ApiError(response.status_code, str(reason), str(message), retry_after=retry_after)
    return body if isinstance(body, dict) else {}


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (kube-apiserver sends delta-seconds), None when absent or odd."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86_400 else None
