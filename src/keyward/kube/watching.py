"""A list+watch loop over plain HTTP, the way client-go's informers keep up with the API.

List once (every object is reported, so a restart misses nothing), then watch from the list's
resourceVersion; when the watch ends (its timeout, or the connection was cut) watch again from the last
version seen; when the server says 410 Gone (it no longer remembers that version) list again, and report
as DELETED what vanished meanwhile. Lists come in pages of ``PAGE`` objects, each handled before the next
is read, so ten thousand objects never sit in memory at once. Errors are retried with capped exponential
backoff, so a watch outlives API restarts; a failure is logged when it is new (a repeat at debug level),
and the recovery too. Label and field selectors narrow what is listed and watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from keyward.kube.client import Kube
from keyward.kube.resources import Resource

log = logging.getLogger("keyward.watching")

Handler = Callable[[str, dict[str, Any]], Awaitable[None]]
Key = tuple[str, str]
WATCH_SECONDS = 240  # the server ends each watch after this; we resume from the last version seen
PAGE = 250  # objects per list page


class Gone(Exception):
    """The server no longer remembers the resourceVersion we asked to watch from."""


class Backoff:
    """1s, 2s, 4s ... up to ``limit``; ``reset`` after a success."""

    def __init__(self, first: float = 1.0, limit: float = 30.0) -> None:
        self.first, self.limit, self.delay = first, limit, first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.limit)
        return delay

    def reset(self) -> None:
        self.delay = self.first


def _get(
    kube: Kube, resource: Resource, namespace: str | None, params: dict[str, str], **options: Any
) -> contextlib.AbstractAsyncContextManager[httpx.Response]:
    """A GET of the resource's collection (a list page, or a watch with ``stream=True``)."""
    return kube.raw.call_api(  # type: ignore[no-any-return]
        "GET",
        version="",
        base=resource.prefix,
        namespace=namespace if resource.namespaced else None,
        url=resource.plural,
        params=params,
        raise_for_status=True,
        **options,
    )


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


async def _pages(
    kube: Kube, resource: Resource, namespace: str | None, selectors: dict[str, str]
) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """The list, page by page: (the list's resourceVersion, the page's objects)."""
    token = ""
    while True:
        params = {**selectors, "limit": str(PAGE), **({"continue": token} if token else {})}
        async with _get(kube, resource, namespace, params) as response:
            body = response.json()
        meta = body.get("metadata") or {}
        yield str(meta.get("resourceVersion") or ""), list(body.get("items") or [])
        token = str(meta.get("continue") or "")
        if not token:
            return


async def _watch(
    kube: Kube,
    resource: Resource,
    namespace: str | None,
    version: str,
    handler: Handler,
    selectors: dict[str, str],
) -> str:
    """Stream events after ``version`` until the server ends the watch; returns the last version seen."""
    params = {
        **selectors,
        "watch": "1",
        "resourceVersion": version,
        "allowWatchBookmarks": "true",
        "timeoutSeconds": str(WATCH_SECONDS),
    }
    timeout = httpx.Timeout(10.0, read=WATCH_SECONDS + 30.0)
    async with _get(kube, resource, namespace, params, stream=True, timeout=timeout) as response:
        try:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise RuntimeError(f"watch of {resource} failed: {obj.get('message') or obj}")
                version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                if kind != "BOOKMARK":
                    await handler(str(kind), obj)
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            # The stream was cut (a proxy, an API server restart): resume from what was seen, as the
            # server's own timeout would have it.
            log.debug("the watch of %s was cut (%s); resuming from %s", resource, exc, version)
    return version


async def list_and_watch(
    kube: Kube,
    resource: Resource,
    namespace: str | None,
    handler: Handler,
    *,
    label_selector: str | None = None,
    field_selector: str | None = None,
    synced: Callable[[], None] | None = None,
) -> None:
    """Report every object (as "ADDED"), then every change, to ``handler``; runs until cancelled.

    An object that vanished while the watch was away is reported "DELETED" with the metadata it was last
    seen with (name, namespace, uid). ``synced`` is called after each complete list (every object listed
    has been reported), and when the resource is not served at all (a CRD not installed: nothing to
    list)."""
    backoff = Backoff()
    version = ""
    selectors = {
        name: value
        for name, value in (("labelSelector", label_selector), ("fieldSelector", field_selector))
        if value
    }
    known: dict[Key, str] = {}  # key → uid

    async def track(kind: str, obj: dict[str, Any]) -> None:
        key = _key(obj)
        if kind == "DELETED":
            known.pop(key, None)
        else:
            known[key] = str((obj.get("metadata") or {}).get("uid") or "")
        await handler(kind, obj)

    failure: str | None = None
    while True:
        try:
            if not version:
                listed: set[Key] = set()
                listed_version = ""
                pages = _pages(kube, resource, namespace, selectors)
                async for page_version, items in pages:
                    for item in items:
                        listed.add(_key(item))
                        await track("ADDED", item)
                    listed_version = page_version  # the same on every page: the list's
                    del items
                version = listed_version
                for key in sorted(known.keys() - listed):  # deleted while we were not watching
                    meta = {"namespace": key[0] or None, "name": key[1], "uid": known[key]}
                    await track("DELETED", {"metadata": meta})
                if failure is not None:
                    log.info("watching %s again", resource)
                    failure = None
                if synced is not None:
                    synced()
            version = await _watch(kube, resource, namespace, version, track, selectors)
            backoff.reset()
        except asyncio.CancelledError:
            raise
        except Gone:
            version = ""
        except Exception as exc:
            delay = backoff.next()
            if not version and _status_of(exc) == 404:
                # The resource is not served (its CRD is not installed): nothing to list, so the list
                # is complete; watched for again until it appears.
                problem = f"the API server does not serve {resource} (404): is its CRD installed?"
                if synced is not None:
                    synced()
            else:
                problem = f"{type(exc).__name__}: {exc}"
            (log.warning if problem != failure else log.debug)(
                "watching %s failed (%s); retrying in %.0fs", resource, problem, delay
            )
            failure = problem
            version = ""
            await asyncio.sleep(delay)


def _status_of(error: Exception) -> int | None:
    """The HTTP status of a failed call (kr8s and httpx errors carry the response), if any."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None
