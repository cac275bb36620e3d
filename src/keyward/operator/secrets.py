"""Secrets, watched only where keyward needs them — never every Secret of the cluster.

- ``SecretStore``: Secrets keyward reads by name (EST credentials, client CA bundles, the EST server's TLS
  Secret, a TCS issuer's own CA Secret). The first ``get`` starts a watch narrowed to that one Secret
  (``fieldSelector=metadata.name=…`` in its namespace) and waits for its first list; from then on the
  watch keeps the copy current, so no request costs an API call, and listeners hear every change
  (creation and deletion included). Only the type and data are kept, plus what names the object.
- ``owned_secrets``: one watch of the Secrets keyward created (its ``managed-by`` label), so that a
  deleted or altered CA Secret wakes its issuer's check, which puts it back. ``OwnedObjects`` watches
  keyward's objects of any resource so (its QuoteAttestations too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keyward.host import cancel
from keyward.kube.client import Kube
from keyward.kube.resources import MANAGED_BY, MANAGED_BY_LABEL, SECRETS, Resource
from keyward.kube.watching import list_and_watch

log = logging.getLogger("keyward.secrets")
Key = tuple[str, str]  # (namespace, name)
Listener = Callable[[str, str, Mapping[str, Any] | None], None]
Handler = Callable[[str, dict[str, Any]], Awaitable[None]]
#: How one Secret is followed: report it and its changes to the handler, call ``synced`` once listed.
Follow = Callable[[str, str, Handler, Callable[[], None]], Awaitable[None]]


def slim(secret: Mapping[str, Any]) -> dict[str, Any]:
    """What is kept of a Secret: its type, data, and the metadata that names and owns it."""
    meta = secret.get("metadata") or {}
    return {
        "type": secret.get("type") or "Opaque",
        "data": dict(secret.get("data") or {}),
        "metadata": {
            key: meta[key]
            for key in (
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "labels",
                "annotations",
                "ownerReferences",
            )
            if meta.get(key) is not None
        },
    }


@dataclass
class _Watched:
    value: dict[str, Any] | None = None
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class SecretStore:
    def __init__(self, kube: Kube | None = None, *, follow: Follow | None = None) -> None:
        if follow is None:
            assert kube is not None, "a SecretStore follows Secrets through the API, or a given follow"
            follow = _narrowed_watch(kube)
        self._follow_one = follow
        self._watched: dict[Key, _Watched] = {}
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """``listener(namespace, name, secret or None)`` after every change of a watched Secret."""
        self._listeners.append(listener)

    def __contains__(self, key: object) -> bool:
        return key in self._watched

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret as last seen (None: it does not exist), watched from now on."""
        watched = self._watch(namespace, name)
        await watched.synced.wait()
        return watched.value

    def peek(self, namespace: str, name: str) -> dict[str, Any] | None:
        """What is known now, without waiting (a Secret not watched yet is watched from now on)."""
        return self._watch(namespace, name).value

    def watched(self) -> frozenset[Key]:
        return frozenset(self._watched)

    async def close(self) -> None:
        await cancel(*(watched.task for watched in self._watched.values()))
        self._watched.clear()

    def _watch(self, namespace: str, name: str) -> _Watched:
        key = (namespace, name)
        watched = self._watched.get(key)
        if watched is None:
            watched = self._watched[key] = _Watched()
            watched.task = asyncio.get_running_loop().create_task(
                self._follow(key, watched), name=f"watch Secret {namespace}/{name}"
            )
        return watched

    async def apply(self, event_type: str, body: Mapping[str, Any]) -> None:
        """A watch event about a watched Secret (what the watches call; tests may call it too)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        watched = self._watched.get(key)
        if watched is None:
            return
        new = None if event_type == "DELETED" else slim(body)
        changed = new != watched.value
        watched.value = new
        if changed and watched.synced.is_set():
            self._tell(*key, new)

    async def _follow(self, key: Key, watched: _Watched) -> None:
        namespace, name = key

        async def on_event(event_type: str, body: dict[str, Any]) -> None:
            body.setdefault("metadata", {}).setdefault("namespace", namespace)
            await self.apply(event_type, body)

        def synced() -> None:
            first = not watched.synced.is_set()
            watched.synced.set()
            if first and watched.value is not None:
                self._tell(namespace, name, watched.value)

        await self._follow_one(namespace, name, on_event, synced)

    def _tell(self, namespace: str, name: str, secret: Mapping[str, Any] | None) -> None:
        for listener in self._listeners:
            try:
                listener(namespace, name, secret)
            except Exception:
                log.exception("a listener of Secret %s/%s failed", namespace, name)


def _narrowed_watch(kube: Kube) -> Follow:
    async def follow(namespace: str, name: str, handler: Handler, synced: Callable[[], None]) -> None:
        await list_and_watch(
            kube, SECRETS, namespace, handler, field_selector=f"metadata.name={name}", synced=synced
        )

    return follow


class OwnedObjects:
    """The objects of one resource keyward created (label ``app.kubernetes.io/managed-by=keyward``),
    watched in the namespaces the operator serves; ``on_event(event type, object)`` for each event."""

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        namespaces: tuple[str, ...],
        on_event: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self._kube = kube
        self._resource = resource
        self._namespaces = namespaces or (None,)
        self._on_event = on_event
        self._tasks: list[asyncio.Task[None]] = []
        self._synced: set[str | None] = set()

    @property
    def synced(self) -> bool:
        """Every namespace's first list is in."""
        return len(self._synced) == len(self._namespaces)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for namespace in self._namespaces:
            self._tasks.append(
                loop.create_task(self._follow(namespace), name=f"watch keyward's {self._resource.plural}")
            )

    async def close(self) -> None:
        await cancel(*self._tasks)
        self._tasks.clear()

    async def _follow(self, namespace: str | None) -> None:
        async def on_event(event_type: str, body: dict[str, Any]) -> None:
            self._on_event(event_type, body)

        await list_and_watch(
            self._kube,
            self._resource,
            namespace,
            on_event,
            label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}",
            synced=lambda: self._synced.add(namespace),
        )


def owned_secrets(kube: Kube, namespaces: tuple[str, ...], on_change: Listener) -> OwnedObjects:
    """keyward's own Secrets: ``on_change(namespace, name, secret or None)`` for each event, so that a
    deleted or altered CA Secret wakes its issuer's check."""

    def changed(event_type: str, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        secret = None if event_type == "DELETED" else slim(body)
        on_change(str(meta.get("namespace") or ""), str(meta.get("name") or ""), secret)

    return OwnedObjects(kube, SECRETS, namespaces, changed)
