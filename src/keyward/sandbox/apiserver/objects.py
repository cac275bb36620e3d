"""Helpers on plain-dict Kubernetes objects: copying, timestamps, names.

Objects in the store are never mutated after they are stored (writes build a new copy), so
watch events and list snapshots can share them safely; ``clone`` makes those copies quickly.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

Obj = dict[str, Any]
T = TypeVar("T")

_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's utilrand: no vowels, no look-alikes
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def clone(value: T) -> T:
    """Deep copy of JSON data; several times faster than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return cast(T, {k: clone(v) for k, v in value.items()})
    if isinstance(value, list):
        return cast(T, [clone(v) for v in value])
    return value


def dig(obj: Any, *path: str) -> Any:
    """``obj[p0][p1]...`` or None when any step is missing or not a mapping."""
    for step in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(step)
    return obj


def meta(obj: Obj) -> Obj:
    """The object's metadata dict, created when absent or not a mapping."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = obj["metadata"] = {}
    return metadata


def now_rfc3339() -> str:
    """Kubernetes timestamps: RFC 3339, UTC, whole seconds, ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None


def generated_name(prefix: str) -> str:
    """``generateName`` + 5 random characters, as the real server does."""
    return prefix + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))


def name_problem(name: str, *, label: bool) -> str | None:
    """Why ``name`` is not a valid object name (DNS-1123 subdomain, or label for namespaces)."""
    if label:
        if len(name) > 63 or not _DNS_LABEL.match(name):
            return (
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                "and must start and end with an alphanumeric character (e.g. 'my-name',  or "
                "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            )
        return None
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
            "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
            "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    return None


def is_dns_subdomain(value: str) -> bool:
    return len(value) <= 253 and bool(_DNS_SUBDOMAIN.match(value))
