"""The parking primitive: per key one timer, capped backoff, woken at once by what it waits for."""

from __future__ import annotations

import asyncio

from keyward.operator.waiting import Waiting
from tests.support.waiting import wait_for


async def test_parked_items_are_retried_after_a_growing_delay_capped() -> None:
    retried: list[str] = []

    async def retry(item: str) -> None:
        retried.append(item)

    waiting: Waiting[str, str] = Waiting(retry, first=0.01, limit=0.04)
    delays = [waiting.park("k", f"v{n}", "issuer") for n in range(5)]
    assert delays == [0.01, 0.02, 0.04, 0.04, 0.04], "doubling per attempt, capped"
    # "nothing else": every earlier timer (at most 0.04 s) would have fired within these 0.1 s
    await asyncio.sleep(0.1)
    assert retried == ["v4"], "parking again replaces the earlier timer: one retry, the newest item"
    waiting.close()


async def test_wake_retries_what_waits_for_that_label_now_and_nothing_else() -> None:
    retried: list[str] = []

    async def retry(item: str) -> None:
        retried.append(item)

    waiting: Waiting[str, str] = Waiting(retry, first=60.0)
    waiting.park("a", "request a", "issuer-1")
    waiting.park("b", "request b", "issuer-2")
    waiting.update("a", "request a, newer")
    assert waiting.wake("issuer-1") == 1
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert retried == ["request a, newer"]
    assert "a" in waiting and "b" in waiting, "woken items stay parked until released"
    assert waiting.release("b") == "request b" and "b" not in waiting
    waiting.update("b", "ignored")  # a released key is not parked again by an update
    assert "b" not in waiting and len(waiting) == 1
    waiting.close()


async def test_an_explicit_delay_wins_and_a_failing_retry_does_not_stop_the_others(caplog) -> None:  # type: ignore[no-untyped-def]
    retried: list[str] = []

    async def retry(item: str) -> None:
        retried.append(item)
        if item == "bad":
            raise RuntimeError("boom")

    waiting: Waiting[str, str] = Waiting(retry, first=60.0, name="test")
    waiting.park("x", "bad", delay=0.0)
    waiting.park("y", "good", delay=0.01)
    await wait_for(lambda: len(retried) == 2, 5, "both retries")
    assert retried == ["bad", "good"]
    assert any("test: a retry failed unexpectedly" in m for m in caplog.messages)
    waiting.close()
