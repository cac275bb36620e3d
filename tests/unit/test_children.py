"""keyward.children: fresh-interpreter children, the one framed channel between a parent and its child,
and the end of a child (reaped by a deadline, told for a log line)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyward import children
from keyward.children import AsyncChannel, Channel

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


# -- entry points of the children these tests start (module-level: the child imports them) -------------


def echo(sock: socket.socket) -> None:
    """Answers the first message from a blocking channel, then every other one from asyncio."""
    channel = Channel(sock)
    channel.send_bytes(channel.recv_bytes())
    asyncio.run(_echo(channel.detach()))


async def _echo(sock: socket.socket) -> None:
    channel = await AsyncChannel.open(sock)
    while True:
        try:
            message = await channel.recv_bytes()
        except EOFError:
            return
        channel.send_bytes(message)
        await channel.drain()


def pong(sock: socket.socket) -> None:
    """Answers ``ping`` with ``pong`` until the channel closes."""
    channel = Channel(sock)
    while True:
        try:
            channel.recv()
        except EOFError:
            return
        channel.send("pong")


def deaf(sock: socket.socket) -> None:
    """Says it is up, then never reads its socket again (a child stuck in a PKCS#11 call)."""
    Channel(sock).send("up")
    time.sleep(3600)


@pytest.fixture(autouse=True)
def importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the children import their entry points from here


@pytest.fixture
def pair() -> Iterator[tuple[Channel, socket.socket]]:
    ours, theirs = socket.socketpair()
    yield Channel(ours), theirs
    ours.close()
    theirs.close()


# -- the channel ------------------------------------------------------------------------------------------


def test_messages_cross_both_sides_of_the_channel_whole_and_in_order() -> None:
    process, sock = children.spawn(echo)
    channel = Channel(sock)
    messages = [b"", os.urandom(3 * 65536 + 7), b"x" * 10, b"last"]
    try:
        channel.send_bytes(b"first, to the blocking side")
        echoed = [channel.recv_bytes()]  # the child goes on with asyncio only after answering
        for message in messages:
            channel.send_bytes(message)
        echoed += [channel.recv_bytes() for _ in messages]
    finally:
        channel.close()
        children.reap(process, time.monotonic() + 10)
    assert echoed == [b"first, to the blocking side", *messages]
    assert process.returncode == 0, "the child ended when its socket closed"


def test_received_gives_whole_messages_only_and_never_waits(pair: tuple[Channel, socket.socket]) -> None:
    channel, theirs = pair
    assert channel.received() == []  # nothing has arrived: no waiting
    framed = children.frame(b"one") + children.frame(b"two")
    theirs.sendall(framed[:5])
    assert channel.received() == []  # part of a message
    theirs.sendall(framed[5:])
    assert channel.received() == [b"one", b"two"]
    theirs.sendall(children.frame(b"three"))
    theirs.close()
    assert channel.received() == [b"three"], "what arrived before the end is delivered"
    with pytest.raises(EOFError):
        channel.received()


async def test_pickled_messages_and_the_end_seen_from_the_asyncio_side(
    pair: tuple[Channel, socket.socket],
) -> None:
    channel, theirs = pair
    peer = await AsyncChannel.open(theirs)
    peer.send({"config": ("token", 1)})
    await peer.drain()
    assert await asyncio.to_thread(channel.recv) == {"config": ("token", 1)}
    channel.send(["answer", None])
    assert await peer.recv() == ["answer", None]

    channel.close()

    with pytest.raises(EOFError):
        await peer.recv()
    peer.close()


def test_a_channel_hands_over_to_asyncio_only_with_nothing_read_ahead(
    pair: tuple[Channel, socket.socket],
) -> None:
    channel, theirs = pair
    theirs.sendall(children.frame(b"config") + children.frame(b"too early")[:3])
    assert channel.recv_bytes() == b"config"
    with pytest.raises(RuntimeError, match="would be lost"):
        channel.detach()


# -- children ---------------------------------------------------------------------------------------------


def test_a_child_ignores_ctrl_c_and_stops_when_its_socket_closes() -> None:
    process, sock = children.spawn(pong)
    channel = Channel(sock)
    try:
        channel.send("ping")
        assert channel.recv() == "pong"  # the child is up
        os.kill(process.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        channel.send("ping")
        assert channel.recv() == "pong", "the child is still there after SIGINT"
    finally:
        channel.close()
        children.reap(process, time.monotonic() + 10)
    assert children.how_it_ended(process.returncode) == "exited (0)"


def test_a_child_stuck_past_the_deadline_is_killed_and_its_end_says_so() -> None:
    process, sock = children.spawn(deaf)
    channel = Channel(sock)
    assert channel.recv() == "up"
    channel.close()

    children.reap(process, time.monotonic() + 0.2)

    assert children.how_it_ended(process.returncode) == "was killed by signal 9"


async def test_reaping_from_asyncio_kills_a_stuck_child_too() -> None:
    process, sock = children.spawn(deaf)
    channel = await AsyncChannel.open(sock)
    assert await channel.recv() == "up"
    channel.close()

    await children.reap_async(process, time.monotonic() + 0.2)

    assert process.returncode == -signal.SIGKILL


def test_only_a_module_level_function_can_be_a_childs_entry_point() -> None:
    def nested(sock: socket.socket) -> None:
        pass

    for entry in (nested, lambda sock: None):
        with pytest.raises(ValueError, match="must be a module-level function"):
            children.spawn(entry)  # type: ignore[arg-type]
