"""Serving processes: ``keyward est-server`` answers EST from several processes on one port.

In one process, the event loop (TLS, HTTP, the request checks) and the signing (C_Sign and the pki work
around it) share one GIL; with signing processes, every enrollment crosses a socket twice and wakes two
processes. Here each serving process does a whole enrollment itself, TLS to signature, in its own token
session: an enrollment wakes one process, and N processes use N cores (docs/PERFORMANCE.md, runs 18-20:
a quarter more enrollments per second, and ≈ 1 ms less CPU each, than one server process with signing
processes).

- **The port.** The parent binds the address, so that a port in use is one error at start and port 0
  is its choice, then marks its socket SO_REUSEPORT and never listens on it: it only holds the port.
  Each serving process listens on its own socket bound to the same address with SO_REUSEPORT, and the
  kernel spreads new connections over them. A process that dies takes only its own connections along.
- **A serving process** is a fresh interpreter (``python -c``: a PKCS#11 module must not be used across
  a fork). Over a socket pair it gets the token's config, logs in (one process at a time: SoftHSM2 can
  miss its token in a process that starts while another logs in), then gets a ``ServingSetup``: how to
  build its server, the CA (its key as a token reference, see ``keystore.keys``), the TLS certificate
  and key. It answers ready, or why it cannot serve. Later messages are renewed TLS certificates. When
  the socket closes (the parent stops, or died) it stops accepting, finishes what it has, and exits: no
  orphan keeps the port.
- **Limits** are each process's own: the connection cap (``EstServer``'s ``max_connections``) holds
  per process, so the server as a whole admits up to N times as many.
- **Signing inline.** A serving process signs on its event loop. It has nothing else to do meanwhile
  (the other processes take the other connections), and a thread would only add GIL hand-offs (measured
  slower). Serverkeygen's key generation, which takes long for RSA, still runs in a thread.
- **Supervision.** The parent starts a new process for one that exits: at once, unless the last one
  also failed or died young, then after a pause that doubles up to ``MAX_RESTART_PAUSE``.

Pickled messages are safe here as in ``keystore.processes``: they only travel on a socket pair between a
parent and the child it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from keyward.errors import UserError
from keyward.est.server import EstServer, ServerTls
from keyward.host import ListenAddress
from keyward.issuers.tcs.est_ca import ServerCertificate, TokenWorkers
from keyward.keystore import HsmConfig, keys
from keyward.keystore.processes import how_it_ended, log_in_settled

T = TypeVar("T")
log = logging.getLogger("keyward.est.workers")

#: How a serving process starts: ``serve`` on the socket it inherits.
_ENTRY = "import sys; from keyward.estserver.workers import serve; serve(int(sys.argv[1]))"
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
_HEADER = struct.Struct("!I")
_READY = ("ready", None)


@dataclass(frozen=True)
class ServingSetup:
    """What a serving process needs besides its token login. ``make_server`` builds the ``EstServer``
    around a ``TokenWorkers`` (must pickle: a module-level function, or a partial of one, whose
    arguments pickle; token keys travel as references)."""

    make_server: Callable[[TokenWorkers], EstServer]
    tls: ServerCertificate
    listen: ListenAddress  # the parent's port, never 0
    log_level: int = logging.INFO
    log_format: str = logging.BASIC_FORMAT


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
            if slot.writer is not None and slot.ready:
                _send(slot.writer, tls)

    async def stop(self) -> None:
        """Close every process's socket (each finishes its requests and exits), kill what lingers."""
        self._stopping = True
        processes = [slot.detach() for slot in self._slots]  # all told at once
        await asyncio.gather(*(_reap(process, STOP_TIMEOUT) for process in processes if process is not None))
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
        ours, theirs = socket.socketpair()
        with theirs:
            slot.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _ENTRY,
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        reader, slot.writer = await asyncio.open_connection(sock=ours)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                async with self._login:
                    _send(slot.writer, self._config)
                    _expect_ready(await _receive(reader), "log in to the token")
                setup = self._setup
                _send(slot.writer, setup)
                _expect_ready(await _receive(reader), "serve")
            slot.ready = True
            if self._setup.tls is not setup.tls:  # renewed while the process was starting
                _send(slot.writer, self._setup.tls)
            if not slot.first_start.done():
                slot.first_start.set_result(None)
            else:
                log.info("serving process %s (pid %s) is serving again", slot.index, slot.process.pid)
            with contextlib.suppress(EOFError, OSError):
                await _receive(reader)  # nothing more comes; the end of the stream is the process exiting
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
                await _reap(process, EXIT_TIMEOUT)
        if process is not None and not self._stopping:
            how = how_it_ended(process.returncode)
            if slot.first_start.done():
                log.warning("serving process %s (pid %s) %s; starting another", slot.index, process.pid, how)
            else:
                raise UserError(f"a serving process {how} while starting", "its log lines above say why")


