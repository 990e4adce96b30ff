"""Rules of the request contract that the models and the published JSON Schema must state alike.

Pure functions and constants, no I/O: RFC 3339 date-times, Kafka topic names, the conditional
rules of a request (which fields go together), and the size bounds checked before any schema.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

#: Kafka's topic-name rules: legal characters, at most 249 of them, and not "." or "..".
TOPIC_NAME_PATTERN = r"^[a-zA-Z0-9._-]+$"
TOPIC_NAME_MAX = 249

#: Bounds on what a request may carry, checked before validation (they protect later stages:
#: serializing the reply, the metadata echo, the dead letter).
MAX_DEPTH = 32
MAX_KEYS = 10_000
MAX_METADATA_BYTES = 64 * 1024

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 date-time (offset required) as an aware datetime; ValueError otherwise.

    A leap second (:60) is read as :59; fractions beyond microseconds are cut.
    """
    match = _RFC3339.match(value)
    if match is None:
        raise ValueError("not an RFC 3339 date-time (e.g. 2026-12-02T10:00:00Z)")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    micro = f".{(fraction + '000000')[:6]}" if fraction else ""
    second = "59" if second == "60" else second
    text = f"{year}-{month}-{day}T{hour}:{minute}:{second}{micro}{offset}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an RFC 3339 date-time: no such date or time") from None


def is_rfc3339(value: object) -> bool:
    """The JSON Schema `date-time` format check (strings only; other types pass, as the spec says)."""
    if not isinstance(value, str):
        return True
    try:
        parse_rfc3339(value)
    except ValueError:
        return False
    return True


def topic_name_problem(name: str) -> str | None:
    """Why Kafka would refuse `name` as a topic, or None."""
    if not name or len(name) > TOPIC_NAME_MAX:
        return f"a topic name has 1 to {TOPIC_NAME_MAX} characters"
    if name in (".", ".."):
        return "a topic cannot be named '.' or '..'"
    if re.fullmatch(TOPIC_NAME_PATTERN, name) is None:
        return "a topic name uses only ASCII letters, digits, '.', '_' and '-'"
    return None


def _present(*fields: str) -> dict[str, Any]:
    """JSON Schema for "these fields are given and not null" (the models read null as absent)."""
    return {"required": list(fields), "properties": {f: {"not": {"type": "null"}} for f in fields}}


def request_conditions() -> list[Any]:
    """The request's cross-field rules as JSON Schema (`allOf`), mirroring the model's validator."""
    embedding_only = ("messages", "template", "tools", "response_format")
    rerank_fields = ("query", "documents", "top_n")
    rerank_only = ("messages", "template", "input", "tools", "response_format")
    return [
        {
            "if": {"properties": {"kind": {"const": "embedding"}}, "required": ["kind"]},
            "then": {
                **_present("input"),
                "not": {"anyOf": [_present(f) for f in (*embedding_only, *rerank_fields)]},
                "properties": {"input": {"not": {"type": "null"}}, "stream": {"const": False}},
            },
            "else": {
                "if": {"properties": {"kind": {"const": "rerank"}}, "required": ["kind"]},
                "then": {
                    **_present("query", "documents"),
                    "not": {"anyOf": [_present(f) for f in rerank_only]},
                    "properties": {"query": {"not": {"type": "null"}}, "documents": {"not": {"type": "null"}},
                                   "stream": {"const": False}},
                },
                "else": {
                    "oneOf": [_present("messages"), _present("template")],
                    "not": {"anyOf": [_present(f) for f in ("input", *rerank_fields)]},
                },
            },
        },
        {
            "if": {"required": ["variables"], "properties": {"variables": {"type": "object", "minProperties": 1}}},
            "then": _present("template"),
        },
        {"if": _present("tool_choice"), "then": _present("tools")},
        {"if": _present("parallel_tool_calls"), "then": _present("tools")},
        {"if": _present("top_logprobs"),
         "then": {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}}},
        # A stream carries one choice.
        {"if": {"required": ["stream"], "properties": {"stream": {"const": True}}},
         "then": {"properties": {"n": {"anyOf": [{"type": "null"}, {"maximum": 1}]}}}},
        {
            "if": {"properties": {"response_format": {"required": ["type"],
                                                      "properties": {"type": {"const": "json_schema"}}}},
                   "required": ["response_format"]},
            "then": {"properties": {"response_format": _present("json_schema")}},
        },
    ]


def bounds_problem(doc: Any, *, metadata_bytes: int) -> str | None:
    """Why `doc` exceeds the request bounds (depth, keys, metadata size), or None. Iterative, so a
    document nested deeper than Python's recursion limit is measured, not crashed on."""
    if metadata_bytes > MAX_METADATA_BYTES:
        return f"metadata is {metadata_bytes} bytes encoded; at most {MAX_METADATA_BYTES}"
    keys = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(node, dict):
            keys += len(node)
            if keys > MAX_KEYS:
                return f"more than {MAX_KEYS} keys in all"
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return None
