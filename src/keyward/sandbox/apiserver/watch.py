"""Watch streams: newline-delimited JSON events, replay from a resourceVersion, bookmarks.

A ``Watcher`` subscribes to one stored resource. Writes hand it every event synchronously; it keeps
the ones its namespace and selectors match (an object that stops matching arrives as DELETED, one that
starts matching as ADDED, as kube-apiserver does) and the stream task writes them out. Each event is
serialized once per view and event type, whatever the number of watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from keyward.sandbox.apiserver.errors import ApiError
from keyward.sandbox.apiserver.objects import Obj
from keyward.sandbox.apiserver.operations import Cluster, view_matches
from keyward.sandbox.apiserver.resources import View
from keyward.sandbox.apiserver.selectors import ObjectFilter
from keyward.sandbox.apiserver.store import WatchEvent

INITIAL_EVENTS_END = "k8s.io/initial-events-end"
Render = Callable[[Obj], Obj]  # the object as the client asked for it (Table watches render rows)
Item = tuple[WatchEvent, str] | bytes | None  # an event and its type as sent, pre-encoded bytes, or close


def _line(kind: str, obj: Any) -> bytes:
    return (json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n").encode()


class Watcher:
    def __init__(self, view: View, selection: ObjectFilter, render: Render | None = None) -> None:
        self.view = view
        self.version = view.version
        self.selection = selection
        self.render = render
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.closed = False
        self.cut = False  # closed mid-stream by a fault plan
        self._everything = selection == ObjectFilter()

    def matches(self, obj: Obj) -> bool:
        return self._everything or view_matches(self.view, self.selection, obj)

    def offer(self, event: WatchEvent) -> None:
        if self.closed:
            return
        kind = self._type_for(event)
        if kind is not None:
            self.queue.put_nowait((event, kind))

    def _type_for(self, event: WatchEvent) -> str | None:
        if self._everything:
            return event.type
        now = self.matches(event.obj)
        if event.type != "MODIFIED" or event.old is None:
            return event.type if now else None
        before = self.matches(event.old)
        if now:
            return "MODIFIED" if before else "ADDED"
        return "DELETED" if before else None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    def encode(self, event: WatchEvent, kind: str) -> bytes:
        if self.render is not None:
            return _line(kind, self.render(self.view.from_storage(event.obj)))
        key = (self.view.key, kind)
        encoded = event.encoded.get(key)
        if encoded is None:
            encoded = event.encoded[key] = _line(kind, self.view.from_storage(event.obj))
        return encoded

    def bookmark(self, rv: int, *, initial_end: bool = False) -> bytes:
        metadata: Obj = {"resourceVersion": str(rv)}
        if initial_end:
            metadata["annotations"] = {INITIAL_EVENTS_END: "true"}
        return _line(
            "BOOKMARK",
            {"kind": self.view.resource.kind, "apiVersion": self.view.api_version, "metadata": metadata},
        )


async def serve_watch(
    request: web.Request,
    cluster: Cluster,
    view: View,
    selection: ObjectFilter,
    *,
    resource_version: str,
    send_initial: str,
    lifetime: float | None,
    bookmark_interval: float | None,
    render: Render | None,
    watchers: set[Watcher],
    cut_after: int | None = None,
) -> web.StreamResponse:
    """Answer a watch request; returns when the timeout passes, the client leaves or the server stops.

    ``cut_after`` (a fault plan's cut-watch): close the connection mid-stream after that many events.
    """
    store = cluster.store
    skey = view.resource.storage_key
    watcher = Watcher(view, selection, render)
    # From here to subscribe() nothing awaits: no write can slip between the snapshot and the stream.
    if resource_version in ("", "0") or send_initial == "true":
        if not (send_initial == "false" and resource_version == ""):
            namespace = selection.namespace if view.resource.namespaced else None
            for obj in store.iterate(skey, namespace):
                if watcher.matches(obj):
                    watcher.queue.put_nowait(
                        (WatchEvent(int(obj["metadata"]["resourceVersion"]), "ADDED", obj, None), "ADDED")
                    )
        if send_initial == "true":
            watcher.queue.put_nowait(watcher.bookmark(store.rv, initial_end=True))
    else:
        since = int(resource_version)
        replay = store.log(skey).since(since)
        if replay is None:
            gone = ApiError(
                410, "Expired", f"too old resource version: {since} ({store.log(skey).forgotten_rv + 1})"
            )
            watcher.queue.put_nowait(_line("ERROR", gone.status()))
            watcher.close()
        else:
            for event in replay:
                watcher.offer(event)
    store.subscribe(skey, watcher)
    watchers.add(watcher)
    try:
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"}
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):
            await _pump(watcher, response, cluster, lifetime, bookmark_interval, cut_after)
        if watcher.cut and request.transport is not None:
            request.transport.close()  # no final chunk: the client sees the stream break off
        return response
    finally:
        store.unsubscribe(skey, watcher)
        watchers.discard(watcher)
        watcher.closed = True


async def _pump(
    watcher: Watcher,
    response: web.StreamResponse,
    cluster: Cluster,
    lifetime: float | None,
    bookmark_interval: float | None,
    cut_after: int | None = None,
) -> None:
    if cut_after is not None:
        await _pump_until_cut(watcher, response, cut_after)
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lifetime if lifetime else None
    next_bookmark = loop.time() + bookmark_interval if bookmark_interval else None
    while True:
        wake = min((t for t in (deadline, next_bookmark) if t is not None), default=None)
        item: Item | str
        try:
            async with asyncio.timeout_at(wake):
                item = await watcher.queue.get()
        except TimeoutError:
            item = "tick"
        if item is None:
            return
        if isinstance(item, tuple | bytes):
            chunks = [_encoded(watcher, item)]
            while not watcher.queue.empty() and len(chunks) < 1000:
                following = watcher.queue.get_nowait()
                if following is None:
                    await response.write(b"".join(chunks))
                    return
                chunks.append(_encoded(watcher, following))
            await response.write(b"".join(chunks))
        now = loop.time()
        if deadline is not None and now >= deadline:
            return
        if next_bookmark is not None and bookmark_interval and now >= next_bookmark and watcher.queue.empty():
            await response.write(watcher.bookmark(cluster.store.rv))
            next_bookmark = now + bookmark_interval


def _encoded(watcher: Watcher, item: tuple[WatchEvent, str] | bytes) -> bytes:
    return item if isinstance(item, bytes) else watcher.encode(*item)


async def _pump_until_cut(watcher: Watcher, response: web.StreamResponse, events: int) -> None:
    """Send events one by one and stop (marking the cut) once ``events`` of them went out."""
    sent = 0
    while sent < events:
        item = await watcher.queue.get()
        if item is None:
            return
        await response.write(_encoded(watcher, item))
        if isinstance(item, tuple):
            sent += 1
    watcher.cut = True
