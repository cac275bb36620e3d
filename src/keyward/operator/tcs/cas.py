"""The token-backed CAs that can sign now, kept in memory by the issuer reconciler."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from keyward.issuers.signer_names import IssuerRef
from keyward.pki.issue import CertificateAuthority
from keyward.pki.profile import IssuerPolicy


@dataclass
class ReadyCa:
    """A TCS issuer that can sign now: its CA (key in the token) and its issuance policy."""

    ref: IssuerRef
    ca: CertificateAuthority
    policy: IssuerPolicy
    ca_pem: bytes
    #: The issuer's spec.est (None: not served over EST), and the object Events about the issuer name.
    est: Mapping[str, Any] | None = None
    event_body: Mapping[str, Any] | None = None


class ReadyCas:
    """Ready CAs by signer name (the token label); listeners hear when one turns ready."""

    def __init__(self) -> None:
        self._cas: dict[str, ReadyCa] = {}
        self._listeners: list[Callable[[str], None]] = []

    def get(self, signer_name: str) -> ReadyCa | None:
        return self._cas.get(signer_name)

    def __contains__(self, signer_name: object) -> bool:
        return signer_name in self._cas

    def __iter__(self) -> Iterator[ReadyCa]:
        return iter(list(self._cas.values()))

    def listen(self, listener: Callable[[str], None]) -> None:
        """``listener(signer_name)`` runs whenever an issuer turns (or stays) ready."""
        self._listeners.append(listener)

    def ready(self, ca: ReadyCa) -> None:
        self._cas[ca.ref.signer_name] = ca
        for listener in self._listeners:
            listener(ca.ref.signer_name)

    def discard(self, signer_name: str, only: ReadyCa | None = None) -> None:
        """Out of service (not ready, a token fault met while signing, deleted). With ``only``, only if
        that is still the CA in service (a newer one stays)."""
        if only is None or self._cas.get(signer_name) is only:
            self._cas.pop(signer_name, None)
