"""Serving processes: ``keyward est-server`` answers EST from several processes on one port.

In one process, the event loop (TLS, HTTP, the request checks) and the signing (C_Sign and the pki work
around it) share one GIL; with signing processes, every enrollment crosses a socket twice and wakes two
processes. Here each serving process does a whole enrollment itself, TLS to signature, in its own token
session: an enrollment wakes one process, and N processes use N cores (docs/PERFORMANCE.md, (e): a
quarter more enrollments per second, and ≈ 1 ms less CPU each, than one server process with signing
processes).

- **The port.** The parent binds the address, so that a port in use is one error at start and port 0
  is its choice, then marks its socket SO_REUSEPORT and never listens on it: it only holds the port.
  Each serving process listens on its own socket bound to the same address with SO_REUSEPORT, and the
  kernel spreads new connections over them. A process that dies takes only its own connections along.
- **A serving process** is a fresh interpreter (``keyward.children``) running
  ``keyward.estserver.child.serve``. Over its channel it gets the token's config, logs in (one process
  at a time: SoftHSM2 can miss its token in a process that starts while another logs in), then gets a
  ``ServingSetup``: how to build its server, the CA (its key as a token reference, see
  ``keystore.keys``), the TLS certificate and key. It answers ready, or why it cannot serve. Later
  messages are renewed TLS certificates. When the channel closes (the parent stops, or died) it stops
  accepting, finishes what it has, and exits: no orphan keeps the port.
- **Limits** are each process's own: the connection cap (``EstServer``'s ``max_connections``) holds
  per process, so the server as a whole admits up to N times as many.
- **Signing inline.** A serving process signs on its event loop. It has nothing else to do meanwhile
  (the other processes take the other connections), and a thread would only add GIL hand-offs (measured
  slower). Serverkeygen's key generation, which takes long for RSA, still runs in a thread.
- **Supervision.** The parent starts a new process for one that exits: at once, unless the last one
  also failed or died young, then after a pause that doubles up to ``MAX_RESTART_PAUSE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import time
from dataclasses import dataclass, replace

from keyward import children
from keyward.children import AsyncChannel
from keyward.errors import UserError
from keyward.estserver import child
from keyward.estserver.child import ServingSetup
from keyward.host import ListenAddress
from keyward.issuers.tcs.est_ca import ServerCertificate
from keyward.keystore import HsmConfig
from keyward.keystore.child import load_answer

log = logging.getLogger("keyward.est.workers")

#: Seconds a serving process gets to log in and start listening.
START_TIMEOUT = 60.0
#: Seconds stopping processes get to finish their requests (the server's shutdown timeout, and a margin).
STOP_TIMEOUT = 7.0
#: Seconds a process whose socket closed gets to exit before it is killed.
EXIT_TIMEOUT = 1.0
#: Longest pause before starting a process again while new processes keep dying young.
MAX_RESTART_PAUSE = 30.0
#: A process that served this long died of something else than its start: replace it at once.
YOUNG = 10.0


class ServingProcesses:
    """``count`` processes serving ``setup`` on the parent's port, each with a session on the token."""

    def __init__(self, config: HsmConfig, setup: ServingSetup, count: int) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        self._config = config
        self._setup = setup
        self._count = count
        self._slots: list[_Slot] = []
        self._login = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def pids(self) -> tuple[int, ...]:
        """The serving processes running now."""
        return tuple(slot.process.pid for slot in self._slots if slot.process is not None)

    async def start(self) -> None:
        """Start every process and wait until each serves; ``UserError`` (and nothing left running) if
        one cannot, with its reason."""
        loop = asyncio.get_running_loop()
        self._slots = [_Slot(index, loop.create_future()) for index in range(self._count)]
        self._tasks = [asyncio.create_task(self._keep_serving(slot)) for slot in self._slots]
        try:
            for slot in self._slots:
                await slot.first_start
        except BaseException:
            await self.stop()
            raise

    def renew_tls(self, tls: ServerCertificate) -> None:
        """Serve ``tls`` from now on: sent to every process (and given to those started later)."""
        self._setup = replace(self._setup, tls=tls)
        for slot in self._slots:
            if slot.channel is not None and slot.ready:
                slot.channel.send(tls)

    async def stop(self) -> None:
        """Close every process's socket (each finishes its requests and exits), kill what lingers."""
        self._stopping = True
        processes = [slot.detach() for slot in self._slots]  # all told at once
        deadline = time.monotonic() + STOP_TIMEOUT
        await asyncio.gather(*(children.reap_async(process, deadline) for process in processes if process))
        for task in self._tasks:
            task.cancel()  # a process being started, or a pause before the next one
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for slot in self._slots:  # start() reported the first failure; the others are read here
            if slot.first_start.done() and not slot.first_start.cancelled():
                slot.first_start.exception()

    # -- one slot ------------------------------------------------------------------------------

    async def _keep_serving(self, slot: _Slot) -> None:
        early_deaths = 0  # in a row: processes that failed to start or died within YOUNG seconds
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._serve_once(slot)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not slot.first_start.done():
                    slot.first_start.set_exception(exc)
                    return
                if isinstance(exc, _NotStarted):
                    log.warning("serving process %s could not %s: %s", slot.index, exc.doing, exc.reason)
                else:
                    log.warning("serving process %s could not start: %s", slot.index, exc)
            if self._stopping:
                return
            early_deaths = 0 if time.monotonic() - started > YOUNG else early_deaths + 1
            if early_deaths > 1:
                pause = min(2.0 ** (early_deaths - 2), MAX_RESTART_PAUSE)
                log.warning("starting serving process %s again in %.0f s", slot.index, pause)
                await asyncio.sleep(pause)

    async def _serve_once(self, slot: _Slot) -> None:
        """Start a process in ``slot`` and return when it has exited."""
        slot.process, sock = children.spawn(child.serve)
        try:
            slot.channel = channel = await AsyncChannel.open(sock)
            async with asyncio.timeout(START_TIMEOUT):
                async with self._login:
                    channel.send(self._config)
                    _expect_ready(await channel.recv_bytes(), "log in to the token")
                setup = self._setup
                channel.send(setup)
                _expect_ready(await channel.recv_bytes(), "serve")
            slot.ready = True
            if self._setup.tls is not setup.tls:  # renewed while the process was starting
                channel.send(self._setup.tls)
            if not slot.first_start.done():
                slot.first_start.set_result(None)
            else:
                log.info("serving process %s (pid %s) is serving again", slot.index, slot.process.pid)
            with contextlib.suppress(EOFError, OSError):
                await channel.recv_bytes()  # nothing more comes; the end is the process exiting
        except TimeoutError:
            if not slot.first_start.done():
                raise UserError(
                    f"a serving process did not start within {START_TIMEOUT:.0f} s",
                    "check that the token answers (its log lines above may say more)",
                ) from None
        except (EOFError, OSError):
            pass
        finally:
            process = slot.detach()
            if process is not None:
                await children.reap_async(process, time.monotonic() + EXIT_TIMEOUT)
        if process is not None and not self._stopping:
            how = children.how_it_ended(process.returncode)
            if slot.first_start.done():
                log.warning("serving process %s (pid %s) %s; starting another", slot.index, process.pid, how)
            else:
                raise UserError(f"a serving process {how} while starting", "its log lines above say why")


