"""The Secret store: a Secret is read once, then kept current by its own narrowed watch; listeners hear."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from keyward.operator.secrets import Handler, SecretStore, slim


class Follows:
    """Stands in for the narrowed watches: records which Secrets are followed, lists what a test says."""

    def __init__(self, existing: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.existing = existing
        self.followed: list[tuple[str, str]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, namespace: str, name: str, handler: Handler, synced: Callable[[], None]) -> None:
        self.followed.append((namespace, name))
        await self.release.wait()
        body = self.existing.get((namespace, name))
        if body is not None:
            await handler("ADDED", body)
        synced()
        await asyncio.Event().wait()


def secret(password: str, name: str = "creds") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": password, "managedFields": [{}]},
        "type": "kubernetes.io/basic-auth",
        "data": {"username": "dQ==", "password": password},
    }


async def test_a_secret_is_followed_once_and_kept_current_by_its_watch() -> None:
    follows = Follows({("ns", "creds"): secret("djE=")})
    store = SecretStore(follow=follows)
    heard: list[tuple[str, str, Any]] = []
    store.listen(lambda ns, name, body: heard.append((ns, name, body and body["data"]["password"])))
    assert ("ns", "creds") not in store
    first = await store.get("ns", "creds")
    assert (
        first is not None and first["data"]["password"] == "djE=" and "managedFields" not in first["metadata"]
    )
    assert await store.get("ns", "creds") == first and follows.followed == [("ns", "creds")]
    assert store.peek("ns", "creds") == first
    await store.apply("MODIFIED", secret("djI="))
    assert (store.peek("ns", "creds") or {})["data"]["password"] == "djI="
    await store.apply("MODIFIED", secret("djI="))  # no change: no wake-up
    await store.apply("DELETED", secret("djI="))
    assert store.peek("ns", "creds") is None
    await store.apply("ADDED", secret("x", name="unwatched"))
    assert ("ns", "unwatched") not in store, "Secrets nobody asked for are not kept"
    assert heard == [("ns", "creds", "djE="), ("ns", "creds", "djI="), ("ns", "creds", None)]
    await store.close()


async def test_a_missing_secret_is_none_and_its_creation_is_heard() -> None:
    follows = Follows({})
    store = SecretStore(follow=follows)
    heard: list[str] = []
    store.listen(lambda ns, name, body: heard.append(name))
    assert await store.get("ns", "creds") is None
    await store.apply("ADDED", secret("bmV3"))
    assert heard == ["creds"] and (store.peek("ns", "creds") or {})["data"]["password"] == "bmV3"
    await store.close()


def test_slim_keeps_what_names_and_owns_a_secret_and_its_data_only() -> None:
    body = {**secret("cHc="), "kind": "Secret", "immutable": True}
    kept = slim(body)
    assert set(kept) == {"type", "data", "metadata"}
    assert set(kept["metadata"]) == {"name", "namespace", "resourceVersion"}
