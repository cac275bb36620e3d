"""Child processes that are fresh interpreters, and the one channel a parent and its child talk over.

- **Spawning.** :func:`spawn` starts ``python -c`` with the child's end of a socket pair as an inherited
  file descriptor, never a fork: a PKCS#11 module must not be used across a fork, and multiprocessing's
  spawn would run the parent's ``__main__`` again. The child calls one module-level function with that
  socket; its command line and environment carry nothing else, so secrets only travel over the socket.
  The child ignores SIGINT (Ctrl-C reaches the whole process group; the parent decides when children
  stop), reads nothing from stdin, writes nothing to stdout, and logs to the parent's stderr.
- **The channel.** Messages are a 4-byte big-endian length and the payload. :class:`Channel` is the
  blocking side (with :meth:`Channel.received` for a parent that reads from its event loop's reader
  callback), :class:`AsyncChannel` the asyncio side; both speak the same framing, so a child may start
  blocking and go on with asyncio. ``send``/``recv`` pickle: safe here, because a channel only joins a
  parent and the child it started, over a private socket pair.
- **The end.** A child stops when its socket closes (the parent stopped, or died): closing the socket is
  how a parent stops a child, and why a killed parent leaves no orphan. :func:`reap` waits for it until a
  deadline and then kills it; :func:`how_it_ended` says how it ended, for a log line.
"""

from __future__ import annotations

import asyncio
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

#: The frame header: the payload's length.
_HEADER = struct.Struct("!I")
#: Bytes read from a socket at a time (many messages fit; a bigger one takes several reads).
_CHUNK = 1 << 16

#: ``python -c``: the entry point of a child, with the inherited socket's descriptor in ``argv[1]``.
_ENTRY = "from keyward.children import run_child; from {module} import {name}; run_child({name})"


class Spawned(NamedTuple):
    process: subprocess.Popen[bytes]
    sock: socket.socket  # the parent's end of the socket pair


def spawn(entry: Callable[[socket.socket], None]) -> Spawned:
    """Start a fresh interpreter that runs ``entry(sock)`` (a module-level function) on the child's end of
    a new socket pair; the parent's end comes back with the process."""
    module, name = getattr(entry, "__module__", None), getattr(entry, "__qualname__", "")
    importable = module not in (None, "__main__") and name.isidentifier()
    if not importable or getattr(sys.modules.get(str(module)), name, None) is not entry:
        raise ValueError(f"a child's entry point must be a module-level function, not {entry!r}")
    ours, theirs = socket.socketpair()
    try:
        with theirs:
            process = subprocess.Popen(
                [sys.executable, "-c", _ENTRY.format(module=module, name=name), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
    except BaseException:
        ours.close()
        raise
    return Spawned(process, ours)


def run_child(entry: Callable[[socket.socket], None]) -> None:
    """In the child (see :func:`spawn`): run ``entry`` on the socket the parent passed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    entry(socket.socket(fileno=int(sys.argv[1])))


def frame(payload: bytes) -> bytes:
    """One message as it travels."""
    return _HEADER.pack(len(payload)) + payload


class Channel:
    """The blocking side of a channel, on a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def fileno(self) -> int:
        return self._sock.fileno()

    def send_bytes(self, payload: bytes) -> None:
        self._sock.sendall(frame(payload))

    def send(self, message: object) -> None:
        self.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    def recv_bytes(self) -> bytes:
        """The next message, waiting for it; ``EOFError`` when the other side has closed."""
        while (message := self._next()) is None:
            chunk = self._sock.recv(_CHUNK)
            if not chunk:
                raise EOFError
            self._buffer += chunk
        return message

    def recv(self) -> Any:
        return pickle.loads(self.recv_bytes())  # noqa: S301 (our own parent or child, on a private pair)

    def received(self) -> list[bytes]:
        """The messages that have arrived, without waiting (possibly none); ``EOFError`` when the other
        side has closed and no whole message is left."""
        closed = False
        try:
            while True:
                chunk = self._sock.recv(_CHUNK, socket.MSG_DONTWAIT)
                if not chunk:
                    closed = True
                    break
                self._buffer += chunk
                if len(chunk) < _CHUNK:
                    break
        except BlockingIOError:
            pass
        messages = list(iter(self._next, None))
        if closed and not messages:
            raise EOFError
        return messages

    def detach(self) -> socket.socket:
        """The socket, to go on with an :class:`AsyncChannel`: only between messages, with nothing read
        ahead (the other side waits for an answer before it sends more)."""
        if self._buffer:
            raise RuntimeError("the channel has read part of a message that would be lost")
        return self._sock

    def close(self) -> None:
        self._sock.close()

    def _next(self) -> bytes | None:
        if len(self._buffer) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self._buffer)
        end = _HEADER.size + size
        if len(self._buffer) < end:
            return None
        message = bytes(self._buffer[_HEADER.size : end])
        del self._buffer[:end]
        return message


class AsyncChannel:
    """The asyncio side of a channel."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> AsyncChannel:
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    def send_bytes(self, payload: bytes) -> None:
        """Queue a message (:meth:`drain` waits until it is sent)."""
        self._writer.write(frame(payload))

    def send(self, message: object) -> None:
        self.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    async def drain(self) -> None:
        await self._writer.drain()

    async def recv_bytes(self) -> bytes:
        """The next message; ``EOFError`` when the other side has closed."""
        try:
            (size,) = _HEADER.unpack(await self._reader.readexactly(_HEADER.size))
            return await self._reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise EOFError from None

    async def recv(self) -> Any:
        return pickle.loads(await self.recv_bytes())  # noqa: S301 (our own parent or child, on a private pair)

    def close(self) -> None:
        self._writer.close()


def reap(process: subprocess.Popen[bytes], deadline: float) -> None:
    """Wait for ``process`` to exit until ``deadline`` (``time.monotonic()``), then kill it: a child that
    outlives its socket is stuck, with nothing worth waiting for."""
    try:
        process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def reap_async(process: subprocess.Popen[bytes], deadline: float) -> None:
    """:func:`reap` without blocking the event loop."""
    if process.poll() is None:
        await asyncio.to_thread(reap, process, deadline)


def how_it_ended(returncode: int | None) -> str:
    """``was killed by signal 9`` or ``exited (1)``: a child process's end, for a log line."""
    if returncode is not None and returncode < 0:
        return f"was killed by signal {-returncode}"
    return f"exited ({returncode})"
