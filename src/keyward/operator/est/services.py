"""What the EST controllers share in one operator process: the Secret cache and the three controllers.

Created on first use and kept in ``memo.extras["est"]``, so that no startup-handler order matters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keyward.est.client import EstClient, EstEndpoint
from keyward.issuers.est.issuer import EstCredentials
from keyward.issuers.est.orders import RetryPolicy
from keyward.kube.client import Kube
from keyward.kube.resources import SECRETS
from keyward.operator.services import Runtime

if TYPE_CHECKING:
    from keyward.operator.est.issuers import EstIssuers
    from keyward.operator.est.orders import EstOrders
    from keyward.operator.est.requests import EstRequests

log = logging.getLogger("keyward.est")
Key = tuple[str, str]  # (namespace, name)


@dataclass
class _Loading:
    """A GET in flight; a watch event arriving meanwhile is newer and wins."""

    done: asyncio.Event
    newer: tuple[Mapping[str, Any] | None] | None = None


class SecretCache:
    """Secrets the EST issuers use, kept current by the Secret watch (no GET per enrollment).

    A Secret is fetched once, when an issuer first asks for it; from then on watch events replace it.
    Only Secrets that were asked for are kept, so the cache holds credentials and nothing else.
    """

    def __init__(self, kube: Kube) -> None:
        self._kube = kube
        self._entries: dict[Key, Mapping[str, Any] | None] = {}
        self._loading: dict[Key, _Loading] = {}

    def tracks(self, namespace: str, name: str) -> bool:
        key = (namespace, name)
        return key in self._entries or key in self._loading

    async def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        key = (namespace, name)
        if key in self._entries:
            return self._entries[key]
        loading = self._loading.get(key)
        if loading is not None:
            await loading.done.wait()
            return self._entries.get(key)
        loading = self._loading[key] = _Loading(asyncio.Event())
        try:
            found = await self._kube.find(SECRETS, name, namespace)
            self._entries[key] = loading.newer[0] if loading.newer is not None else _slim(found)
        finally:
            del self._loading[key]
            loading.done.set()
        return self._entries.get(key)

    def update(self, event_type: str, body: Mapping[str, Any]) -> bool:
        """Apply a watch event; True when a tracked Secret changed (its issuers must re-check)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        new = None if event_type == "DELETED" else _slim(body)
        loading = self._loading.get(key)
        if loading is not None:
            loading.newer = (new,)
            return True
        if key not in self._entries:
            return False
        changed = self._entries[key] != new
        self._entries[key] = new
        return changed

    def lookup(self, namespace: str) -> Any:
        """A ``SecretLookup`` for one namespace (see keyward.issuers.est.issuer)."""

        async def lookup(name: str) -> Mapping[str, Any] | None:
            return await self.get(namespace, name)

        return lookup


def _slim(secret: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """Type and data only: what credentials need (and what a change is compared on)."""
    if secret is None:
        return None
    return {"type": secret.get("type") or "Opaque", "data": dict(secret.get("data") or {})}


class EstRuntime:
    """The EST side of one operator process."""

    def __init__(self, memo: Runtime) -> None:
        from keyward.operator.est.issuers import EstIssuers
        from keyward.operator.est.orders import EstOrders
        from keyward.operator.est.requests import EstRequests

        self.memo = memo
        settings = memo.settings.est_client
        self.settings = settings
        self.connect_timeout = min(10.0, settings.timeout)
        #: One attempt (two requests at most: the re-enrollment fallback) must end within this.
        self.attempt_deadline = 2 * (self.connect_timeout + settings.timeout)
        self.policy = RetryPolicy(
            auth_retry_delay=settings.auth_retry_delay,
            backoff_limit=settings.backoff_limit,
            max_retry_duration=settings.max_retry_duration,
            lease=self.attempt_deadline + 5.0,
        )
        self.secrets = SecretCache(memo.api)
        self._tasks: set[asyncio.Task[None]] = set()
        self.issuers: EstIssuers = EstIssuers(self)
        self.orders: EstOrders = EstOrders(self)
        self.requests: EstRequests = EstRequests(self)

    @property
    def api(self) -> Kube:
        return self.memo.api

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, holding a reference until it ends (asyncio keeps weak ones)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def client(self, endpoint: EstEndpoint, credentials: EstCredentials | None = None) -> EstClient:
        credentials = credentials or EstCredentials()
        return EstClient(
            endpoint,
            auth=credentials.auth,
            client_cert=credentials.client_cert,
            timeout=self.settings.timeout,
            connect_timeout=self.connect_timeout,
        )

    def secret_namespace(self, issuer_namespace: str | None) -> str:
        """Namespaced issuers: their own namespace; cluster issuers: CLUSTER_SCOPE_NAMESPACE or ours."""
        return issuer_namespace or self.memo.settings.est_cluster_namespace


def est_runtime(memo: Runtime) -> EstRuntime:
    runtime = memo.extras.get("est")
    if runtime is None:
        runtime = memo.extras["est"] = EstRuntime(memo)
    assert isinstance(runtime, EstRuntime)
    return runtime
