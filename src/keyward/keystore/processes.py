"""Issuance in signing processes, each with its own session on the token.

Threads share one GIL: C_Sign releases it, but parsing the request, building the certificate and
verifying it hold it, and two threads hand it back and forth on every step. With a fast token (ECDSA)
that Python work is most of an issuance, and a second thread adds little. Processes each have their own
interpreter, so the whole issuance runs on every core.

The protocol is deliberately small (``concurrent.futures.ProcessPoolExecutor`` costs 0.1-0.2 ms of the
parent's time per task, half an ECDSA issuance):

- Each process is a fresh interpreter (``keyward.children``) running ``keystore.child.run_jobs``. It
  loads the module itself, opens the parent's token (never a new one: see ``module.find_token_settled``)
  and logs in; the config, PIN included, arrives over the socket, never on a command line or in the
  environment. Processes start on demand and one after another, because SoftHSM2 can miss its token in
  a process that starts while another logs in.
- A job is one pickled ``(fn, args)`` message on the process's channel, answered by one pickled
  ``(ok, value)`` in order. The parent reads answers from its event loop's reader callback.
  Token keys pickle as references (``keys._key_in_this_process``), certificates as DER
  (``keyward.pki.pickling``); nothing else the jobs need is bigger than a request.
- At most ``DEPTH`` jobs are on a process's socket (one running, one waiting, so it never idles between
  jobs); the rest wait in the parent, in arrival order.
- A process that dies (a vendor module crashing, the OOM killer) fails only its own unfinished jobs,
  with :class:`SigningProcessDied`, and is started again for the next job. No job is ever run twice.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from keyward import children
from keyward.keystore import child
from keyward.keystore.config import HsmConfig
from keyward.keystore.errors import KeystoreClosed, KeystoreError

T = TypeVar("T")
log = logging.getLogger("keyward.keystore")

#: Jobs on one process's socket at a time.
DEPTH = 2
#: Seconds closing processes get, all together, to finish their jobs before they are killed.
STOP_TIMEOUT = 1.0
#: Seconds a process whose socket closed gets to exit before it is killed.
EXIT_TIMEOUT = 0.1


class SigningProcessDied(KeystoreError):
    """A signing process exited while it had the job: the job was not finished and may be retried."""


@dataclass
class _Job:
    payload: bytes
    future: asyncio.Future[Any]


@dataclass
class _Process:
    index: int
    process: subprocess.Popen[bytes] | None = None
    channel: children.Channel | None = None
    #: Futures of the jobs on the socket, in order; None is the start-up answer.
    waiting: deque[asyncio.Future[Any] | None] = field(default_factory=deque)
    startup_error: BaseException | None = None


class SigningProcesses:
    """``count`` processes that run issuance jobs with their own sessions on the token of ``config``."""

    def __init__(self, config: HsmConfig, count: int) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        self._config = config
        self._processes = [_Process(index) for index in range(count)]
        self._queue: deque[_Job] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def count(self) -> int:
        return len(self._processes)

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(worker.process.pid for worker in self._processes if worker.process is not None)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a signing process. ``fn`` and ``args`` must pickle (token keys and certificates
        do); what ``fn`` returns or raises comes back the same way."""
        if self._closed:
            raise KeystoreClosed("the key store's signing processes are stopped", "open the key store again")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._move_to(loop)
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append(_Job(pickle.dumps((fn, args), pickle.HIGHEST_PROTOCOL), future))
        self._dispatch()
        return await future

    def close(self) -> None:
        """Stop every process (each finishes the job it has) and fail the jobs not started."""
        self._closed = True
        closed = KeystoreClosed("the key store was closed before the job finished", "open it again")
        while self._queue:
            _fail(self._queue.popleft().future, closed)
        processes = [self._detach(worker) for worker in self._processes]  # all told at once, ...
        deadline = time.monotonic() + STOP_TIMEOUT  # ... so the loop waits STOP_TIMEOUT at most in all
        for process in processes:
            if process is not None:
                children.reap(process, deadline)
        for worker in self._processes:
            while worker.waiting:
                _fail(worker.waiting.popleft(), closed)

    # -- dispatching ------------------------------------------------------------------------------

    def _available(self) -> list[_Process]:
        """The started processes, and one more to start unless one is still logging in: processes start
        one after the other, because SoftHSM2 can miss its token in a process that starts while another
        logs in (see ``module.find_token_settled``)."""
        started = [worker for worker in self._processes if worker.channel is not None]
        if any(worker.waiting and worker.waiting[0] is None for worker in started):
            return started
        return started + [worker for worker in self._processes if worker.channel is None][:1]

    def _dispatch(self) -> None:
        while self._queue:
            worker = min(self._available(), key=lambda candidate: len(candidate.waiting))
            if len(worker.waiting) >= DEPTH:
                return
            job = self._queue.popleft()
            if job.future.done():  # the caller gave up waiting
                continue
            if worker.channel is None:
                self._start(worker)
            assert worker.channel is not None
            worker.waiting.append(job.future)
            try:
                worker.channel.send_bytes(job.payload)
            except OSError:
                self._lost(worker)

    def _on_answer(self, worker: _Process) -> None:
        channel = worker.channel
        if channel is None:
            return
        try:
            for payload in channel.received():
                ok, value = child.load_answer(payload, f"the signing process for token {self._name}")
                future = worker.waiting.popleft()
                if future is None:  # the start-up answer
                    if not ok:
                        worker.startup_error = value
                elif not future.done():
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        except (EOFError, OSError):
            self._lost(worker)
        self._dispatch()

    # -- process lifecycle ------------------------------------------------------------------------

    def _start(self, worker: _Process) -> None:
        process, sock = children.spawn(child.run_jobs)
        channel = children.Channel(sock)
        channel.send(self._config)
        worker.process, worker.channel, worker.startup_error = process, channel, None
        worker.waiting.append(None)
        assert self._loop is not None
        self._loop.add_reader(channel.fileno(), self._on_answer, worker)

    def _lost(self, worker: _Process) -> None:
        """The process is gone: fail every job it had (none of them ran to the end) and forget it."""
        error = self._died(worker)
        while worker.waiting:
            _fail(worker.waiting.popleft(), error)

    def _died(self, worker: _Process) -> KeystoreError:
        """Forget a process that is gone; the error for its unfinished jobs."""
        error, process = worker.startup_error, self._detach(worker)
        if process is not None:
            children.reap(process, time.monotonic() + EXIT_TIMEOUT)
        if error is not None:
            return error if isinstance(error, KeystoreError) else KeystoreError(str(error))
        how = children.how_it_ended(process.returncode if process is not None else None)
        log.warning("signing process %s for token %s %s; starting a new one", worker.index, self._name, how)
        return SigningProcessDied(
            f"the signing process for token {self._name} {how} before finishing the job",
            "the job was not done and can be retried; if this repeats, check the PKCS#11 module",
        )

    def _detach(self, worker: _Process) -> subprocess.Popen[bytes] | None:
        """Close the worker's socket (the process sees the end of its input and exits after its job) and
        forget it; the process, to be reaped."""
        channel, process = worker.channel, worker.process
        worker.channel = worker.process = None
        if channel is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(channel.fileno())
            channel.close()
        return process

    def _move_to(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch the sockets from ``loop`` (the first caller's, or a new one after the old loop closed)."""
        old = self._loop
        if old is not None and not old.is_closed() and old.is_running():
            raise RuntimeError("the signing processes are in use by another event loop")
        for worker in self._processes:
            if worker.channel is not None:
                if old is not None and not old.is_closed():
                    old.remove_reader(worker.channel.fileno())
                loop.add_reader(worker.channel.fileno(), self._on_answer, worker)
        self._loop = loop

    @property
    def _name(self) -> str:
        return f"'{self._config.token_label}'"


def _fail(future: asyncio.Future[Any] | None, error: BaseException) -> None:
    if future is not None and not future.done():
        future.set_exception(error)
