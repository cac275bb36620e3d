"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch.

Strategic merge patch is applied as a merge patch after honouring its ``$patch``,
``$deleteFromPrimitiveList/`` and ``$retainKeys`` directives (``$setElementOrder/`` is dropped):
kube-apiserver merges some built-in lists by key, which the sandbox's built-ins do not need.
All functions work on copies; the inputs are never changed.
"""

from __future__ import annotations

from typing import Any

from keyward.sandbox.apiserver.errors import bad_request, unprocessable
from keyward.sandbox.apiserver.objects import clone

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE, STRATEGIC, APPLY)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch, approximated as a merge patch plus its directives."""
    if not isinstance(patch, dict):
        return clone(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    base = dict(target) if isinstance(target, dict) and directive != "replace" else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(base.get(field), list) and isinstance(value, list):
                base[field] = [item for item in base[field] if item not in value]
            continue
        if value is None:
            base.pop(key, None)
            continue
        merged = strategic_merge_patch(base.get(key), value)
        if merged is None:
            base.pop(key, None)
        else:
            base[key] = merged
    if isinstance(retain, list):
        base = {k: v for k, v in base.items() if k in retain}
    return base


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 on a copy of ``target``. Malformed operations are 400; failed ones 422 (like kube)."""
    if not isinstance(operations, list):
        raise bad_request("json patch must be a list of operations")
    document = clone(target)
    for number, operation in enumerate(operations):
        if not isinstance(operation, dict) or not isinstance(operation.get("op"), str):
            raise bad_request(f"json patch operation {number} is not an object with an 'op'")
        document = _apply_operation(document, operation)
    return document


def _apply_operation(document: Any, operation: dict[str, Any]) -> Any:
    op = operation["op"]
    path = _pointer(operation, "path")
    if op == "add":
        return _add(document, path, clone(_required(operation, "value")))
    if op == "remove":
        return _remove(document, path)
    if op == "replace":
        _lookup(document, path)
        return _add(_remove(document, path), path, clone(_required(operation, "value")))
    if op == "move":
        source = _pointer(operation, "from")
        value = _lookup(document, source)
        return _add(_remove(document, source), path, value)
    if op == "copy":
        return _add(document, path, clone(_lookup(document, _pointer(operation, "from"))))
    if op == "test":
        expected = _required(operation, "value")
        actual = _lookup(document, path)
        if not _json_equal(actual, expected):
            raise unprocessable(
                f"the server rejected our request due to an error in our request: testing "
                f"value /{'/'.join(path)} failed"
            )
        return document
    raise bad_request(f"unexpected json patch operation {op!r}")


def _json_equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)


def _required(operation: dict[str, Any], key: str) -> Any:
    if key not in operation:
        raise bad_request(f"json patch {operation['op']} operation does not have a {key!r}")
    return operation[key]


def _pointer(operation: dict[str, Any], key: str) -> list[str]:
    text = _required(operation, key)
    if not isinstance(text, str) or (text and not text.startswith("/")):
        raise bad_request(f"json patch {key} {text!r} is not a JSON pointer")
    if text == "":
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in text[1:].split("/")]


def _missing(path: list[str]) -> Exception:
    return unprocessable(
        f"the server rejected our request due to an error in our request: "
        f"path /{'/'.join(path)} does not exist"
    )


def _index(container: list[Any], segment: str, path: list[str], *, for_add: bool) -> int:
    if segment == "-" and for_add:
        return len(container)
    if not segment.isdigit() or (len(segment) > 1 and segment.startswith("0")):
        raise _missing(path)
    index = int(segment)
    if index > len(container) or (index == len(container) and not for_add):
        raise _missing(path)
    return index


def _lookup(document: Any, path: list[str]) -> Any:
    current = document
    for depth, token in enumerate(path):
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(current, token, path[: depth + 1], for_add=False)]
        else:
            raise _missing(path)
    return current


def _add(document: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent = _lookup(document, path[:-1])
    token = path[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, path, for_add=True), value)
    else:
        raise _missing(path)
    return document


def _remove(document: Any, path: list[str]) -> Any:
    if not path:
        return None
    parent = _lookup(document, path[:-1])
    token = path[-1]
    if isinstance(parent, dict) and token in parent:
        del parent[token]
    elif isinstance(parent, list):
        del parent[_index(parent, token, path, for_add=False)]
    else:
        raise _missing(path)
    return document
