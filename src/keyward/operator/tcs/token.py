"""The operator's PKCS#11 token: opened on first use, and again after a failure (off the event loop)."""

from __future__ import annotations

import asyncio
import logging

from keyward.keystore import KeystoreError, TokenKeyStore
from keyward.keystore.config import load_hsm_config
from keyward.operator.settings import Settings

log = logging.getLogger("keyward.token")


class TokenProvider:
    """One key store per operator process; ``reset`` after a module or session fault reopens it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._store: TokenKeyStore | None = None
        self._lock = asyncio.Lock()
        self.last_error: str | None = None

    @property
    def is_open(self) -> bool:
        return self._store is not None

    async def get(self) -> TokenKeyStore:
        if self._store is not None:
            return self._store
        async with self._lock:
            if self._store is None:
                try:
                    self._store = await asyncio.to_thread(self._open)
                except KeystoreError as exc:
                    self.last_error = str(exc)
                    raise
                self.last_error = None
                config = self._store.config
                log.info("opened PKCS#11 token %r (module %s)", config.token_label, config.module)
            return self._store

    def _open(self) -> TokenKeyStore:
        """Re-read the HSM config file on every attempt, so a fixed file heals without a restart."""
        config = self._settings.hsm
        if self._settings.hsm_config_file is not None:
            config = load_hsm_config(self._settings.hsm_config_file, fallback=self._settings.hsm_fallback)
        return TokenKeyStore.open(config, processes=self._settings.signing_processes)

    def reset(self) -> None:
        """Forget the open token so the next ``get`` reopens it (after a module or session fault)."""
        store, self._store = self._store, None
        if store is not None:
            store.close()

    def close(self) -> None:
        self.reset()
