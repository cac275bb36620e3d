"""``meta.k8s.io/v1`` Table output, which ``kubectl get`` asks for and prints as is.

Custom resources get Name plus their additionalPrinterColumns (or Age), evaluated with the JSONPath
subset in ``jsonpath``; built-ins get the columns kube-apiserver's printers give them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from keyward.sandbox.apiserver.jsonpath import evaluate
from keyward.sandbox.apiserver.objects import Obj, dig, parse_rfc3339
from keyward.sandbox.apiserver.resources import PrinterColumn, View

Column = dict[str, Any]
Cells = Callable[[Obj], list[Any]]


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: 45s, 5m30s, 3h, 2d4h, 3y..."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(timestamp: Any) -> str:
    parsed = parse_rfc3339(timestamp) if isinstance(timestamp, str) else None
    if parsed is None:
        return "<unknown>"
    return human_duration((datetime.now(UTC) - parsed).total_seconds())


def _column(
    name: str, kind: str = "string", *, fmt: str = "", priority: int = 0, description: str = ""
) -> Column:
    return {"name": name, "type": kind, "format": fmt, "description": description, "priority": priority}


NAME = _column("Name", fmt="name", description="Name must be unique within a namespace.")
AGE = _column(
    "Age",
    description="CreationTimestamp is a timestamp representing the server time when this object was created.",
)


def _name(obj: Obj) -> str:
    return str(dig(obj, "metadata", "name") or "")


def _created(obj: Obj) -> str:
    return age(dig(obj, "metadata", "creationTimestamp"))


def _csr_condition(obj: Obj) -> str:
    status = obj.get("status") or {}
    kinds = [
        str(c.get("type"))
        for c in status.get("conditions") or []
        if isinstance(c, dict) and c.get("type") in ("Approved", "Denied", "Failed")
    ]
    if status.get("certificate"):
        kinds.append("Issued")
    return ",".join(kinds) or "Pending"


def _csr_duration(obj: Obj) -> str:
    seconds = dig(obj, "spec", "expirationSeconds")
    return human_duration(seconds) if isinstance(seconds, int) else "<none>"


def _event_object(obj: Obj) -> str:
    ref = obj.get("involvedObject") or obj.get("regarding") or {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


def _event_last_seen(obj: Obj) -> str:
    when = obj.get("lastTimestamp") or obj.get("deprecatedLastTimestamp") or obj.get("eventTime")
    return age(when) if when else "<unknown>"


_BUILTIN: dict[str, tuple[list[Column], Cells]] = {
    "namespaces": (
        [NAME, _column("Status"), AGE],
        lambda o: [_name(o), dig(o, "status", "phase"), _created(o)],
    ),
    "secrets": (
        [NAME, _column("Type"), _column("Data", "integer"), AGE],
        lambda o: [_name(o), o.get("type"), len(o.get("data") or {}), _created(o)],
    ),
    "configmaps": (
        [NAME, _column("Data", "integer"), AGE],
        lambda o: [_name(o), len(o.get("data") or {}) + len(o.get("binaryData") or {}), _created(o)],
    ),
    "leases": (
        [NAME, _column("Holder"), AGE],
        lambda o: [_name(o), dig(o, "spec", "holderIdentity") or "", _created(o)],
    ),
    "events": (
        [
            _column("Last Seen"),
            _column("Type"),
            _column("Reason"),
            _column("Object"),
            _column("Message"),
            {**NAME, "priority": 1},
        ],
        lambda o: [
            _event_last_seen(o),
            o.get("type"),
            o.get("reason"),
            _event_object(o),
            o.get("message") or o.get("note"),
            _name(o),
        ],
    ),
    "certificatesigningrequests": (
        [
            NAME,
            AGE,
            _column("SignerName"),
            _column("Requestor"),
            _column("RequestedDuration"),
            _column("Condition"),
        ],
        lambda o: [
            _name(o),
            _created(o),
            dig(o, "spec", "signerName"),
            dig(o, "spec", "username"),
            _csr_duration(o),
            _csr_condition(o),
        ],
    ),
    "customresourcedefinitions": (
        [NAME, _column("Created At", "date")],
        lambda o: [_name(o), dig(o, "metadata", "creationTimestamp")],
    ),
}


def _printer_cell(column: PrinterColumn, obj: Obj) -> Any:
    """One cell as apiextensions' table convertor computes it: first JSONPath result, typed."""
    found = evaluate(column.steps, obj)
    if not found or found[0] is None:
        return None
    value = found[0]
    if column.type == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value, separators=(",", ":")) if isinstance(value, dict | list) else str(value)
    if column.type == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if column.type == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if column.type == "boolean" and isinstance(value, bool):
        return value
    if column.type == "date" and isinstance(value, str):
        return age(value) if parse_rfc3339(value) else "<invalid>"
    return None


def layout(view: View) -> tuple[list[Column], Cells]:
    columns = view.spec.printer_columns
    if view.resource.table in _BUILTIN:
        return _BUILTIN[view.resource.table]
    if columns is None:
        return [NAME, _column("Created At", "date")], lambda o: [
            _name(o),
            dig(o, "metadata", "creationTimestamp"),
        ]
    definitions = [NAME] + [
        _column(c.name, c.type, fmt=c.format, priority=c.priority, description=c.description) for c in columns
    ]
    return definitions, lambda o: [_name(o)] + [_printer_cell(c, o) for c in columns]


def table(
    view: View,
    objects: list[Obj],
    *,
    resource_version: str,
    continue_token: str = "",
    include_object: str = "Metadata",
    api_version: str = "meta.k8s.io/v1",
) -> Obj:
    """A Table of ``objects`` (already in the view's form)."""
    columns, cells = layout(view)
    rows = []
    for obj in objects:
        row: Obj = {"cells": cells(obj)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": api_version,
                "metadata": obj.get("metadata", {}),
            }
        rows.append(row)
    metadata: Obj = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    }
