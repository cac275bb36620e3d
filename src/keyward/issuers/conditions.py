"""Kubernetes-style conditions: build them, read them, keep lastTransitionTime honest."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

Condition = dict[str, Any]


def now_rfc3339(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    condition = find(conditions, type_)
    return condition is not None and condition.get("status") == "True"


def make(
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    *,
    previous: Iterable[Mapping[str, Any]] | None = None,
    generation: int | None = None,
    now: datetime | None = None,
    time_field: str = "lastTransitionTime",
) -> Condition:
    """A condition; lastTransitionTime moves only when the status changes."""
    status_text = status if isinstance(status, str) else ("True" if status else "False")
    old = find(previous, type_)
    stamp = now_rfc3339(now)
    if old is not None and old.get("status") == status_text and old.get(time_field):
        stamp = str(old[time_field])
    condition: Condition = {
        "type": type_,
        "status": status_text,
        "reason": reason,
        "message": message,
        time_field: stamp,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def replace(conditions: Iterable[Mapping[str, Any]] | None, new: Condition) -> list[Condition]:
    """The list with ``new`` in place of the condition of its type (appended if absent)."""
    out = [dict(c) for c in conditions or () if c.get("type") != new["type"]]
    out.append(new)
    return out
