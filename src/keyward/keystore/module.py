"""Load the PKCS#11 module once per process, and find the configured token, initializing it if absent.

A module is initialized (C_Initialize, with OS locking allowed: see cryptoki.py) once per process;
SoftHSM2 reads ``SOFTHSM2_CONF`` at that moment, so the variable is set from the config before
loading. A process can therefore use one SoftHSM2 store at a time; switching to another is allowed only
while no key store uses the module.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11
import pkcs11.exceptions as p11
from pkcs11 import TokenFlag, _pkcs11

from keyward.keystore.config import HsmConfig
from keyward.keystore.cryptoki import (
    CKR_CRYPTOKI_ALREADY_INITIALIZED,
    CKR_OK,
    finalize,
    init_token,
    initialize_for_threads,
    rv_name,
)
from keyward.keystore.errors import KeystoreError, ModuleLoadError, TokenNotFound, token_error

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Library

SOFTHSM2_CONF_ENV = "SOFTHSM2_CONF"

_lock = threading.Lock()
#: module path → the SOFTHSM2_CONF it was initialized with ("" when none was set).
_initialized_with: dict[str, str] = {}
#: module path → how many open key stores use it.
_users: Counter[str] = Counter()


def describe_token(config: HsmConfig) -> str:
    """How messages name a token: its label and the module holding it."""
    return f"'{config.token_label}' (module {config.module})"


def acquire_module(config: HsmConfig) -> Library:
    """Load and initialize the module for one more key store; pair with :func:`release_module`."""
    with _lock:
        library = _load(config)
        _users[config.module] += 1
        return library


def release_module(module: str) -> None:
    with _lock:
        _users[module] -= 1


def loaded_library(module: str) -> Library:
    """The library object of a module that :func:`acquire_module` loaded."""
    return _libraries[module]


@atexit.register
def _release_libraries() -> None:
    """Free the library objects while the interpreter is still whole.

    Left to the end of interpreter shutdown, python-pkcs11's deallocator runs after its own module was
    torn down and fails noisily ("Error in sys.excepthook"). Nothing else may keep a reference: key
    stores look the library up here instead.
    """
    for path, library in list(_libraries.items()):
        if pkcs11._loaded.get(path) is library:
            del pkcs11._loaded[path]
    _libraries.clear()


class ThreadSafeLibrary(_pkcs11.lib):
    """python-pkcs11's library object, initialized so that the module locks for concurrent threads."""

    def initialize(self) -> None:
        rv = initialize_for_threads(self.so)
        if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
            raise InitializeFailed(rv)


class InitializeFailed(p11.PKCS11Error):
    def __init__(self, rv: int) -> None:
        super().__init__(f"C_Initialize returned {rv_name(rv)}")


#: module path → its library object, shared by every key store of the process.
_libraries: dict[str, ThreadSafeLibrary] = {}


def _load(config: HsmConfig) -> Library:
    path = config.module
    if not Path(path).is_file():
        raise ModuleLoadError(
            f"PKCS#11 module {path} does not exist",
            'install it (SoftHSM2: apt-get install softhsm2) or set "module" in the HSM config '
            "(or KEYWARD_PKCS11_MODULE) to the library's path",
        )
    conf = config.softhsm2_conf
    if conf and not Path(conf).is_file():
        raise KeystoreError(
            f"SoftHSM2 config {conf} does not exist",
            "create the store again (keyward creates it on first start) or fix softhsm2Conf in the config",
        )
    library = _libraries.get(path)
    previous = _initialized_with.get(path, "")
    if library is None:
        if conf:
            os.environ[SOFTHSM2_CONF_ENV] = conf
        library = _libraries[path] = _create(path)
    elif conf and conf != previous:
        if _users[path]:
            raise KeystoreError(
                f"PKCS#11 module {path} is in use with SoftHSM2 config {previous or '(default)'} "
                f"and cannot switch to {conf} in the same process",
                "close the other key store first, or run one process per SoftHSM2 store",
            )
        os.environ[SOFTHSM2_CONF_ENV] = conf
        finalize(path)
        try:
            library.initialize()
        except p11.PKCS11Error as exc:
            raise _initialize_failed(path, exc) from None
    _initialized_with[path] = conf or os.environ.get(SOFTHSM2_CONF_ENV, "")
    return library


def _create(path: str) -> ThreadSafeLibrary:
    try:
        library = ThreadSafeLibrary(path)
    except p11.PKCS11Error as exc:
        raise _initialize_failed(path, exc) from None
    # Code calling pkcs11.lib(path) in this process gets this instance rather than a second one, which
    # would fail with CKR_CRYPTOKI_ALREADY_INITIALIZED.
    pkcs11._loaded[path] = library
    return library


