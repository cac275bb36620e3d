"""Run a long-lived coroutine until it ends or the user presses Ctrl-C (or SIGTERM arrives)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any


async def until_signalled(main: Coroutine[Any, Any, None]) -> None:
    """Cancel ``main`` on SIGINT/SIGTERM, so its ``finally`` blocks close tokens and servers cleanly."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run_until_signalled(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(until_signalled(main))
