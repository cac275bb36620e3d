"""The one wait-for of the tests: poll a condition until it holds, instead of sleeping a fixed time.

``wait_for`` is for async tests (the probe may be a coroutine function or a plain one; the event loop
keeps running between polls), ``wait_until`` for sync tests. Both return the probe's first truthy value
and fail with an AssertionError naming ``what`` and the last value when ``timeout`` seconds pass.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

INTERVAL = 0.05  # between polls: a test waits little longer than its condition takes, and the polls
# (often a subprocess or an API read) leave the machine to what they wait for


async def wait_for(
    probe: Callable[[], Awaitable[T | None] | T | None],
    timeout: float = 20.0,
    what: str = "condition",
    *,
    interval: float = INTERVAL,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last  # type: ignore[no-any-return]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        await asyncio.sleep(interval)


def wait_until(
    probe: Callable[[], T | None],
    timeout: float = 5.0,
    what: str = "condition",
    *,
    interval: float = INTERVAL,
) -> T:
    """``wait_for`` for sync tests: poll ``probe`` (blocking) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)
