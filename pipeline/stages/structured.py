"""Structured-output check: does an answer satisfy the request's `response_format`?

Providers are asked for JSON (LiteLLM passes `response_format` on), but a model may still
answer with text, or with JSON that misses the schema; the call stage treats that as a failed
attempt (`invalid_structured_output`): one retry on the same model, then the fallback chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from pipeline.contracts.models import ResponseFormat
from pipeline.transport.provider import ProviderResponse


@dataclass(frozen=True, slots=True)
class StructuredCheck:
    parsed: Any = None
    problem: str | None = None  # None: the answer is acceptable

    @property
    def ok(self) -> bool:
        return self.problem is None


@lru_cache(maxsize=256)
def _validator(schema_json: bytes) -> Any:
    from jsonschema import validators

    schema = orjson.loads(schema_json)
    return validators.validator_for(schema)(schema)


def check_structured(response_format: ResponseFormat | None, content: str | None) -> StructuredCheck:
    """Parse and validate `content`; a plain-text format (or none) accepts anything."""
    if response_format is None or not response_format.wants_json:
        return StructuredCheck()
    if content is None or not content.strip():
        return StructuredCheck(problem="the answer is empty, not JSON")
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        return StructuredCheck(problem=f"the answer is not JSON: {exc}")
    if response_format.type == "json_object":
        if not isinstance(parsed, dict):
            return StructuredCheck(parsed, f"the answer is JSON {type(parsed).__name__}, not an object")
        return StructuredCheck(parsed)
    assert response_format.json_schema is not None
    schema = response_format.json_schema.json_schema
    validator = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    errors = sorted(validator.iter_errors(parsed), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "<root>"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return StructuredCheck(parsed, f"the answer does not match schema {response_format.json_schema.name!r}: "
                                       f"{where}: {first.message}{more}")
    return StructuredCheck(parsed)


def check_answer(response_format: ResponseFormat | None, response: ProviderResponse) -> StructuredCheck:
    """The answer against `response_format`, every choice of an `n` > 1 answer included (a
    caller asking for several schema-valid answers must get only those): the first choice's
    parsed value, or the first problem found, naming its choice. A choice that calls tools is
    the answer's alternative to content: nothing to validate as JSON."""
    first = check_structured(None if response.tool_calls else response_format, response.content)
    if not first.ok:
        return first
    for choice in response.choices[1:]:
        other = check_structured(None if choice.tool_calls else response_format, choice.content)
        if not other.ok:
            return StructuredCheck(first.parsed, f"choice {choice.index}: {other.problem}")
    return first
