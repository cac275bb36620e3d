"""Certificates, Secrets and a fake EST server for the EST issuer unit tests (no network, no cluster)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from keyward.est.client import EstError
from keyward.issuers.est.issuer import SecretLookup
from keyward.issuers.objects import SecretView
from tests.support.pki import Issuer, b64, cacert, ec_key, key_pem, name, pem


def spec(anchor: x509.Certificate, **extra: Any) -> dict[str, Any]:
    return {"host": "est.example.com", "cacert": cacert(anchor), "secretName": "creds", **extra}


def basic_secret(
    username: str = "user", word: str = "pw", type_: str = "kubernetes.io/basic-auth"
) -> dict[str, Any]:
    return {"type": type_, "data": {"username": b64(username.encode()), "password": b64(word.encode())}}


def tls_secret(
    issuer: Issuer, common_name: str = "device", **issue: Any
) -> tuple[dict[str, Any], x509.Certificate]:
    key = ec_key()
    certificate = issuer.issue(name(common_name), key.public_key(), **issue)
    secret = {
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(pem(certificate)), "tls.key": b64(key_pem(key))},
    }
    return secret, certificate


def lookup(secrets: Mapping[str, Mapping[str, Any]]) -> SecretLookup:
    """The Secrets by name, as the operator hands them to the domain (views)."""

    async def find(secret_name: str) -> SecretView | None:
        secret = secrets.get(secret_name)
        return SecretView.from_body(secret) if secret is not None else None

    return find


@dataclass
class FakeServer:
    """``cacerts()`` answers ``bundle`` or raises ``error``; counts calls."""

    bundle: Sequence[x509.Certificate] = ()
    error: EstError | None = None
    calls: list[str] = field(default_factory=list)

    async def cacerts(self) -> list[x509.Certificate]:
        self.calls.append("cacerts")
        if self.error is not None:
            raise self.error
        return list(self.bundle)
