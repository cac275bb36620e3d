"""Issuance in signing processes, each with its own session on the token.

Threads share one GIL: C_Sign releases it, but parsing the request, building the certificate and
verifying it hold it, and two threads hand it back and forth on every step. With a fast token (ECDSA)
that Python work is most of an issuance, and a second thread adds little. Processes each have their own
interpreter, so the whole issuance runs on every core.

The protocol is deliberately small (``concurrent.futures.ProcessPoolExecutor`` costs 0.1-0.2 ms of the
parent's time per task, half an ECDSA issuance):

- Each process is a fresh interpreter (``python -c``, not a fork: a PKCS#11 module must not be used
  across a fork, and multiprocessing's spawn would run the parent's ``__main__`` again). It loads the
  module itself, opens the parent's token (never a new one: see ``module.find_token_settled``) and logs
  in; the config, PIN included, arrives over the socket, never on a command line or in the environment.
  Processes start on demand and one after another, because SoftHSM2 can miss its token in a process
  that starts while another logs in.
- A job is one pickled ``(fn, args)`` on a socket, answered by one pickled ``(ok, value)`` in order.
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
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from keyward.keystore import keys
from keyward.keystore.config import HsmConfig
from keyward.keystore.errors import KeystoreClosed, KeystoreError, TokenNotFound
from keyward.keystore.sessions import TokenSessions

T = TypeVar("T")
log = logging.getLogger("keyward.keystore")

#: Jobs on one process's pipe at a time.
DEPTH = 2
#: Seconds closing processes get, all together, to finish their jobs before they are killed.
STOP_TIMEOUT = 1.0
#: Seconds a process whose socket closed gets to exit before it is killed.
EXIT_TIMEOUT = 0.1
#: Attempts of a starting process to log in when the token failed for no stated reason, and the pause
#: after the first (growing linearly).
LOGIN_ATTEMPTS = 5
LOGIN_PAUSE = 0.1

#: How a signing process starts: this module's ``serve`` on the socket it inherits.
_ENTRY = "import sys; from keyward.keystore.processes import serve; serve(int(sys.argv[1]))"


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
    pipe: Connection | None = None
    #: Futures of the jobs on the pipe, in order; None is the start-up answer.
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
            _reap(process, deadline)
        for worker in self._processes:
            while worker.waiting:
                _fail(worker.waiting.popleft(), closed)

    # -- dispatching ------------------------------------------------------------------------------

    def _available(self) -> list[_Process]:
        """The started processes, and one more to start unless one is still logging in: processes start
        one after the other, because SoftHSM2 can miss its token in a process that starts while another
        logs in (see ``module.find_token_settled``)."""
        started = [worker for worker in self._processes if worker.pipe is not None]
        if any(worker.waiting and worker.waiting[0] is None for worker in started):
            return started
        return started + [worker for worker in self._processes if worker.pipe is None][:1]

    def _dispatch(self) -> None:
        while self._queue:
            worker = min(self._available(), key=lambda candidate: len(candidate.waiting))
            if len(worker.waiting) >= DEPTH:
                return
            job = self._queue.popleft()
            if job.future.done():  # the caller gave up waiting
                continue
            if worker.pipe is None:
                self._start(worker)
            assert worker.pipe is not None
            worker.waiting.append(job.future)
            try:
                worker.pipe.send_bytes(job.payload)
            except OSError:
                self._lost(worker)

    def _on_answer(self, worker: _Process) -> None:
        pipe = worker.pipe
        if pipe is None:
            return
        try:
            while True:
                ok, value = _unpickle_answer(pipe.recv_bytes())
                future = worker.waiting.popleft()
                if future is None:  # the start-up answer
                    if not ok:
                        worker.startup_error = value
                elif not future.done():
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
                if not pipe.poll():
                    break
        except (EOFError, OSError):
            self._lost(worker)
        self._dispatch()

    # -- process lifecycle ------------------------------------------------------------------------

    def _start(self, worker: _Process) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            process = subprocess.Popen(
                [sys.executable, "-c", _ENTRY, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        pipe = Connection(ours.detach())
        pipe.send_bytes(pickle.dumps(self._config, pickle.HIGHEST_PROTOCOL))
        worker.process, worker.pipe, worker.startup_error = process, pipe, None
        worker.waiting.append(None)
        assert self._loop is not None
        self._loop.add_reader(pipe.fileno(), self._on_answer, worker)

    def _lost(self, worker: _Process) -> None:
        """The process is gone: fail every job it had (none of them ran to the end) and forget it."""
        error = self._died(worker)
        while worker.waiting:
            _fail(worker.waiting.popleft(), error)

    def _died(self, worker: _Process) -> KeystoreError:
        """Forget a process that is gone; the error for its unfinished jobs."""
        process, error = worker.process, worker.startup_error
        _reap(self._detach(worker), time.monotonic() + EXIT_TIMEOUT)
        if error is not None:
            return error if isinstance(error, KeystoreError) else KeystoreError(str(error))
        code = process.returncode if process is not None else None
        how = how_it_ended(code)
        log.warning("signing process %s for token %s %s; starting a new one", worker.index, self._name, how)
        return SigningProcessDied(
            f"the signing process for token {self._name} {how} before finishing the job",
            "the job was not done and can be retried; if this repeats, check the PKCS#11 module",
        )

    def _detach(self, worker: _Process) -> subprocess.Popen[bytes] | None:
        """Close the worker's socket (the process sees the end of its input and exits after its job) and
        forget it; the process, to be reaped."""
        pipe, process = worker.pipe, worker.process
        worker.pipe = worker.process = None
        if pipe is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(pipe.fileno())
            pipe.close()
        return process

    def _move_to(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch the pipes from ``loop`` (the first caller's, or a new one after the old loop closed)."""
        old = self._loop
        if old is not None and not old.is_closed() and old.is_running():
            raise RuntimeError("the signing processes are in use by another event loop")
        for worker in self._processes:
            if worker.pipe is not None:
                if old is not None and not old.is_closed():
                    old.remove_reader(worker.pipe.fileno())
                loop.add_reader(worker.pipe.fileno(), self._on_answer, worker)
        self._loop = loop

    @property
    def _name(self) -> str:
        return f"'{self._config.token_label}'"