@dataclass
class _Slot:
    index: int
    first_start: asyncio.Future[None]  # done when the slot's first process serves, or cannot
    process: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    ready: bool = False

    def detach(self) -> asyncio.subprocess.Process | None:
        """Close the socket (the process sees its end and stops) and forget the process, to be reaped."""
        writer, process = self.writer, self.process
        self.writer, self.process, self.ready = None, None, False
        if writer is not None:
            writer.close()
        return process


class _NotStarted(UserError):
    """A serving process answered that it cannot serve, and why."""

    def __init__(self, doing: str, reason: str) -> None:
        super().__init__(f"a serving process could not {doing}: {reason}")
        self.doing, self.reason = doing, reason


def _expect_ready(message: object, doing: str) -> None:
    if message != _READY:
        reason = message[1] if isinstance(message, tuple) and len(message) == 2 else repr(message)
        raise _NotStarted(doing, str(reason))


async def _reap(process: asyncio.subprocess.Process, timeout: float) -> None:
    """Wait for ``process`` to exit, killing it after ``timeout`` seconds."""
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _send(writer: asyncio.StreamWriter, message: object) -> None:
    payload = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    writer.write(_HEADER.pack(len(payload)) + payload)


async def _receive(reader: asyncio.StreamReader) -> Any:
    """The next message; ``EOFError`` when the other side has closed."""
    try:
        (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        payload = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise EOFError from None
    return pickle.loads(payload)  # noqa: S301 (our own parent or child, on a private socket pair)


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


# -- in a serving process -------------------------------------------------------------------------------


class InlineSigning:
    """``TokenWorkers`` that run issuance jobs on the caller's thread: a serving process's event loop."""

    async def run_signing(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)


def serve(fd: int) -> None:
    """A serving process: log in, serve, and stop when the parent closes the socket ``fd``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    with contextlib.suppress(EOFError, ConnectionError):
        asyncio.run(_serve(socket.socket(fileno=fd)))


async def _serve(control: socket.socket) -> None:
    reader, writer = await asyncio.open_connection(sock=control)
    config: HsmConfig = await _receive(reader)
    try:
        sessions = log_in_settled(config)
    except Exception as exc:
        await _refuse(writer, str(exc))
        return
    keys.serve_token_in_this_process(sessions)
    try:
        _send(writer, _READY)
        setup: ServingSetup = await _receive(reader)
        logging.basicConfig(level=setup.log_level, format=setup.log_format)
        try:
            server, tls = await _start_serving(setup)
        except Exception as exc:
            await _refuse(writer, _why_not_serving(setup, exc))
            return
        try:
            _send(writer, _READY)
            log.debug("serving process %s listening", os.getpid())
            await _follow(reader, tls)
        finally:
            await server.stop()
    finally:
        sessions.close()


async def _start_serving(setup: ServingSetup) -> tuple[EstServer, ServerTls]:
    server = setup.make_server(InlineSigning())
    tls = ServerTls(setup.tls.chain_pem, setup.tls.key_pem, server.client_trust_anchors())
    await server.start(setup.listen.host, setup.listen.port, tls.context, reuse_port=True)
    return server, tls


def _why_not_serving(setup: ServingSetup, exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"cannot listen on {setup.listen} ({exc.strerror or exc})"
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, UserError) else str(exc)


async def _refuse(writer: asyncio.StreamWriter, reason: str) -> None:
    _send(writer, ("failed", reason))
    await writer.drain()


async def _follow(reader: asyncio.StreamReader, tls: ServerTls) -> None:
    """Apply the parent's TLS renewals until it closes the socket or SIGTERM arrives."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            message = asyncio.ensure_future(_receive(reader))
            await asyncio.wait((message, stopping), return_when=asyncio.FIRST_COMPLETED)
            if not message.done():
                message.cancel()
                return
            try:
                renewed = message.result()
            except (EOFError, ConnectionError):
                return
            if isinstance(renewed, ServerCertificate):
                tls.reload_certificate(renewed.chain_pem, renewed.key_pem)
                log.debug("serving process %s: serving the renewed TLS certificate", os.getpid())
    finally:
        stopping.cancel()
