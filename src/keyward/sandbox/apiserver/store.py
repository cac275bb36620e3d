"""In-memory object storage with a global resourceVersion counter, indices and a watch event log.

Objects are kept per resource, per namespace, per name, and are never mutated once stored (each
write stores a new dict), so events, logs and list snapshots may share them. Every write is O(1):
it updates the uid and owner indices, appends to that resource's bounded event log and hands the
event to that resource's subscribers (the watchers), which filter it themselves.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from keyward.sandbox.apiserver.objects import Obj
from keyward.sandbox.apiserver.resources import StorageKey

ObjectKey = tuple[StorageKey, str, str]  # (storage key, namespace or "", name)


@dataclass(slots=True)
class WatchEvent:
    """One change: ``obj`` is the object after it (for DELETED: its last state), ``old`` before it."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None
    encoded: dict[object, bytes] = field(default_factory=dict)  # per-view serialization cache


class Subscriber(Protocol):
    """A watch: ``version`` is the API version it was opened with."""

    version: str

    def offer(self, event: WatchEvent) -> None: ...

    def close(self) -> None: ...


class EventLog:
    """At least the last ``capacity`` events of one resource (trimmed in batches), searchable by rv.

    ``exact`` keeps exactly the last ``capacity`` (a fault plan's small watch window)."""

    def __init__(self, capacity: int, *, exact: bool = False) -> None:
        self.capacity = capacity
        self.exact = exact
        self._events: list[WatchEvent] = []
        self.forgotten_rv = 0  # every event with rv > forgotten_rv is still in the log

    def append(self, event: WatchEvent) -> None:
        self._events.append(event)
        if len(self._events) > (self.capacity if self.exact else 2 * self.capacity):
            self.trim()

    def trim(self) -> None:
        drop = len(self._events) - self.capacity
        if drop > 0:
            self.forgotten_rv = self._events[drop - 1].rv
            del self._events[:drop]

    def since(self, rv: int) -> list[WatchEvent] | None:
        """Events after ``rv``, or None when some of them were already forgotten."""
        if rv < self.forgotten_rv:
            return None
        start = bisect.bisect_right(self._events, rv, key=lambda e: e.rv)
        return self._events[start:]


def _key_of(skey: StorageKey, obj: Obj) -> ObjectKey:
    metadata = obj["metadata"]
    return (skey, metadata.get("namespace", ""), metadata["name"])


def _owner_uids(obj: Obj) -> set[str]:
    refs = obj["metadata"].get("ownerReferences") or []
    return {ref["uid"] for ref in refs if isinstance(ref, dict) and isinstance(ref.get("uid"), str)}


