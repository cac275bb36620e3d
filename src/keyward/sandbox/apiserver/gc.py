"""Background deletion, standing in for kube-controller-manager's garbage collector and namespace
controller: dependents of a deleted owner (matched by ownerReferences uid) are deleted, cascading;
a dependent with another live owner only loses the dangling reference; a deleted namespace is
emptied and then removed.

Work is queued by the request that caused it and done by a task on the event loop, so, as on a
real cluster, the DELETE answers before its dependents are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from keyward.sandbox.apiserver.objects import Obj
from keyward.sandbox.apiserver.resources import ResourceType, StorageKey
from keyward.sandbox.apiserver.store import ObjectKey

if TYPE_CHECKING:
    from keyward.sandbox.apiserver.operations import Cluster

logger = logging.getLogger(__name__)
Job = tuple[str, str] | tuple[str, ObjectKey]


class GarbageCollector:
    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._jobs: asyncio.Queue[Job] | None = None
        self._pending: list[Job] = []  # jobs queued before start()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._jobs = asyncio.Queue()
        for job in self._pending:
            self._jobs.put_nowait(job)
        self._pending.clear()
        self._task = asyncio.create_task(self._run(), name="sandbox-apiserver-gc")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _queue(self, job: Job) -> None:
        if self._jobs is None:
            self._pending.append(job)
        else:
            self._jobs.put_nowait(job)

    def owner_gone(self, uid: str) -> None:
        if self._cluster.store.dependents(uid):
            self._queue(("owner", uid))

    def purge_namespace(self, name: str) -> None:
        self._queue(("namespace", name))

    def check_owners(self, skey: StorageKey, obj: Obj) -> None:
        """Queue a dependent whose owners are (partly) missing already, as the real GC notices them."""
        refs = obj["metadata"].get("ownerReferences") or []
        if any(
            self._cluster.store.by_uid(str(ref.get("uid"))) is None for ref in refs if isinstance(ref, dict)
        ):
            metadata = obj["metadata"]
            self._queue(("dependent", (skey, metadata.get("namespace", ""), metadata["name"])))

    def orphan(self, uid: str) -> None:
        """propagationPolicy Orphan: dependents stay, minus their reference to the owner."""
        for key in self._cluster.store.dependents(uid):
            obj = self._cluster.store.get(*key)
            resource = self._cluster.registry.by_storage(key[0])
            if obj is None or resource is None:
                continue
            refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            self._rewrite_owners(resource, obj, refs)

    async def _run(self) -> None:
        assert self._jobs is not None
        while True:
            kind, subject = await self._jobs.get()
            try:
                if isinstance(subject, tuple):
                    self._collect(subject)
                elif kind == "owner":
                    for key in self._cluster.store.dependents(subject):
                        self._collect(key)
                else:
                    self._purge(subject)
            except Exception:
                logger.exception("sandbox garbage collection of %s %s failed", kind, subject)

    def _collect(self, key: ObjectKey) -> None:
        store = self._cluster.store
        obj = store.get(*key)
        resource = self._cluster.registry.by_storage(key[0])
        if obj is None or resource is None:
            return
        refs = [r for r in obj["metadata"].get("ownerReferences") or [] if isinstance(r, dict)]
        live = [r for r in refs if store.by_uid(str(r.get("uid"))) is not None]
        if len(live) == len(refs):
            return
        if live:
            self._rewrite_owners(resource, obj, live)
        else:
            self._cluster.delete_object(resource, obj, "Background")

    def _rewrite_owners(self, resource: ResourceType, obj: Obj, refs: list[Obj]) -> None:
        new = dict(obj)
        metadata = {**obj["metadata"], "ownerReferences": refs}
        if not refs:
            del metadata["ownerReferences"]
        new["metadata"] = metadata
        self._cluster.update_stored(resource, obj, new)

    def _purge(self, namespace: str) -> None:
        for key in self._cluster.store.keys_in_namespace(namespace):
            obj = self._cluster.store.get(*key)
            resource = self._cluster.registry.by_storage(key[0])
            if obj is not None and resource is not None:
                self._cluster.delete_object(resource, obj, "Background")
        self._cluster.finish_namespace(namespace)
