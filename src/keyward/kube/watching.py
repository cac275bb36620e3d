"""A list+watch loop over plain HTTP, the way client-go's informers keep up with the API.

List once (every object is reported, so a restart misses nothing), then watch from the list's
resourceVersion; when the server says 410 Gone (it no longer remembers that version) list again. Errors
are logged and retried with capped exponential backoff, so the stand-in outlives API restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from keyward.kube.client import Kube
from keyward.kube.resources import Resource

log = logging.getLogger("keyward.watching")

Handler = Callable[[str, dict[str, Any]], Awaitable[None]]
WATCH_SECONDS = 240  # the server ends each watch after this; we resume from the last version seen


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


def _path(resource: Resource, namespace: str | None) -> tuple[str | None, str]:
    return (namespace if resource.namespaced else None), resource.plural


async def _list(kube: Kube, resource: Resource, namespace: str | None) -> tuple[str, list[dict[str, Any]]]:
    ns, url = _path(resource, namespace)
    async with kube.raw.call_api(
        "GET", version="", base=resource.prefix, namespace=ns, url=url, raise_for_status=True
    ) as response:
        body = response.json()
    return str(body.get("metadata", {}).get("resourceVersion") or ""), list(body.get("items") or [])


async def _watch(
    kube: Kube, resource: Resource, namespace: str | None, version: str, handler: Handler
) -> str:
    """Stream events after ``version`` until the server ends the watch; returns the last version seen."""
    ns, url = _path(resource, namespace)
    params = {
        "watch": "1",
        "resourceVersion": version,
        "allowWatchBookmarks": "true",
        "timeoutSeconds": str(WATCH_SECONDS),
    }
    timeout = httpx.Timeout(10.0, read=WATCH_SECONDS + 30.0)
    async with kube.raw.call_api(
        "GET",
        version="",
        base=resource.prefix,
        namespace=ns,
        url=url,
        params=params,
        stream=True,
        timeout=timeout,
        raise_for_status=True,
    ) as response:
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
    return version


async def list_and_watch(kube: Kube, resource: Resource, namespace: str | None, handler: Handler) -> None:
    """Report every object (as "ADDED"), then every change, to ``handler``; runs until cancelled."""
    backoff = Backoff()
    version = ""
    while True:
        try:
            if not version:
                version, items = await _list(kube, resource, namespace)
                for item in items:
                    await handler("ADDED", item)
            version = await _watch(kube, resource, namespace, version, handler)
            backoff.reset()
        except asyncio.CancelledError:
            raise
        except Gone:
            version = ""
        except Exception as exc:
            delay = backoff.next()
            log.warning(
                "watching %s failed (%s: %s); retrying in %.0fs", resource, type(exc).__name__, exc, delay
            )
            version = ""
            await asyncio.sleep(delay)
