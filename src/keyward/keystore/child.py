"""The key store inside a child process the token's owner started (``keyward.children``): logging in to
the owner's token, serving it to token keys that arrive pickled, and the signing processes' job loop.

A child gets the token's config, PIN included, as the first message on its socket (never on its command
line or in its environment), logs in, and answers ``(True, None)`` or ``(False, error)``. Answers are
:func:`answer` bytes, read by the parent with :func:`load_answer`: a result or error that cannot travel
becomes a ``KeystoreError`` saying so, and never leaves the parent waiting.
"""

from __future__ import annotations

import pickle
import socket
import time
from typing import Any

from keyward.children import Channel
from keyward.keystore import keys
from keyward.keystore.config import HsmConfig
from keyward.keystore.errors import KeystoreError, TokenNotFound
from keyward.keystore.sessions import TokenSessions

#: Attempts of a starting process to log in when the token failed for no stated reason, and the pause
#: after the first (growing linearly).
LOGIN_ATTEMPTS = 5
LOGIN_PAUSE = 0.1


def log_in(channel: Channel) -> TokenSessions | None:
    """Receive the token's config, log in to it and serve it in this process (token keys unpickled here
    sign with these sessions), and tell the parent. The sessions (the caller closes them), or None when
    the login failed and the parent was told why."""
    config: HsmConfig = channel.recv()
    try:
        sessions = log_in_settled(config)
    except Exception as exc:
        channel.send_bytes(answer(False, exc))
        return None
    keys.serve_token_in_this_process(sessions)
    channel.send_bytes(answer(True, None))
    return sessions


def log_in_settled(config: HsmConfig) -> TokenSessions:
    """Sessions on the owner's token (never a new token), trying again when the token or the login failed
    for no stated reason: another process may have been rewriting the token's file (SoftHSM2 does at
    every login). A refused PIN is never tried again, so a token that counts wrong PINs is not locked."""
    for attempt in range(1, LOGIN_ATTEMPTS + 1):
        try:
            return TokenSessions(config, initialize=False)
        except (TokenNotFound, KeystoreError) as exc:
            transient = isinstance(exc, TokenNotFound) or type(exc) is KeystoreError
            if not transient or attempt == LOGIN_ATTEMPTS:
                raise
            time.sleep(LOGIN_PAUSE * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def answer(ok: bool, value: Any, who: str = "the child process") -> bytes:
    """``(ok, value)`` as it travels to the parent; an error saying so when ``value`` cannot."""
    try:
        return pickle.dumps((ok, value), pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        what = "result" if ok else f"{type(value).__name__} error"
        error = KeystoreError(f"{who} could not send back its {what} ({type(exc).__name__})")
        return pickle.dumps((False, error))


def load_answer(payload: bytes, who: str) -> tuple[bool, Any]:
    """In the parent: the ``(ok, value)`` of :func:`answer` from the child ``who`` names."""
    try:
        ok, value = pickle.loads(payload)  # noqa: S301 (our own child's answer, on our own socket pair)
    except Exception as exc:
        return False, KeystoreError(f"{who} sent back an answer that does not load ({exc})")
    return bool(ok), value


# -- a signing process (``keyward.keystore.processes``) --------------------------------------------------

SIGNING_PROCESS = "the signing process"


def run_jobs(sock: socket.socket) -> None:
    """A signing process: log in, then run pickled ``(fn, args)`` jobs, answering each in order, until
    the parent closes the socket."""
    channel = Channel(sock)
    sessions = log_in(channel)
    if sessions is None:
        return
    try:
        while True:
            channel.send_bytes(_run(channel.recv_bytes()))
    except (EOFError, OSError):
        return  # the parent closed the socket (or is gone): nobody waits for answers any more
    finally:
        sessions.close()


def _run(job: bytes) -> bytes:
    try:
        fn, args = pickle.loads(job)  # noqa: S301 (the parent's, on its own socket pair)
        return answer(True, fn(*args), SIGNING_PROCESS)
    except Exception as exc:
        return answer(False, exc, SIGNING_PROCESS)
