"""How request events reach their controllers: one task per request, a bounded number at once, the newest
event of a busy request waiting, the watch held back when too many wait — and no event lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keyward.kube.resources import CERTIFICATE_REQUESTS, Resource
from keyward.operator.request_watches import OneAtATime


class Controller:
    """Records what it was given; a request named in ``hold`` waits until released."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.hold: dict[str, asyncio.Event] = {}
        self.running = 0
        self.most = 0

    async def deliver(self, resource: Resource, event_type: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if name in self.hold:
                await self.hold[name].wait()
            await asyncio.sleep(0)
            if body.get("fail"):
                raise RuntimeError("a bug in one request's handling")
            self.seen.append((name, event_type))
        finally:
            self.running -= 1


def event(name: str, event_type: str = "MODIFIED", **extra: Any) -> tuple[Resource, str, dict[str, Any]]:
    return CERTIFICATE_REQUESTS, event_type, {"metadata": {"name": name}, **extra}


async def settle(events: OneAtATime, controller: Controller, count: int) -> None:
    for _ in range(1000):
        if len(controller.seen) >= count and controller.running == 0:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"only {controller.seen} delivered")


async def test_a_busy_request_keeps_only_its_newest_event_waiting() -> None:
    controller = Controller()
    events = OneAtATime(controller.deliver)
    controller.hold["a"] = asyncio.Event()
    await events.submit("a", event("a", "ADDED"))
    await events.submit("a", event("a", "MODIFIED"))
    await events.submit("a", event("a", "DELETED"))
    await asyncio.sleep(0)
    assert controller.running == 1
    controller.hold["a"].set()
    await settle(events, controller, 2)
    assert controller.seen == [("a", "ADDED"), ("a", "DELETED")], "the older waiting event is dropped"


async def test_at_most_limit_requests_at_once_and_none_is_lost() -> None:
    controller = Controller()
    events = OneAtATime(controller.deliver, limit=3, backlog=100)
    for index in range(40):
        await events.submit(f"r{index}", event(f"r{index}"))
    await settle(events, controller, 40)
    assert sorted(name for name, _ in controller.seen) == sorted(f"r{index}" for index in range(40))
    assert controller.most == 3


async def test_the_watch_waits_while_the_backlog_is_full() -> None:
    controller = Controller()
    events = OneAtATime(controller.deliver, limit=1, backlog=2)
    controller.hold["first"] = asyncio.Event()
    await events.submit("first", event("first"))
    await events.submit("second", event("second"))
    third = asyncio.create_task(events.submit("third", event("third")))
    await asyncio.sleep(0.01)  # the behaviour under test: the third submit does not return meanwhile
    assert not third.done(), "two requests wait: the watch holds back"
    controller.hold["first"].set()
    await asyncio.wait_for(third, 1)
    await settle(events, controller, 3)
    assert [name for name, _ in controller.seen] == ["first", "second", "third"]


async def test_one_request_failing_stops_no_other(caplog: pytest.LogCaptureFixture) -> None:
    controller = Controller()
    events = OneAtATime(controller.deliver, limit=1)
    await events.submit("bad", event("bad", fail=True))
    await events.submit("good", event("good"))
    await settle(events, controller, 1)
    assert controller.seen == [("good", "MODIFIED")]
    assert any("handling the MODIFIED event of CertificateRequest bad failed" in m for m in caplog.messages)
    await events.close()
