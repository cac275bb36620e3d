"""PKCS#11 sessions: one per thread, one login per token and process, and a second try after a reset.

A PKCS#11 session runs one operation at a time (python-pkcs11 serializes them with a lock), so sharing
one session would make every signature wait for the previous one. Each thread therefore gets its own
session, kept in a thread-local; python-pkcs11 releases the GIL around C_Sign, so signatures from a
worker pool really run in parallel.

Login state belongs to the token, not to a session: one C_Login makes every session of the process a
user session, and one C_Logout ends them all. So the login is shared by all key stores of the process
on that token and ended only when the last of them closes.

When the token or module loses the session (token reset, device removed or in error, user logged out),
the operation is retried once on a fresh session, logging in again if need be.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pkcs11
import pkcs11.exceptions as p11
from pkcs11 import Attribute, ObjectClass

from keyward.keystore.config import HsmConfig
from keyward.keystore.errors import KeystoreClosed, KeystoreError, TokenNotFound, token_error
from keyward.keystore.module import (
    acquire_module,
    describe_token,
    find_token,
    loaded_library,
    open_or_initialize_token,
    open_token,
    release_module,
)
from keyward.keystore.objects import ATTRIBUTES

T = TypeVar("T")

#: Errors after which the session is gone but a new one may work.
LOST_SESSION_ERRORS: tuple[type[Exception], ...] = (
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.DeviceError,
    p11.UserNotLoggedIn,
)
#: Errors saying a cached object handle no longer names the object.
STALE_HANDLE_ERRORS: tuple[type[Exception], ...] = (p11.ObjectHandleInvalid, p11.KeyHandleInvalid)


@dataclass
class _Login:
    """The session whose C_Login made the process a user of the token, and how many stores share it."""

    session: pkcs11.Session
    users: int = 0


_logins_lock = threading.Lock()
_logins: dict[tuple[str, str], _Login] = {}


class ThreadSession:
    """One thread's session and the private key objects it has looked up (by CKA_ID)."""

    def __init__(self, session: pkcs11.Session, generation: int) -> None:
        self.session = session
        self.generation = generation
        self._private_keys: dict[bytes, Any] = {}

    def find(self, attributes: dict[Attribute, Any]) -> list[Any]:
        return list(self.session.get_objects(attributes))

    def private_key(self, key_id: bytes) -> Any | None:
        """The private key object with this CKA_ID (looked up once per session), or None."""
        key = self._private_keys.get(key_id)
        if key is None:
            found = self.find({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: key_id})
            if not found:
                return None
            key = self._private_keys[key_id] = found[0]
        return key

    def use_private_key(self, key_id: bytes, use: Callable[[Any], T]) -> T | None:
        """``use(key)`` on the key with this CKA_ID; None if there is no such key (any more)."""
        for attempt in (1, 2):
            key = self.private_key(key_id)
            if key is None:
                return None
            try:
                return use(key)
            except STALE_HANDLE_ERRORS:
                self.forget()
                if attempt == 2:
                    raise
        return None  # pragma: no cover - the loop returns or raises

    def forget(self) -> None:
        self._private_keys.clear()


