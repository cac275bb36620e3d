"""The permission log: every distinct authorization decision made for a user who is not an admin.

Each entry is (user, verb, apiGroup, resource, subresource, namespace or "" for the cluster scope,
resourceName, allowed) for resource requests, or (user, verb, path, allowed) for non-resource ones.
It records what the authorizer was asked for the user's own requests, including the checks admission
makes for them (``sign`` or ``approve`` on ``signers``), not SubjectAccessReviews about others.
Tests compare it with a ClusterRole: ``not_granted_by`` lists what the role lacks, ``unused_by``
what it grants that was never needed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from keyward.sandbox.apiserver.rbac import Attributes, SimpleRule, rule_allows, uncovered
from keyward.statedir import open_private_append


@dataclass(frozen=True, order=True)
class Permission:
    user: str
    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""
    allowed: bool = True

    @property
    def attributes(self) -> Attributes:
        from keyward.sandbox.apiserver.auth import UserInfo

        return Attributes(
            UserInfo(self.user),
            self.verb,
            not self.path,
            self.api_group,
            self.resource,
            self.subresource,
            self.namespace,
            self.name,
            self.path,
        )

    def json(self) -> dict[str, Any]:
        body = asdict(self)
        return {
            "user": body["user"],
            "verb": body["verb"],
            "apiGroup": body["api_group"],
            "resource": body["resource"],
            "subresource": body["subresource"],
            "namespace": body["namespace"],
            "name": body["name"],
            "path": body["path"],
            "allowed": body["allowed"],
        }


class PermissionLog:
    """Distinct decisions in the order first seen; optionally appended to a JSON-lines file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._seen: dict[Permission, None] = {}
        self._lock = threading.Lock()

    def record(self, attributes: Attributes, allowed: bool) -> None:
        user = attributes.user
        if user.privileged:
            return
        entry = Permission(
            user.name,
            attributes.verb,
            attributes.api_group if attributes.resource_request else "",
            attributes.resource,
            attributes.subresource,
            attributes.namespace,
            attributes.name,
            "" if attributes.resource_request else attributes.path,
            allowed,
        )
        with self._lock:
            if entry in self._seen:
                return
            self._seen[entry] = None
        if self.path is not None:
            with open_private_append(self.path) as stream:
                stream.write(json.dumps(entry.json(), separators=(",", ":")).encode() + b"\n")

    def entries(self, user: str | None = None, *, allowed: bool | None = None) -> list[Permission]:
        with self._lock:
            found = list(self._seen)
        return [
            e for e in found if (user is None or e.user == user) and (allowed is None or e.allowed is allowed)
        ]

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def not_granted_by(self, rules: Iterable[dict[str, Any]], user: str | None = None) -> list[Permission]:
        """The decisions (allowed or denied) that ``rules`` alone would not allow."""
        rules = list(rules)
        return [e for e in self.entries(user) if not any(rule_allows(e.attributes, r) for r in rules)]

    def unused_by(self, rules: Iterable[dict[str, Any]], user: str | None = None) -> list[SimpleRule]:
        """The pieces (verb x group x resource) of ``rules`` no allowed request needed (names aside)."""
        used = [
            {
                "verbs": [e.verb],
                "apiGroups": [e.api_group],
                "resources": [f"{e.resource}/{e.subresource}" if e.subresource else e.resource],
            }
            if not e.path
            else {"verbs": [e.verb], "nonResourceURLs": [e.path]}
            for e in self.entries(user, allowed=True)
        ]
        return uncovered(used, rules)
