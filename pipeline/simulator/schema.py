"""Deterministic JSON values from a JSON Schema: tool arguments and structured output.

Covers what tool and response schemas use in practice (types, ``enum``/``const``,
``anyOf``/``oneOf``/``allOf``, local ``$ref``, simple bounds) so a simulated reply
validates with ``jsonschema``; ``invalid_instance`` is the deliberate counter-example
served under the ``invalid_json`` fault. Pure and cheap, like ``wire``.
"""

from __future__ import annotations

import math
from typing import Any

JsonDict = dict[str, Any]

# Below this depth every declared property is filled in; deeper only ``required`` ones
# (and arrays only their ``minItems``), so recursive schemas terminate.
FULL_DEPTH = 3
MAX_DEPTH = 12
INVALID_MARKER = "sim_invalid"

_FORMATS: dict[str, str] = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "sim@example.com",
    "uri": "https://example.com/sim",
    "url": "https://example.com/sim",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "hostname": "sim.example.com",
    "ipv4": "192.0.2.1",
}


def resolve(schema: object, root: object) -> JsonDict:
    """Follow local ``$ref``s (``#/$defs/X`` or LiteLLM's ``/$defs/X``); non-dicts become ``{}``."""
    for _ in range(32):
        if not isinstance(schema, dict) or "$ref" not in schema:
            break
        ref = str(schema["$ref"])
        if not ref.startswith(("#", "/")):
            return {}  # remote refs: nothing to follow offline
        node: object = root
        for part in ref.lstrip("#").split("/"):
            if part:
                part = part.replace("~1", "/").replace("~0", "~")
                node = node.get(part, {}) if isinstance(node, dict) else {}
        schema = node
    return schema if isinstance(schema, dict) else {}


def _merged(schema: JsonDict, root: object) -> JsonDict:
    """``allOf`` folded into one schema (properties and required lists are unioned)."""
    parts = schema.get("allOf")
    if not isinstance(parts, list):
        return schema
    merged: JsonDict = {k: v for k, v in schema.items() if k != "allOf"}
    for part in parts:
        sub = _merged(resolve(part, root), root)
        for key, value in sub.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _type_of(schema: JsonDict) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        return next((t for t in declared if t != "null"), "null")
    if isinstance(declared, str):
        return declared
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _bounded(value: float, schema: JsonDict, *, integer: bool) -> float:
    low = schema.get("minimum")
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        low = schema["exclusiveMinimum"] + (1 if integer else 0.5)
    high = schema.get("maximum")
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        high = schema["exclusiveMaximum"] - (1 if integer else 0.5)
    if isinstance(low, int | float) and value < low:
        value = math.ceil(low) if integer else low
    if isinstance(high, int | float) and value > high:
        value = math.floor(high) if integer else high
    return value


def _string(schema: JsonDict, name: str, index: int) -> str:
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, "") if isinstance(fmt, str) else ""
    if not text:
        text = f"sim {name}".strip() if name else "sim"
        if index:
            text = f"{text} {index}"  # distinct array items satisfy uniqueItems
    min_len, max_len = schema.get("minLength"), schema.get("maxLength")
    if isinstance(min_len, int) and len(text) < min_len:
        text += "x" * (min_len - len(text))
    if isinstance(max_len, int) and len(text) > max_len:
        text = text[:max_len]
    return text


def _value(schema: object, root: object, depth: int, name: str, index: int = 0) -> Any:
    node = _merged(resolve(schema, root), root)
    if "const" in node:
        return node["const"]
    if isinstance(node.get("enum"), list) and node["enum"]:
        return node["enum"][0]
    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if isinstance(branches, list) and branches:
            concrete = [b for b in branches if resolve(b, root).get("type") != "null"] or branches
            return _value(concrete[0], root, depth, name, index)
    kind = _type_of(node)
    if depth > MAX_DEPTH or kind == "null":
        return None
    if kind == "object":
        return _object(node, root, depth)
    if kind == "array":
        return _array(node, root, depth, name)
    if kind == "integer":
        return int(_bounded(1 + index, node, integer=True))
    if kind == "number":
        return _bounded(1.5 + index, node, integer=False)
    if kind == "boolean":
        return True
    return _string(node, name, index)


def _object(node: JsonDict, root: object, depth: int) -> JsonDict:
    declared_properties = node.get("properties")
    properties = declared_properties if isinstance(declared_properties, dict) else {}
    required = [r for r in node.get("required") or () if isinstance(r, str)]
    out: JsonDict = {}
    for key, sub in properties.items():
        if depth < FULL_DEPTH or key in required:
            out[key] = _value(sub, root, depth + 1, key)
    for key in required:
        if key not in out:
            out[key] = _value(node.get("additionalProperties", {}), root, depth + 1, key)
    return out


def _array(node: JsonDict, root: object, depth: int, name: str) -> list[Any]:
    prefix = node.get("prefixItems")
    if isinstance(prefix, list):
        return [_value(sub, root, depth + 1, name, i) for i, sub in enumerate(prefix)]
    declared_min = node.get("minItems")
    min_items = declared_min if isinstance(declared_min, int) else 0
    count = max(min_items, 1 if depth < FULL_DEPTH else 0)
    if isinstance(node.get("maxItems"), int):
        count = min(count, node["maxItems"])
    return [_value(node.get("items", {}), root, depth + 1, name, i) for i in range(count)]


def instance(schema: object) -> Any:
    """A value conforming to ``schema``: every property near the top, ``required`` ones at any depth."""
    return _value(schema, schema, 0, "")


_WRONG: dict[str, Any] = {
    "string": 12345,
    "integer": "not an integer",
    "number": "not a number",
    "boolean": "not a boolean",
    "array": "not an array",
    "object": "not an object",
    "null": "not null",
}


def invalid_instance(schema: object) -> JsonDict:
    """Valid JSON that breaks ``schema``: every required property missing, optional ones mistyped.

    Always an object (an Anthropic tool input must be one). It fails validation unless the
    schema requires nothing, types none of its properties and allows extra keys.
    """
    node = _merged(resolve(schema, schema), schema)
    declared_properties = node.get("properties")
    properties = declared_properties if isinstance(declared_properties, dict) else {}
    required = set(node.get("required") or ())
    out: JsonDict = {INVALID_MARKER: True}
    for key, sub in properties.items():
        if key in required:
            continue
        declared = resolve(sub, schema)
        if isinstance(declared.get("enum"), list):
            out[key] = "__not_in_enum__"
        elif isinstance(declared.get("type"), str):
            out[key] = _WRONG.get(declared["type"])
    return out
