"""labelSelector and fieldSelector, parsed once per request and matched per object (list and watch).

Grammar and semantics follow apimachinery's ``labels.Parse`` and ``fields.ParseSelector``: ``!=`` and
``notin`` also match objects without the label; field selectors only accept the field labels the
resource supports (anything else is 400 ``field label not supported``, as on a real cluster).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyward.sandbox.apiserver.errors import ApiError, bad_request

FieldPath = tuple[str, ...]

_TOKEN = re.compile(r"\s*(?:(!=|==|=|!|\(|\)|,|>|<)|([^\s!=(),<>]+))")


@dataclass(frozen=True)
class LabelRequirement:
    key: str
    op: str  # exists, !exists, =, !=, in, notin, gt, lt
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        try:
            number, limit = int(value or ""), int(next(iter(self.values)))
        except ValueError:
            return False
        return number > limit if self.op == "gt" else number < limit


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[LabelRequirement, ...]

    def matches(self, obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r.matches(labels) for r in self.requirements)


def parse_label_selector(text: str) -> LabelSelector:
    """Parse ``a=b,c!=d,e in (f,g),!h``; raise a 400 ApiError naming the problem."""
    tokens: list[tuple[str, str]] = []  # (kind, text): kind "op" or "id"
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            if text[position:].strip() == "":
                break
            raise _label_error(text, f"unexpected character at {position}")
        tokens.append(("op", match.group(1)) if match.group(1) else ("id", match.group(2)))
        position = match.end()
    parser = _LabelParser(text, tokens)
    return LabelSelector(tuple(parser.parse()))


class _LabelParser:
    def __init__(self, text: str, tokens: list[tuple[str, str]]) -> None:
        self.text, self.tokens, self.index = text, tokens, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise _label_error(self.text, "unexpected end of selector")
        self.index += 1
        return token

    def identifier(self) -> str:
        kind, value = self.take()
        if kind != "id":
            raise _label_error(self.text, f"found '{value}', expected: identifier")
        return value

    def parse(self) -> list[LabelRequirement]:
        requirements: list[LabelRequirement] = []
        while self.peek() is not None:
            requirements.append(self.requirement())
            token = self.peek()
            if token is None:
                break
            if token != ("op", ","):
                raise _label_error(self.text, f"found '{token[1]}', expected: ',' or 'end of string'")
            self.take()
            if self.peek() is None:
                raise _label_error(self.text, "found end of string after ','")
        return requirements

    def requirement(self) -> LabelRequirement:
        if self.peek() == ("op", "!"):
            self.take()
            return LabelRequirement(self.identifier(), "!exists")
        key = self.identifier()
        token = self.peek()
        if token is None or token == ("op", ","):
            return LabelRequirement(key, "exists")
        kind, value = self.take()
        if kind == "op" and value in ("=", "==", "!="):
            nxt = self.peek()
            operand = self.take()[1] if nxt is not None and nxt[0] == "id" else ""
            return LabelRequirement(key, "!=" if value == "!=" else "=", frozenset([operand]))
        if kind == "op" and value in (">", "<"):
            operand = self.identifier()
            if not operand.lstrip("-").isdigit():
                raise _label_error(
                    self.text, f"for 'gt', 'lt' operators, the value must be an integer: {operand}"
                )
            return LabelRequirement(key, "gt" if value == ">" else "lt", frozenset([operand]))
        if kind == "id" and value in ("in", "notin"):
            return LabelRequirement(key, value, frozenset(self.value_set()))
        raise _label_error(self.text, f"found '{value}', expected: in, notin, =, ==, !=, gt, lt")

    def value_set(self) -> list[str]:
        if self.take() != ("op", "("):
            raise _label_error(self.text, "found no '(' after 'in'/'notin'")
        values: list[str] = []
        while True:
            kind, value = self.take()
            if kind == "id":
                values.append(value)
                kind, value = self.take()
            if value == ")":
                return values
            if value != ",":
                raise _label_error(self.text, f"found '{value}', expected: ',' or ')'")


def _label_error(text: str, why: str) -> ApiError:
    return bad_request(f"unable to parse requirement: {why} (in labelSelector {text!r})")


@dataclass(frozen=True)
class FieldRequirement:
    label: str
    path: FieldPath
    value: str
    equal: bool

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return (field_value(obj, self.path) == self.value) == self.equal


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...]

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all(r.matches(obj) for r in self.requirements)


def field_value(obj: Mapping[str, Any], path: FieldPath) -> str:
    """The string form of a field for selection; missing fields read as ""."""
    value: Any = obj
    for step in path:
        value = value.get(step) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(text: str, supported: Mapping[str, FieldPath]) -> FieldSelector:
    """Parse ``metadata.name=x,spec.signerName!=y`` against the resource's field labels."""
    requirements: list[FieldRequirement] = []
    for term in _split_unescaped(text, ","):
        if not term.strip():
            continue
        left, op, right = _split_term(term)
        if not op:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        equal = op != "!="
        label = left.strip()
        if label not in supported:
            raise bad_request(f"field label not supported: {label}")
        requirements.append(FieldRequirement(label, supported[label], _unescape(right.strip()), equal))
    return FieldSelector(tuple(requirements))


def _split_term(term: str) -> tuple[str, str, str]:
    for op in ("!=", "==", "="):
        left, found, right = _partition_unescaped(term, op)
        if found:
            return left, found, right
    return term, "", ""


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _partition_unescaped(term: str, op: str) -> tuple[str, str, str]:
    index = 0
    while index < len(term):
        if term[index] == "\\":
            index += 2
            continue
        if term.startswith(op, index):
            return term[:index], op, term[index + len(op) :]
        index += 1
    return term, "", ""


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


@dataclass(frozen=True)
class ObjectFilter:
    """What a list or watch asks for: a namespace (None: all) and the two selectors."""

    namespace: str | None = None
    labels: LabelSelector | None = None
    fields: FieldSelector | None = None

    def matches(self, obj: Mapping[str, Any]) -> bool:
        if self.namespace is not None and (obj.get("metadata") or {}).get("namespace", "") != self.namespace:
            return False
        if self.labels is not None and not self.labels.matches(obj):
            return False
        return self.fields is None or self.fields.matches(obj)