@dataclass
class _Slot:
    index: int
    first_start: asyncio.Future[None]  # done when the slot's first process serves, or cannot
    process: subprocess.Popen[bytes] | None = None
    channel: AsyncChannel | None = None
    ready: bool = False

    def detach(self) -> subprocess.Popen[bytes] | None:
        """Close the channel (the process sees its end and stops) and forget the process, to be reaped."""
        channel, process = self.channel, self.process
        self.channel, self.process, self.ready = None, None, False
        if channel is not None:
            channel.close()
        return process


class _NotStarted(UserError):
    """A serving process answered that it cannot serve, and why."""

    def __init__(self, doing: str, reason: str) -> None:
        super().__init__(f"a serving process could not {doing}: {reason}")
        self.doing, self.reason = doing, reason


def _expect_ready(answer: bytes, doing: str) -> None:
    ok, why = load_answer(answer, "a serving process")
    if not ok:
        raise _NotStarted(doing, str(why))


# -- the port -------------------------------------------------------------------------------------------


def hold_port(listen: ListenAddress) -> tuple[list[socket.socket], int]:
    """Bind every address of ``listen`` (port 0: a free port, the same for all), as a plain bind would
    (``EADDRINUSE`` if anyone holds it, SO_REUSEPORT or not), then let the serving processes join with
    SO_REUSEPORT. The sockets never listen. ``OSError`` as ``bind`` raises it."""
    infos = socket.getaddrinfo(
        listen.host or None, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    held: list[socket.socket] = []
    port = listen.port
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return held, port
