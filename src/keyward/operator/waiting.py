"""The one parking primitive: work that waits for something, retried later or at once when woken.

An approved request whose issuer is missing or not ready, an EST order waiting for its Retry-After or
for fixed credentials: each is parked under a key with the label of what it waits for (the issuer's
signer name). It is retried after a delay — capped exponential backoff per key, or a time the caller
names — and at once when ``wake(label)`` says what it waits for changed. Parking again replaces the
earlier timer; a key is retried by one task at a time. Waiting is never a failure: cert-manager's
contract keeps such requests Pending for as long as it takes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger("keyward.waiting")
K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass
class _Parked(Generic[T]):
    item: T
    label: str | None
    attempts: int = 0
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class Waiting(Generic[K, T]):
    """Parked items by key; ``retry(item)`` runs when a timer fires or their label is woken."""

    def __init__(
        self,
        retry: Callable[[T], Awaitable[None]],
        *,
        first: float = 2.0,
        limit: float = 300.0,
        name: str = "waiting",
    ) -> None:
        self._retry = retry
        self._first = first
        self._limit = limit
        self._name = name
        self._parked: dict[K, _Parked[T]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __contains__(self, key: object) -> bool:
        return key in self._parked

    def __len__(self) -> int:
        return len(self._parked)

    def labels(self) -> dict[str | None, int]:
        """How many items wait per label (for metrics)."""
        counts: dict[str | None, int] = {}
        for parked in self._parked.values():
            counts[parked.label] = counts.get(parked.label, 0) + 1
        return counts

    def park(self, key: K, item: T, label: str | None = None, *, delay: float | None = None) -> float:
        """Retry ``item`` later: after ``delay`` seconds, or after the key's next backoff step (2 s, 4 s,
        … up to ``limit``); at once when ``label`` is woken. Returns the delay chosen."""
        parked = self._parked.get(key)
        if parked is None:
            parked = self._parked[key] = _Parked(item, label)
        else:
            parked.item, parked.label = item, label
            self._cancel(parked)
        parked.attempts += 1
        if delay is None:
            delay = min(self._first * 2 ** min(parked.attempts - 1, 16), self._limit)
        loop = asyncio.get_running_loop()
        parked.timer = loop.call_later(max(0.0, delay), self._fire, key)
        return delay

    def update(self, key: K, item: T) -> None:
        """A newer version of a parked item (its next retry uses it); nothing when the key is not parked."""
        parked = self._parked.get(key)
        if parked is not None:
            parked.item = item

    def release(self, key: K) -> T | None:
        """Stop waiting for ``key`` (done, or gone); returns its item."""
        parked = self._parked.pop(key, None)
        if parked is None:
            return None
        self._cancel(parked)
        return parked.item

    def wake(self, label: str) -> int:
        """What waits for ``label`` is retried now; returns how many."""
        keys = [key for key, parked in self._parked.items() if parked.label == label]
        for key in keys:
            self._cancel(self._parked[key])
            self._fire(key)
        return len(keys)

    def close(self) -> None:
        for parked in self._parked.values():
            self._cancel(parked)
        self._parked.clear()
        for task in self._tasks:
            task.cancel()

    def _fire(self, key: K) -> None:
        parked = self._parked.get(key)
        if parked is None:
            return
        parked.timer = None
        task = asyncio.get_running_loop().create_task(self._run(parked.item), name=f"{self._name} retry")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, item: T) -> None:
        try:
            await self._retry(item)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: a retry failed unexpectedly", self._name)

    @staticmethod
    def _cancel(parked: _Parked[T]) -> None:
        if parked.timer is not None:
            parked.timer.cancel()
            parked.timer = None