def _initialize_failed(path: str, exc: p11.PKCS11Error) -> ModuleLoadError:
    if "loading" in str(exc):  # dlopen/dlsym failed; the message carries the loader's reason
        return ModuleLoadError(
            f"PKCS#11 module {path} cannot be loaded ({exc})",
            "point the HSM config's module at a PKCS#11 library built for this system",
        )
    return ModuleLoadError(
        f"PKCS#11 module {path} failed to initialize ({exc or type(exc).__name__})",
        "check the module's own configuration (SoftHSM2: SOFTHSM2_CONF must name a readable config "
        "whose tokendir exists)",
    )


def find_token(library: Library, config: HsmConfig) -> pkcs11.Token | None:
    """The token labelled ``config.token_label``, or None."""
    tokens = list(library.get_tokens(token_label=config.token_label))
    if len(tokens) > 1:
        raise KeystoreError(
            f"{len(tokens)} tokens are labelled {describe_token(config)}",
            "relabel or remove the extra tokens so that the label names one token",
        )
    return tokens[0] if tokens else None


#: SoftHSM2 reads its token directory once, at C_Initialize, and leaves out a token (or fails with
#: CKR_GENERAL_ERROR) whose file another process is rewriting at that moment, which it does whenever a
#: process logs in: one fresh process in ten missed the token while three others logged in. A token
#: missing from the list is looked for again, after re-initializing the module, this many times...
TOKEN_LOOKUPS = 20
#: ... this many seconds apart.
TOKEN_LOOKUP_PAUSE = 0.05


def find_token_settled(library: Library, config: HsmConfig) -> pkcs11.Token | None:
    """``find_token``, looking again while another process may be rewriting the token's file. The module
    is re-initialized between lookups only while no other key store of this process uses it (that would
    end their sessions); with other users, their view of the slots stands."""
    for attempt in range(TOKEN_LOOKUPS):
        try:
            token = find_token(library, config)
        except p11.GeneralError:
            token = None
        if token is not None or attempt + 1 == TOKEN_LOOKUPS:
            return token
        with _lock:
            if _users[config.module] > 1:
                return None
            time.sleep(TOKEN_LOOKUP_PAUSE)
            finalize(config.module)
            try:
                library.initialize()
            except p11.PKCS11Error as exc:
                raise _initialize_failed(config.module, exc) from None
    return None  # pragma: no cover - the loop returns


def open_token(library: Library, config: HsmConfig) -> pkcs11.Token:
    """The configured token, which must exist (signing processes never initialize one)."""
    token = find_token_settled(library, config)
    if token is None:
        raise TokenNotFound(
            f"there is no token {describe_token(config)}",
            "check that the token exists and that every process uses the same module configuration",
        )
    return token


def open_or_initialize_token(library: Library, config: HsmConfig) -> pkcs11.Token:
    """The configured token; when no token has its label, initialize one in a free slot first."""
    token = find_token_settled(library, config)
    if token is not None:
        return token
    if not config.so_pin or not config.user_pin:
        raise TokenNotFound(
            f"there is no token {describe_token(config)}, and keyward cannot initialize one without PINs",
            "set soPin and userPin in the HSM config file, or set tokenLabel to an existing token's label",
        )
    slot = _free_slot(library)
    if slot is None:
        raise TokenNotFound(
            f"there is no token {describe_token(config)}, and no free slot to initialize one in",
            "create the token with the HSM vendor's tool, or set tokenLabel to an existing token's label",
        )
    _init_token(config, slot.slot_id)
    token = find_token(library, config)
    if token is None:  # pragma: no cover - a module that accepts C_InitToken but hides the token
        raise TokenNotFound(
            f"token {describe_token(config)} was initialized but the module does not list it",
            "check the module's log",
        )
    try:
        with token.open(rw=True, so_pin=config.so_pin) as session:
            session.init_pin(config.user_pin)
    except p11.PKCS11Error as exc:
        raise token_error(exc, "set the user PIN of the new token", describe_token(config)) from None
    return token


def _free_slot(library: Library) -> pkcs11.Slot | None:
    for slot in library.get_slots(token_present=True):
        try:
            flags = slot.get_token().flags
        except (p11.TokenNotPresent, p11.TokenNotRecognised):
            continue
        if not flags & TokenFlag.TOKEN_INITIALIZED:
            free: pkcs11.Slot = slot
            return free
    return None


def _init_token(config: HsmConfig, slot_id: int) -> None:
    try:
        rv = init_token(config.module, slot_id, config.so_pin, config.token_label)
    except (ValueError, NotImplementedError, AttributeError) as exc:
        raise TokenNotFound(
            f"there is no token {describe_token(config)}, and keyward cannot initialize one ({exc})",
            "create the token with the HSM vendor's tool",
        ) from None
    if rv != 0:
        raise TokenNotFound(
            f"initializing token {describe_token(config)} in slot {slot_id} failed ({rv_name(rv)})",
            "check that soPin meets the token's PIN rules (SoftHSM2: 4 to 255 characters) "
            "and that the token storage is writable",
        )
