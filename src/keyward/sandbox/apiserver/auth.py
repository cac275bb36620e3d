"""Authentication: bearer tokens to users, as kube-apiserver's token authenticators do.

- The admin token (written into the admin kubeconfig) authenticates as ``kubernetes-admin`` in
  ``system:masters``, the group kube-apiserver's privileged-group authorizer lets do anything (kind's
  and kubeadm's admin kubeconfig holds such a client certificate).
- ServiceAccount tokens come from the TokenRequest API (``serviceaccounts/NAME/token``) and
  authenticate as ``system:serviceaccount:NS:NAME`` with the groups ``system:serviceaccounts``,
  ``system:serviceaccounts:NS`` and ``system:authenticated``, uid the ServiceAccount's uid, and the
  ``authentication.kubernetes.io/credential-id`` extra (pkg/serviceaccount/claims.go,
  staging/src/k8s.io/apiserver/pkg/authentication/serviceaccount/util.go). Like kube's legacy-free
  validator (``servicaccount.Validator``) a token stops working when it expires or when its
  ServiceAccount is deleted (or replaced by another of the same name: the uid must match).
- No token, or a token nobody issued: 401 Unauthorized, as with ``--anonymous-auth=false``;
  ``anonymous=True`` maps a request without a token to ``system:anonymous`` /
  ``system:unauthenticated`` instead (kube's default), which RBAC then judges.

Tokens are opaque random strings held in memory (kube issues signed JWTs; clients never look inside).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyward.sandbox.apiserver.objects import Obj

ADMIN_NAME = "kubernetes-admin"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
SERVICE_ACCOUNTS = "system:serviceaccounts"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"
SERVICE_ACCOUNTS_KEY = ("", "serviceaccounts")
DEFAULT_TOKEN_SECONDS = 3600  # SetDefaults_TokenRequestSpec
DEFAULT_AUDIENCES = ("https://kubernetes.default.svc.cluster.local",)


@dataclass(frozen=True)
class UserInfo:
    """``user.Info``: who a request acts as."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def extra_map(self) -> dict[str, list[str]]:
        return {key: list(values) for key, values in self.extra}

    @property
    def privileged(self) -> bool:
        """In ``system:masters``: allowed everything before RBAC is asked (authorizerfactory)."""
        return MASTERS in self.groups

    @classmethod
    def of(
        cls,
        name: str,
        groups: Any = (),
        uid: str = "",
        extra: Mapping[str, Any] | None = None,
    ) -> UserInfo:
        """A user from JSON-ish parts (SubjectAccessReview specs, test code)."""
        pairs = tuple(
            (str(key), tuple(str(v) for v in (values or ()))) for key, values in sorted((extra or {}).items())
        )
        return cls(str(name or ""), str(uid or ""), tuple(str(g) for g in groups or ()), pairs)


ADMIN = UserInfo(ADMIN_NAME, groups=(MASTERS, AUTHENTICATED))
ANONYMOUS = UserInfo("system:anonymous", groups=(UNAUTHENTICATED,))


def service_account_username(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def split_service_account_username(username: str) -> tuple[str, str] | None:
    """(namespace, name) of ``system:serviceaccount:NS:NAME``, None for other users."""
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    namespace, _, name = username[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")
    return (namespace, name) if namespace and name and ":" not in name else None


@dataclass
class IssuedToken:
    namespace: str
    name: str
    service_account_uid: str
    expires: float  # time.time() seconds
    audiences: tuple[str, ...]
    credential_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def user(self) -> UserInfo:
        return UserInfo(
            service_account_username(self.namespace, self.name),
            self.service_account_uid,
            (SERVICE_ACCOUNTS, f"{SERVICE_ACCOUNTS}:{self.namespace}", AUTHENTICATED),
            ((CREDENTIAL_ID, (f"JTI={self.credential_id}",)),),
        )


class Tokens:
    """The admin token and every ServiceAccount token issued since the server started."""

    def __init__(self) -> None:
        self.admin_token = secrets.token_urlsafe(32)
        self._issued: dict[str, IssuedToken] = {}

    def issue(
        self, service_account: Obj, seconds: int, audiences: tuple[str, ...]
    ) -> tuple[str, IssuedToken]:
        metadata = service_account["metadata"]
        issued = IssuedToken(
            metadata["namespace"], metadata["name"], metadata["uid"], time.time() + seconds, audiences
        )
        token = secrets.token_urlsafe(32)
        self._issued[token] = issued
        return token, issued

    def authenticate(self, token: str, service_accounts: Any) -> UserInfo | None:
        """The user a bearer token stands for, or None; ``service_accounts(ns, name)`` reads the store."""
        if secrets.compare_digest(token.encode("utf-8", "surrogateescape"), self.admin_token.encode()):
            return ADMIN
        issued = self._issued.get(token)
        if issued is None:
            return None
        if time.time() >= issued.expires:
            del self._issued[token]
            return None
        account = service_accounts(issued.namespace, issued.name)
        if account is None or account["metadata"].get("uid") != issued.service_account_uid:
            return None  # the ServiceAccount was deleted (or replaced): its tokens are void
        if account["metadata"].get("deletionTimestamp"):
            return None
        return issued.user()