class Store:
    def __init__(self, log_capacity: int = 10000) -> None:
        self.rv = 0
        self.log_capacity = log_capacity
        self._objects: dict[StorageKey, dict[str, dict[str, Obj]]] = {}
        self._by_uid: dict[str, ObjectKey] = {}
        self._dependents: dict[str, set[ObjectKey]] = {}
        self._population: Counter[str] = Counter()  # namespace -> number of namespaced objects
        self._logs: dict[StorageKey, EventLog] = {}
        self._subscribers: dict[StorageKey, set[Subscriber]] = {}

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def get(self, skey: StorageKey, namespace: str, name: str) -> Obj | None:
        return self._objects.get(skey, {}).get(namespace, {}).get(name)

    def by_uid(self, uid: str) -> Obj | None:
        key = self._by_uid.get(uid)
        return self.get(*key) if key is not None else None

    def iterate(self, skey: StorageKey, namespace: str | None = None) -> Iterator[Obj]:
        """Objects of one resource, in one namespace or (None) all, sorted by namespace and name."""
        spaces = self._objects.get(skey, {})
        names = [namespace] if namespace is not None else sorted(spaces)
        for space in names:
            objects = spaces.get(space, {})
            for name in sorted(objects):
                yield objects[name]

    def keys_in_namespace(self, namespace: str) -> list[ObjectKey]:
        return [
            (skey, namespace, name)
            for skey, spaces in self._objects.items()
            for name in spaces.get(namespace, {})
        ]

    def population(self, namespace: str) -> int:
        return self._population[namespace]

    def dependents(self, owner_uid: str) -> list[ObjectKey]:
        return sorted(self._dependents.get(owner_uid, ()))

    def log(self, skey: StorageKey) -> EventLog:
        log = self._logs.get(skey)
        if log is None:
            log = self._logs[skey] = EventLog(self.log_capacity, exact=self.exact_window)
        return log

    exact_window = False

    def set_window(self, events: int) -> None:
        """Remember exactly the last ``events`` events per resource from now on (older ones: 410 Gone)."""
        self.log_capacity, self.exact_window = events, True
        for log in self._logs.values():
            log.capacity, log.exact = events, True
            log.trim()

    def subscribe(self, skey: StorageKey, subscriber: Subscriber) -> None:
        self._subscribers.setdefault(skey, set()).add(subscriber)

    def unsubscribe(self, skey: StorageKey, subscriber: Subscriber) -> None:
        self._subscribers.get(skey, set()).discard(subscriber)

    def subscribers(self, skey: StorageKey) -> list[Subscriber]:
        return list(self._subscribers.get(skey, ()))

    def put(self, skey: StorageKey, obj: Obj, old: Obj | None) -> WatchEvent:
        """Store a new or changed object whose resourceVersion was already set from ``next_rv``."""
        key = _key_of(skey, obj)
        self._objects.setdefault(skey, {}).setdefault(key[1], {})[key[2]] = obj
        if old is None and key[1]:
            self._population[key[1]] += 1
        self._by_uid[obj["metadata"]["uid"]] = key
        self._reindex_owners(key, old, obj)
        return self._emit(
            skey,
            WatchEvent(
                int(obj["metadata"]["resourceVersion"]), "ADDED" if old is None else "MODIFIED", obj, old
            ),
        )

    def remove(self, skey: StorageKey, final: Obj, old: Obj) -> WatchEvent:
        """Drop an object; ``final`` is its last state carrying the deletion's resourceVersion."""
        key = _key_of(skey, old)
        spaces = self._objects.get(skey, {})
        spaces.get(key[1], {}).pop(key[2], None)
        if not spaces.get(key[1], True):
            del spaces[key[1]]
        if key[1]:
            self._population[key[1]] -= 1
            if self._population[key[1]] <= 0:
                del self._population[key[1]]
        self._by_uid.pop(old["metadata"]["uid"], None)
        self._reindex_owners(key, old, None)
        return self._emit(skey, WatchEvent(int(final["metadata"]["resourceVersion"]), "DELETED", final, old))

    def drop_resource(self, skey: StorageKey) -> list[Obj]:
        """Forget a whole resource (its CRD was deleted); returns the objects it held."""
        objects = list(self.iterate(skey))
        for obj in objects:
            final = dict(obj)
            final["metadata"] = {**obj["metadata"], "resourceVersion": str(self.next_rv())}
            self.remove(skey, final, obj)
        self._objects.pop(skey, None)
        return objects

    def _reindex_owners(self, key: ObjectKey, old: Obj | None, new: Obj | None) -> None:
        before = _owner_uids(old) if old is not None else set()
        after = _owner_uids(new) if new is not None else set()
        for uid in before - after:
            dependents = self._dependents.get(uid)
            if dependents is not None:
                dependents.discard(key)
                if not dependents:
                    del self._dependents[uid]
        for uid in after - before:
            self._dependents.setdefault(uid, set()).add(key)

    def _emit(self, skey: StorageKey, event: WatchEvent) -> WatchEvent:
        self.log(skey).append(event)
        for subscriber in self._subscribers.get(skey, ()):
            subscriber.offer(event)
        return event