class TokenSessions:
    """The sessions of one key store on one token; :meth:`call` runs an operation in the caller's."""

    def __init__(self, config: HsmConfig, *, initialize: bool = True) -> None:
        """Open the token of ``config``; when it has none, initialize one only if ``initialize``."""
        self.config = config
        self.description = describe_token(config)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._threads: dict[ThreadSession, threading.Thread] = {}
        self._generation = 0
        self._closed = False
        library = acquire_module(config)
        try:
            self._token = (open_or_initialize_token if initialize else open_token)(library, config)
            self._join_login()
        except BaseException:
            release_module(config.module)
            raise

    # -- login ---------------------------------------------------------------------------------

    @property
    def _login_key(self) -> tuple[str, str]:
        return (self.config.module, self.config.token_label)

    def _join_login(self) -> None:
        if not self.config.user_pin:
            raise KeystoreError(
                f"no user PIN is configured for token {self.description}",
                "set userPin in the HSM config file (or KEYWARD_USER_PIN)",
            )
        with _logins_lock:
            login = _logins.get(self._login_key)
            if login is None:
                login = _logins[self._login_key] = _Login(self._log_in())
            login.users += 1

    def _log_in(self) -> pkcs11.Session:
        """A session that has logged the process in as the token's user (or found it logged in)."""
        try:
            return self._token.open(rw=True, user_pin=self.config.user_pin)
        except p11.UserAlreadyLoggedIn:
            return self._token.open(rw=True)
        except p11.PKCS11Error as exc:
            raise token_error(exc, "log in", self.description) from None

    def _leave_login(self) -> None:
        with _logins_lock:
            login = _logins[self._login_key]
            login.users -= 1
            if login.users == 0:
                del _logins[self._login_key]
                _close_quietly(login.session)

    def _log_in_again(self) -> None:
        """After a reset: find the token again (its slot may have changed) and log in if logged out."""
        with _logins_lock:
            try:
                token = find_token(loaded_library(self.config.module), self.config)
            except p11.PKCS11Error as exc:
                raise token_error(exc, "list its slots", self.description) from None
            if token is None:
                raise TokenNotFound(
                    f"token {self.description} is no longer present", "reconnect the HSM and retry"
                )
            self._token = token
            try:
                session = token.open(rw=True, user_pin=self.config.user_pin)
            except p11.UserAlreadyLoggedIn:
                return
            except p11.PKCS11Error as exc:
                raise token_error(exc, "log in again", self.description) from None
            # The old login session died with the reset; closing it could log out the new one.
            login = _logins.get(self._login_key)
            if login is not None:
                login.session = session

    # -- per-thread sessions -------------------------------------------------------------------

    def _thread_session(self) -> ThreadSession:
        state: ThreadSession | None = getattr(self._local, "session", None)
        if state is None:
            state = self._open_thread_session()
        elif state.generation != self._generation:
            state.forget()
            state.generation = self._generation
        return state

    def _open_thread_session(self) -> ThreadSession:
        session = self._token.open(rw=True, attribute_mapper=ATTRIBUTES)
        state = ThreadSession(session, self._generation)
        with self._lock:
            if self._closed:
                _close_quietly(session)
                raise self.closed_error()
            for dead in [s for s, thread in self._threads.items() if not thread.is_alive()]:
                del self._threads[dead]
                _close_quietly(dead.session)
            self._threads[state] = threading.current_thread()
        self._local.session = state
        return state

    def _discard_thread_session(self) -> None:
        state: ThreadSession | None = getattr(self._local, "session", None)
        self._local.session = None
        if state is not None:
            with self._lock:
                self._threads.pop(state, None)
            _close_quietly(state.session)

    # -- operations ----------------------------------------------------------------------------

    def call(self, action: str, operation: Callable[[ThreadSession], T]) -> T:
        """Run ``operation`` in this thread's session, once more on a new session if it was lost.

        ``action`` completes "token ... could not ..." in the error raised when the token fails.
        """
        if self._closed:
            raise self.closed_error()
        try:
            try:
                return operation(self._thread_session())
            except LOST_SESSION_ERRORS:
                if self._closed:  # the session was closed by close(), not lost
                    raise self.closed_error() from None
                self._discard_thread_session()
                self._log_in_again()
                return operation(self._thread_session())
        except p11.PKCS11Error as exc:
            raise token_error(exc, action, self.description) from None

    def forget_objects(self) -> None:
        """Make every thread look key objects up again (after keys were deleted)."""
        self._generation += 1

    def close(self) -> None:
        """Close every session of this store and end the login if no other store shares it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            states = list(self._threads)
            self._threads.clear()
        for state in states:
            _close_quietly(state.session)
        self._leave_login()
        release_module(self.config.module)

    @property
    def closed(self) -> bool:
        return self._closed

    def closed_error(self) -> KeystoreClosed:
        return KeystoreClosed(
            f"the key store for token {self.description} is closed",
            "open the key store again (TokenKeyStore.open) and look the key up again",
        )


def _close_quietly(session: pkcs11.Session) -> None:
    """Close a session that may already be gone; there is nothing useful to do if closing fails."""
    with contextlib.suppress(p11.PKCS11Error):
        session.close()
