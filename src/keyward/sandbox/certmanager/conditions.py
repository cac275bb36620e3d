"""Status conditions and timestamps as Kubernetes writes them (RFC 3339, UTC, whole seconds)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

Condition = dict[str, Any]


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 timestamp from an object, or None when absent or unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def conditions_of(obj: Mapping[str, Any]) -> list[Condition]:
    return list((obj.get("status") or {}).get("conditions") or [])


def find_condition(obj: Mapping[str, Any], kind: str) -> Condition | None:
    return next((c for c in conditions_of(obj) if c.get("type") == kind), None)


def is_true(obj: Mapping[str, Any], kind: str) -> bool:
    condition = find_condition(obj, kind)
    return condition is not None and condition.get("status") == "True"


def with_condition(
    conditions: Sequence[Condition],
    kind: str,
    status: str,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None = None,
) -> list[Condition]:
    """``conditions`` with ``kind`` set; lastTransitionTime moves only when the status changes."""
    previous = next((c for c in conditions if c.get("type") == kind), None)
    changed = previous is None or previous.get("status") != status
    condition: Condition = {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": format_time(now)
        if changed or previous is None
        else previous.get("lastTransitionTime", format_time(now)),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    if previous is None:
        return [*conditions, condition]
    return [condition if c.get("type") == kind else c for c in conditions]


def without_condition(conditions: Sequence[Condition], kind: str) -> list[Condition]:
    return [c for c in conditions if c.get("type") != kind]
