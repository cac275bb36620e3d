"""The subset of kubectl/client-go JSONPath that additionalPrinterColumns use.

Supports ``.a.b``, ``['a']``, ``[0]``, ``[-1]``, ``[*]``, ``.*``, ``[1:3]``, ``..name`` and filters such as
``[?(@.type=="Ready")]`` (``== != < <= > >=`` and bare existence ``[?(@.x)]``). Missing keys produce no
result rather than an error, as the CRD table convertor does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_FILTER = re.compile(r"^\s*@((?:\.[^\s=!<>]+|\[[^\]]*\])*)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*$")


@dataclass(frozen=True)
class Step:
    kind: str  # field, index, wild, slice, filter, recursive
    name: str = ""
    number: int = 0
    stop: int | None = None
    path: tuple[Step, ...] = ()
    op: str = ""
    literal: Any = None


class JsonPathError(ValueError):
    """The expression is not one this subset understands."""


def compile_path(expression: str) -> tuple[Step, ...]:
    text = expression.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    return tuple(_parse(text))


def _parse(text: str) -> Iterator[Step]:
    position = 0
    while position < len(text):
        char = text[position]
        if text.startswith("..", position):
            name, position = _read_name(text, position + 2)
            yield Step("recursive", name=name)
        elif char == ".":
            name, position = _read_name(text, position + 1)
            if name == "*":
                yield Step("wild")
            elif name:
                yield Step("field", name=name)
        elif char == "[":
            end = _closing_bracket(text, position)
            yield _bracket(text[position + 1 : end].strip())
            position = end + 1
        else:
            name, position = _read_name(text, position)
            yield Step("field", name=name)


def _read_name(text: str, position: int) -> tuple[str, int]:
    end = position
    while end < len(text) and text[end] not in ".[":
        end += 1
    return text[position:end], end


def _closing_bracket(text: str, start: int) -> int:
    depth, quote = 0, ""
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return index
    raise JsonPathError(f"unclosed '[' in {text!r}")


def _bracket(content: str) -> Step:
    if content.startswith("?(") and content.endswith(")"):
        match = _FILTER.match(content[2:-1])
        if not match:
            raise JsonPathError(f"unsupported filter {content!r}")
        path, op, literal = match.groups()
        return Step(
            "filter", path=tuple(_parse(path)), op=op or "", literal=_literal(literal) if op else None
        )
    if content == "*":
        return Step("wild")
    if content[:1] in "'\"" and content[-1:] == content[:1]:
        return Step("field", name=content[1:-1])
    if ":" in content:
        start, _, stop = content.partition(":")
        stop = stop.split(":")[0]
        return Step("slice", number=int(start or 0), stop=int(stop) if stop.strip() else None)
    try:
        return Step("index", number=int(content))
    except ValueError as exc:
        raise JsonPathError(f"unsupported subscript [{content}]") from exc


def _literal(text: str) -> Any:
    if text[:1] in "'\"" and text[-1:] == text[:1]:
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        return text


def evaluate(steps: tuple[Step, ...], root: Any) -> list[Any]:
    """All values the path selects, in document order."""
    current = [root]
    for step in steps:
        current = [result for value in current for result in _apply(step, value)]
    return current


def _apply(step: Step, value: Any) -> Iterator[Any]:
    if step.kind == "field":
        if isinstance(value, dict) and step.name in value:
            yield value[step.name]
    elif step.kind == "index":
        if isinstance(value, list) and -len(value) <= step.number < len(value):
            yield value[step.number]
    elif step.kind == "wild":
        if isinstance(value, dict):
            yield from value.values()
        elif isinstance(value, list):
            yield from value
    elif step.kind == "slice":
        if isinstance(value, list):
            yield from value[step.number : step.stop]
    elif step.kind == "filter":
        items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else []
        yield from (item for item in items if _passes(step, item))
    elif step.kind == "recursive":
        yield from _descend(step.name, value)


def _descend(name: str, value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        if name in value:
            yield value[name]
        for child in value.values():
            yield from _descend(name, child)
    elif isinstance(value, list):
        for child in value:
            yield from _descend(name, child)


def _passes(step: Step, item: Any) -> bool:
    found = evaluate(step.path, item)
    if not step.op:
        return bool(found)
    if not found:
        return step.op == "!="
    left, right = found[0], step.literal
    try:
        if step.op == "==":
            return bool(left == right)
        if step.op == "!=":
            return bool(left != right)
        if step.op == "<":
            return bool(left < right)
        if step.op == "<=":
            return bool(left <= right)
        if step.op == ">":
            return bool(left > right)
        return bool(left >= right)
    except TypeError:
        return False
