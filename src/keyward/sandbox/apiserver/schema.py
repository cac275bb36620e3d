"""Structural openAPIV3Schema handling for custom resources: prune, default, validate.

The order is kube-apiserver's: unknown fields are pruned (unless
``x-kubernetes-preserve-unknown-fields``), non-nullable ``null``s are dropped, defaults are applied
(nested ones only inside objects that exist), then the object is validated. Messages copy
kube-openapi's wording so that a user sees e.g. ``spec.port: Invalid value: 123456: spec.port in body
should be less than or equal to 65535``. Not implemented: allOf/anyOf/oneOf/not, CEL rules
(x-kubernetes-validations), list-type/map-type uniqueness.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
import uuid
from collections.abc import Callable
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from keyward.sandbox.apiserver.errors import FieldError
from keyward.sandbox.apiserver.objects import clone

Schema = dict[str, Any]
_ROOT_FIELDS = ("apiVersion", "kind", "metadata")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?$")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def prune(obj: dict[str, Any], schema: Schema) -> list[str]:
    """Remove fields the schema does not know, in place; return their paths for warnings."""
    pruned: list[str] = []
    _prune(obj, schema, "", pruned, keep=_ROOT_FIELDS)
    return pruned


def _prune(value: Any, schema: Schema, path: str, pruned: list[str], keep: tuple[str, ...] = ()) -> None:
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        if schema.get("x-kubernetes-embedded-resource"):
            keep = _ROOT_FIELDS
        for key in list(value):
            if key in properties:
                if path or key != "metadata":
                    _prune(value[key], properties[key], _join(path, key), pruned)
            elif isinstance(extra, dict):
                _prune(value[key], extra, _join(path, key), pruned)
            elif not (extra is True or preserve or key in keep):
                del value[key]
                pruned.append(_join(path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _prune(item, schema["items"], f"{path}[{index}]", pruned)


def apply_defaults(obj: dict[str, Any], schema: Schema) -> None:
    """Drop non-nullable nulls and fill in defaults, in place."""
    _default(obj, schema, root=True)


def _default(value: Any, schema: Schema, root: bool = False) -> None:
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            if root and key == "metadata":
                continue
            if key in value and value[key] is None and not sub.get("nullable"):
                del value[key]
            if key not in value and "default" in sub:
                value[key] = clone(sub["default"])
            if key in value:
                _default(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                if key not in properties:
                    _default(item, extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default(item, schema["items"])


def validate(obj: dict[str, Any], schema: Schema, *, only: str | None = None) -> list[FieldError]:
    """Every violation of ``schema`` (metadata excluded); ``only`` limits it to one top-level field."""
    errors: list[FieldError] = []
    properties = schema.get("properties") or {}
    for key in schema.get("required") or ():
        if key not in _ROOT_FIELDS and key not in obj and (only is None or key == only):
            errors.append(FieldError(key, "Required"))
    for key, value in obj.items():
        if key in _ROOT_FIELDS or (only is not None and key != only):
            continue
        if key in properties:
            _validate(value, properties[key], key, errors)
        elif isinstance(schema.get("additionalProperties"), dict):
            _validate(value, schema["additionalProperties"], key, errors)
    return errors


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _type_matches(actual: str, wanted: str) -> bool:
    return actual == wanted or (wanted == "number" and actual == "integer")


def _validate(value: Any, schema: Schema, path: str, errors: list[FieldError]) -> None:
    actual = _type_of(value)
    if value is None and schema.get("nullable"):
        return
    if schema.get("x-kubernetes-int-or-string"):
        if actual not in ("integer", "string"):
            errors.append(_invalid(path, value, f'{path} in body must be of type integer,string: "{actual}"'))
            return
    elif "type" in schema:
        if not _type_matches(actual, schema["type"]):
            errors.append(
                _invalid(path, value, f'{path} in body must be of type {schema["type"]}: "{actual}"')
            )
            return
    elif value is None:
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            errors.append(_invalid(path, value, f"{path} in body must not be null"))
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = tuple(str(v) for v in schema["enum"])
        errors.append(FieldError(path, "Unsupported", value=value, supported=supported))
    if actual in ("integer", "number"):
        _validate_number(value, schema, path, errors)
    elif actual == "string":
        _validate_string(value, schema, path, errors)
    elif actual == "array":
        _validate_array(value, schema, path, errors)
    elif actual == "object":
        _validate_object(value, schema, path, errors)


def _invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError(path, "Invalid", value=value, detail=detail)


def _validate_number(value: float, schema: Schema, path: str, errors: list[FieldError]) -> None:
    if "maximum" in schema:
        limit = schema["maximum"]
        if schema.get("exclusiveMaximum") and value >= limit:
            errors.append(_invalid(path, value, f"{path} in body should be less than {_num(limit)}"))
        elif value > limit:
            errors.append(
                _invalid(path, value, f"{path} in body should be less than or equal to {_num(limit)}")
            )
    if "minimum" in schema:
        limit = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= limit:
            errors.append(_invalid(path, value, f"{path} in body should be greater than {_num(limit)}"))
        elif value < limit:
            errors.append(
                _invalid(path, value, f"{path} in body should be greater than or equal to {_num(limit)}")
            )
    factor = schema.get("multipleOf")
    if factor and not math.isclose(value / factor, round(value / factor)):
        errors.append(_invalid(path, value, f"{path} in body should be a multiple of {_num(factor)}"))


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _validate_string(value: str, schema: Schema, path: str, errors: list[FieldError]) -> None:
    length = len(value)
    if "maxLength" in schema and length > schema["maxLength"]:
        errors.append(
            FieldError(
                path, "TooLong", value=value, detail=f"may not be more than {schema['maxLength']} bytes"
            )
        )
    if "minLength" in schema and length < schema["minLength"]:
        errors.append(
            _invalid(path, value, f"{path} in body should be at least {schema['minLength']} chars long")
        )
    pattern = schema.get("pattern")
    if pattern and not _compiled(pattern).search(value):
        errors.append(_invalid(path, value, f"{path} in body should match '{pattern}'"))
    fmt = schema.get("format")
    if fmt and not _format_ok(fmt, value):
        errors.append(_invalid(path, value, f'{path} in body must be of type {fmt}: "{value}"'))


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _format_ok(fmt: str, value: str) -> bool:
    checks: dict[str, Callable[[str], bool]] = {
        "date-time": _is_date_time,
        "date": _is_date,
        "uuid": _is_uuid,
        "byte": _is_base64,
        "ipv4": lambda v: _is_ip(v, 4),
        "ipv6": lambda v: _is_ip(v, 6),
        "cidr": _is_cidr,
        "int32": lambda v: _is_int(v, 32),
        "int64": lambda v: _is_int(v, 64),
    }
    check = checks.get(fmt)
    return check(value) if check else True


def _is_date_time(value: str) -> bool:
    if not _DATE_TIME.match(value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _is_ip(value: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(value).version == version
    except ValueError:
        return False


def _is_cidr(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return "/" in value


def _is_int(value: str, bits: int) -> bool:
    try:
        number = int(value)
    except ValueError:
        return False
    limit: int = 2 ** (bits - 1)
    return -limit <= number < limit


def _validate_array(value: list[Any], schema: Schema, path: str, errors: list[FieldError]) -> None:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(
            FieldError(
                path, "TooMany", value=len(value), detail=f"must have at most {schema['maxItems']} items"
            )
        )
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(
            _invalid(path, value, f"{path} in body should have at least {schema['minItems']} items")
        )
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            _validate(item, items, f"{path}[{index}]", errors)


def _validate_object(value: dict[str, Any], schema: Schema, path: str, errors: list[FieldError]) -> None:
    properties = schema.get("properties") or {}
    for key in schema.get("required") or ():
        if key not in value:
            errors.append(FieldError(_join(path, key), "Required"))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(
            FieldError(
                path, "TooMany", value=len(value), detail=f"must have at most {schema['maxProperties']} items"
            )
        )
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(
            _invalid(path, value, f"{path} in body should have at least {schema['minProperties']} properties")
        )
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        if key in properties:
            _validate(item, properties[key], _join(path, key), errors)
        elif isinstance(extra, dict):
            _validate(item, extra, _join(path, key), errors)
