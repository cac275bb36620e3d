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
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import kr8s
import kr8s.asyncio

from keyward.kube.resources import Resource

MERGE_PATCH = "application/merge-patch+json"
Body = dict[str, Any]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The RBAC verb of a call on one object (a GET without a name is a list).
VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
#: Seconds one call may take before it counts as unanswered (kr8s itself sets no timeout at all).
DEFAULT_TIMEOUT = 30.0
#: Told of every write the API did not accept: (the error, the HTTP method).
WriteFailed = Callable[["ApiError", str], None]


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
        #: The RBAC rule the call needed (``Resource.permission``), set by ``Kube``: what a 403 lacks.
        self.permission: str | None = None
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
    """Raw CRUD on any resource, one object at a time.

    Each call gives up after ``timeout`` seconds without an answer (an ``ApiError`` with status 0, like
    a refused connection); ``on_write_failure`` hears of every failed write, whoever made it."""

    def __init__(
        self, api: Any, *, timeout: float = DEFAULT_TIMEOUT, on_write_failure: WriteFailed | None = None
    ) -> None:
        self._api = api
        self._calls = asyncio.Semaphore(MAX_CONCURRENT_CALLS)
        self.timeout = timeout
        self.on_write_failure = on_write_failure

    @property
    def raw(self) -> Any:
        """The kr8s API object, for streaming calls (watches: see keyward.kube.watching)."""
        return self._api

    @classmethod
    async def connect(
        cls,
        kubeconfig: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        on_write_failure: WriteFailed | None = None,
    ) -> Kube:
        return cls(
            await kr8s.asyncio.api(kubeconfig=kubeconfig), timeout=timeout, on_write_failure=on_write_failure
        )

    async def _call(
        self,
        method: str,
        resource: Resource,
        namespace: str | None,
        name: str = "",
        subresource: str = "",
        **kwargs: Any,
    ) -> Body:
        ns = namespace if resource.namespaced else None
        url = resource.plural + (f"/{name}" if name else "") + (f"/{subresource}" if subresource else "")
        try:
            try:
                async with (
                    self._calls,
                    self._api.call_api(
                        method,
                        version="",
                        base=resource.prefix,
                        namespace=ns,
                        url=url,
                        raise_for_status=False,
                        timeout=self.timeout,
                        **kwargs,
                    ) as response,
                ):
                    return _checked(response)
            except (httpx.TransportError, kr8s.APITimeoutError) as exc:  # refused, cut, or no answer
                raise ApiError(0, "Unreachable", _transport_error(exc, self.timeout)) from exc
        except ApiError as exc:
            verb = VERBS[method] if name or method != "GET" else "list"
            exc.permission = resource.permission(verb, subresource)
            if method in WRITE_METHODS and self.on_write_failure is not None:
                self.on_write_failure(exc, method)
            raise

    async def version(self) -> Body:
        """GET /version: the cheapest proof that the API answers."""
        return dict(await self._api.version())

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Body:
        return await self._call("GET", resource, namespace, name)

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
        body = await self._call("GET", resource, namespace, params=params)
        return list(body.get("items", []))

    async def create(self, resource: Resource, obj: Mapping[str, Any], namespace: str | None = None) -> Body:
        obj = {"apiVersion": resource.api_version, "kind": resource.kind, **obj}
        return await self._call(
            "POST",
            resource,
            namespace or obj.get("metadata", {}).get("namespace"),
            content=json.dumps(obj),
            headers={"Content-Type": "application/json"},
        )

    async def replace(self, resource: Resource, obj: Mapping[str, Any], subresource: str = "") -> Body:
        meta = obj["metadata"]
        return await self._call(
            "PUT",
            resource,
            meta.get("namespace"),
            meta["name"],
            subresource,
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
        return await self._call(
            "PATCH",
            resource,
            namespace,
            name,
            subresource,
            content=json.dumps(patch),
            headers={"Content-Type": MERGE_PATCH},
        )

    async def delete(self, resource: Resource, name: str, namespace: str | None = None) -> bool:
        """Delete; False when it was already gone."""
        try:
            await self._call("DELETE", resource, namespace, name)
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return True


def _transport_error(exc: Exception, timeout: float) -> str:
    """kr8s turns httpx's timeouts into its own APITimeoutError."""
    if isinstance(exc, httpx.TimeoutException | kr8s.APITimeoutError):
        return f"no answer within {timeout:g} s"
    return f"{type(exc).__name__}: {exc}"


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
