"""API errors as kube-apiserver reports them: ``Status`` objects with reason, message, details, code.

Clients (kubectl, kopf, kr8s, our own ``keyward.kube.client``) branch on ``code`` and ``reason``, and users
read ``message``; so the wording follows the real server closely (see apimachinery's
``k8s.io/apimachinery/pkg/api/errors`` and ``pkg/util/validation/field``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One cause of a 422 Invalid, like apimachinery's ``field.Error``."""

    path: str
    kind: str  # "Invalid", "Required", "Unsupported", "Forbidden", "TooLong", "TooMany", "Duplicate"
    value: Any = None
    detail: str = ""
    supported: tuple[str, ...] = ()

    _REASONS = {
        "Invalid": "FieldValueInvalid",
        "Required": "FieldValueRequired",
        "Unsupported": "FieldValueNotSupported",
        "Forbidden": "FieldValueForbidden",
        "TooLong": "FieldValueTooLong",
        "TooMany": "FieldValueTooMany",
        "Duplicate": "FieldValueDuplicate",
    }

    @property
    def reason(self) -> str:
        return self._REASONS[self.kind]

    def body(self) -> str:
        """The message without the field path, e.g. ``Invalid value: 5: must be greater than 6``."""
        if self.kind == "Required":
            return "Required value" + (f": {self.detail}" if self.detail else "")
        if self.kind == "Forbidden":
            return "Forbidden" + (f": {self.detail}" if self.detail else "")
        if self.kind == "TooLong":
            return f"Too long: {self.detail}"
        if self.kind == "TooMany":
            return f"Too many: {format_value(self.value)}: {self.detail}"
        if self.kind == "Duplicate":
            return f"Duplicate value: {format_value(self.value)}"
        if self.kind == "Unsupported":
            supported = ", ".join(json.dumps(s) for s in self.supported)
            return f"Unsupported value: {format_value(self.value)}: supported values: {supported}"
        return f"Invalid value: {format_value(self.value)}" + (f": {self.detail}" if self.detail else "")

    def __str__(self) -> str:
        return f"{self.path}: {self.body()}" if self.path else self.body()

    def cause(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.body(), "field": self.path}


def format_value(value: Any) -> str:
    """Render a bad value the way Go's field.Error does: numbers bare, strings quoted, else JSON."""
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) and not value.is_integer() else str(int(value))
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass
class ApiError(Exception):
    """An API failure; ``status()`` is the body, ``code`` the HTTP status."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _details(name: str, group: str, kind: str, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = kind
    details.update(extra)
    return details


def _qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{_qualified(plural, group)} "{name}" not found', _details(name, group, plural)
    )


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{_qualified(plural, group)} "{name}" already exists',
        _details(name, group, plural),
    )


def conflict(group: str, plural: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(plural, group)} "{name}": {why}',
        _details(name, group, plural),
    )


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def invalid(group: str, kind: str, name: str, errors: list[FieldError]) -> ApiError:
    qualified = f"{kind}.{group}" if group else kind
    rendered = [str(e) for e in errors]
    summary = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{qualified} "{name}" is invalid: {summary}',
        _details(name, group, kind, causes=[e.cause() for e in errors]),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(group: str, plural: str, name: str, why: str) -> ApiError:
    return ApiError(
        403,
        "Forbidden",
        f'{_qualified(plural, group)} "{name}" is forbidden: {why}',
        _details(name, group, plural),
    )


def method_not_allowed(method: str) -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", f"the server does not allow this method on the requested resource ({method})"
    )


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format ({content_type}) - accepted media "
        f"types include: {', '.join(accepted)}",
    )


def unprocessable(message: str) -> ApiError:
    """A patch that cannot be applied (failed ``test`` op, missing path): 422 like kube."""
    return ApiError(422, "Invalid", message)


def expired(requested: int, oldest: int) -> ApiError:
    """410 for a watch from a resourceVersion the event log no longer remembers."""
    return ApiError(410, "Expired", f"too old resource version: {requested} ({oldest})")
