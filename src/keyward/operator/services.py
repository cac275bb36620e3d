"""What the handlers share: settings, the API client, the token, and in-memory CA state.

One ``Runtime`` is created per operator process and handed to every kopf handler as ``memo``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyward.issuers.signer_names import IssuerRef
from keyward.keystore import KeystoreError, TokenKeyStore
from keyward.keystore.config import load_hsm_config
from keyward.kube.client import Kube
from keyward.operator.settings import Settings
from keyward.pki.issue import CertificateAuthority
from keyward.pki.profile import IssuerPolicy

log = logging.getLogger("keyward.token")


class TokenProvider:
    """Opens the PKCS#11 token on first use, and again after a failure (off the event loop)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._store: TokenKeyStore | None = None
        self._lock = asyncio.Lock()
        self.last_error: str | None = None

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
                log.info("opened PKCS#11 token %r", self._settings.hsm.token_label)
            return self._store

    def _open(self) -> TokenKeyStore:
        """Re-read the HSM config file on every attempt, so a fixed file heals without a restart."""
        config = self._settings.hsm
        if self._settings.hsm_config_file is not None:
            config = load_hsm_config(self._settings.hsm_config_file)
        return TokenKeyStore.open(config, processes=self._settings.signing_processes)

    def reset(self) -> None:
        """Forget the open token so the next ``get`` reopens it (after a module or session fault)."""
        store, self._store = self._store, None
        if store is not None:
            store.close()

    def close(self) -> None:
        self.reset()


@dataclass
class ReadyCa:
    """A TCS issuer that can sign now: its CA (key in the token) and its issuance policy."""

    ref: IssuerRef
    ca: CertificateAuthority
    policy: IssuerPolicy
    ca_pem: bytes
    #: The issuer's spec.est (None: not served over EST), and what Events about the issuer need.
    est: Mapping[str, Any] | None = None
    event_body: Mapping[str, Any] | None = None


def event_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The least of an object that kopf needs to post an Event about it (an object reference)."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {key: meta.get(key) for key in ("name", "namespace", "uid") if meta.get(key)},
    }


@dataclass
class Runtime:
    settings: Settings = field(default_factory=Settings)
    kube: Kube | None = None
    #: Made with the runtime: kopf hands each object a shallow copy of memo, and a provider made later,
    #: in a copy, would open a key store (and signing processes) of its own.
    token: TokenProvider | None = None
    #: Ready TCS CAs by signer name (the token label), filled by the issuer reconcilers.
    cas: dict[str, ReadyCa] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.token is None:
            self.token = TokenProvider(self.settings)

    @property
    def api(self) -> Kube:
        assert self.kube is not None, "the operator has not started"
        return self.kube

    @property
    def tokens(self) -> TokenProvider:
        assert self.token is not None, "made in __post_init__"
        return self.token
