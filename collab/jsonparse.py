"""Strict extraction of one JSON object from model output.

LLM judges and simulators are asked for a JSON object, but models wrap it in prose or a ```json fence. This module
finds the object and checks it against a tiny schema. It never coerces: CollabLLM's lenient parser turned the
string "5" into a number and crashed later, far from the cause. Here a value of the wrong JSON type is a parse
failure at the boundary, which the caller counts and re-asks.

Schema types are Python types with JSON meaning:
    str -> JSON string, bool -> true/false, int -> integer (not a bool, not 1.0), float -> any JSON number
    (integers included, bools excluded), list -> array, dict -> object, type(None) -> null.
A tuple of types accepts any of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

SchemaType = type | tuple[type, ...]
Schema = Mapping[str, SchemaType]

# A fence opened with ```json (or a bare ```) and closed with ```; the body is tried before free scanning.
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)


class JSONParseError(ValueError):
    """The text holds no JSON object that satisfies the schema; `reason` is short enough for a log line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python's json accepts them by default.
    raise ValueError(f"non-standard JSON constant {name}")


def _balanced_objects(text: str) -> Iterator[str]:
    """Every top-level balanced {...} span, in order. Braces inside JSON strings do not count; quotes in the
    surrounding prose are ignored because string tracking only starts inside an object."""
    depth = 0
    start = -1
    in_string = False
    escaped = False
    for i, ch in enumerate(text):
        if depth == 0:
            if ch == "{":
                depth, start, in_string, escaped = 1, i, False, False
            continue
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                yield text[start : i + 1]


def _candidates(text: str) -> Iterator[str]:
    stripped = text.strip()
    if stripped.startswith("{"):
        yield stripped
    for match in _FENCE.finditer(text):
        body = match.group(1).strip()
        if body:
            yield body
    yield from _balanced_objects(text)


def _type_name(expected: SchemaType) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array",
             dict: "an object", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _matches(value: Any, expected: SchemaType) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    for t in types:
        if t is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
        elif t is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif t is type(None):
            if value is None:
                return True
        elif isinstance(value, t):
            return True
    return False


def validate(obj: dict[str, Any], required: Schema, optional: Schema | None = None) -> None:
    """Raise JSONParseError unless every required key is present with its type and every optional key that is
    present has its type. Extra keys are allowed (models add them; they are harmless)."""
    for key, expected in required.items():
        if key not in obj:
            raise JSONParseError(f"missing key {key!r}")
        if not _matches(obj[key], expected):
            raise JSONParseError(
                f"key {key!r} must be {_type_name(expected)}, got {type(obj[key]).__name__} {obj[key]!r:.40}"
            )
    for key, expected in (optional or {}).items():
        if key in obj and not _matches(obj[key], expected):
            raise JSONParseError(
                f"key {key!r} must be {_type_name(expected)}, got {type(obj[key]).__name__} {obj[key]!r:.40}"
            )


def parse_json_object(text: str | None, required: Schema | None = None, optional: Schema | None = None) -> dict:
    """The first JSON object in `text` that parses and satisfies the schema.

    Candidates, in order: the whole text when it starts with '{', the bodies of ``` fences, then every balanced
    top-level {...} span. Trying later candidates lets prose such as "{like this}" precede the real object. When no
    candidate fits, the error names the first concrete problem found (a schema error beats a syntax error, since
    it is closer to what the model meant).
    """
    if text is None or not text.strip():
        raise JSONParseError("empty output")
    syntax_error: str | None = None
    schema_error: str | None = None
    seen: set[str] = set()
    for candidate in _candidates(text):
        if candidate in seen:
            continue
        seen.add(candidate)
        try:
            obj = json.loads(candidate, parse_constant=_reject_constant)
        except ValueError as exc:
            syntax_error = syntax_error or f"invalid JSON: {str(exc)[:80]}"
            continue
        if not isinstance(obj, dict):
            syntax_error = syntax_error or f"expected a JSON object, got {type(obj).__name__}"
            continue
        try:
            validate(obj, required or {}, optional)
        except JSONParseError as exc:
            schema_error = schema_error or exc.reason
            continue
        return obj
    raise JSONParseError(schema_error or syntax_error or "no JSON object found")