def how_it_ended(returncode: int | None) -> str:
    """``was killed by signal 9`` or ``exited (1)``: a child process's end, for a log line."""
    if returncode is not None and returncode < 0:
        return f"was killed by signal {-returncode}"
    return f"exited ({returncode})"


def _reap(process: subprocess.Popen[bytes] | None, deadline: float) -> None:
    """Wait for ``process`` to exit until ``deadline``, then kill it: a process stuck in the module has
    nothing worth waiting for."""
    if process is None:
        return
    try:
        process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _unpickle_answer(data: bytes) -> tuple[bool, Any]:
    try:
        ok, value = pickle.loads(data)  # noqa: S301 (our own child's answer, on our own pipe)
    except Exception as exc:
        return False, KeystoreError(f"the signing process sent back an answer that does not load ({exc})")
    return bool(ok), value


def _fail(future: asyncio.Future[Any] | None, error: BaseException) -> None:
    if future is not None and not future.done():
        future.set_exception(error)


# -- in the signing process ---------------------------------------------------------------------------


def serve(fd: int) -> None:
    """A signing process: log in to the token, then run jobs until the parent closes the socket ``fd``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    pipe = Connection(fd)
    config: HsmConfig = pickle.loads(pipe.recv_bytes())  # noqa: S301 (the parent's, on its own pipe)
    try:
        sessions = log_in_settled(config)
    except Exception as exc:
        pipe.send_bytes(_answer(False, exc))
        return
    keys.serve_token_in_this_process(sessions)
    try:
        pipe.send_bytes(_answer(True, None))
        while True:
            job = pipe.recv_bytes()
            pipe.send_bytes(_run(job))
    except (EOFError, OSError):
        return  # the parent closed the socket (or is gone): nobody waits for answers any more
    finally:
        sessions.close()


def log_in_settled(config: HsmConfig) -> TokenSessions:
    """In a process started by the token's owner: sessions on the owner's token (never a new token),
    trying again when the token or the login failed for no stated reason: another process may have been
    rewriting the token's file (SoftHSM2 does at every login). A refused PIN is never tried again, so a
    token that counts wrong PINs is not locked."""
    for attempt in range(1, LOGIN_ATTEMPTS + 1):
        try:
            return TokenSessions(config, initialize=False)
        except (TokenNotFound, KeystoreError) as exc:
            transient = isinstance(exc, TokenNotFound) or type(exc) is KeystoreError
            if not transient or attempt == LOGIN_ATTEMPTS:
                raise
            time.sleep(LOGIN_PAUSE * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _run(job: bytes) -> bytes:
    try:
        fn, args = pickle.loads(job)  # noqa: S301 (the parent's, on its own pipe)
        return _answer(True, fn(*args))
    except Exception as exc:
        return _answer(False, exc)


def _answer(ok: bool, value: Any) -> bytes:
    try:
        return pickle.dumps((ok, value), pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        what = "result" if ok else f"{type(value).__name__} error"
        error = KeystoreError(f"the signing process could not send back its {what} ({type(exc).__name__})")
        return pickle.dumps((False, error))
