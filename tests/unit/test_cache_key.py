"""Response cache key: equal for requests a model answers identically, different otherwise."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from pipeline.contracts.models import CompletionRequest
from pipeline.stages.cache import cache_key, cacheable

MODEL = "sim-small"

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
                    "strict": True},
}
BASE: dict[str, Any] = {
    "request_id": "r1",
    "task_type": "summarize",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Summarise:  the  text.", "name": "alice"},
    ],
    "max_tokens": 100,
    "temperature": 0.2,
    "tools": TOOLS,
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "response_format": SCHEMA_FORMAT,
}


def req(**changes: Any) -> CompletionRequest:
    doc = {**BASE, **changes}
    return CompletionRequest.model_validate({k: v for k, v in doc.items() if v is not ...})


def key(**changes: Any) -> str:
    return cache_key(MODEL, req(**changes))


def _reversed(value: Any) -> Any:
    """The same JSON with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: _reversed(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed(v) for v in value]
    return value


def test_key_is_hex_sha256_and_deterministic() -> None:
    k = key()
    assert re.fullmatch(r"[0-9a-f]{64}", k)
    assert key() == k


def test_key_ignores_json_key_order_at_every_depth() -> None:
    forward = orjson.dumps(BASE)
    backward = orjson.dumps(_reversed(BASE))
    assert forward != backward
    a = CompletionRequest.model_validate_json(forward)
    b = CompletionRequest.model_validate_json(backward)
    assert cache_key(MODEL, a) == cache_key(MODEL, b)


@pytest.mark.parametrize(
    "changes",
    [
        {"request_id": "another-id"},
        {"metadata": {"trace": "x", "n": 1}},
        {"stream": True},
        {"cache": False},
        {"reply_to": "llm.replies.team-a"},
        {"deadline_ms": 5000},
        {"deadline_at": "2030-01-01T00:00:00Z"},
        {"task_type": "classify"},
        {"max_cost_usd": 0.5},
        {"model": "sim-large"},  # the requested name; the key takes the model that answers
    ],
)
def test_key_ignores_who_asked_and_how_the_answer_is_delivered(changes: dict[str, Any]) -> None:
    assert key(**changes) == key()


def test_message_none_fields_are_dropped() -> None:
    messages = [{"role": "system", "content": "Be brief.", "name": None},
                {"role": "user", "content": "Summarise:  the  text.", "name": "alice"}]
    assert key(messages=messages) == key()


@pytest.mark.parametrize(
    "changes",
    [
        {"messages": [{"role": "user", "content": "Summarise:  the  text.", "name": "alice"}]},  # one fewer
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Summarise: the text.", "name": "alice"}]},  # whitespace
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Summarise:  the  text.", "name": "bob"}]},  # an extra field
        {"messages": [{"role": "developer", "content": "Be brief."},
                      {"role": "user", "content": "Summarise:  the  text.", "name": "alice"}]},  # a role
        {"messages": [{"role": "user", "content": "Summarise:  the  text.", "name": "alice"},
                      {"role": "system", "content": "Be brief."}]},  # message order
        {"max_tokens": 101},
        {"max_tokens": ...},
        {"temperature": 0.3},
        {"temperature": ...},
        {"tools": [{**TOOLS[0], "function": {**TOOLS[0]["function"], "description": "Weather"}}]},
        {"tools": ..., "tool_choice": ...},
        {"tool_choice": "auto"},
        {"tool_choice": "required"},
        {"tool_choice": ...},
        {"response_format": {"type": "json_object"}},
        {"response_format": {**SCHEMA_FORMAT, "json_schema": {**SCHEMA_FORMAT["json_schema"], "strict": False}}},
        {"response_format": ...},
    ],
)
def test_key_changes_with_anything_that_changes_the_answer(changes: dict[str, Any]) -> None:
    assert key(**changes) != key()


def test_key_changes_with_the_model() -> None:
    assert cache_key("sim-large", req()) != cache_key(MODEL, req())


def test_temperature_none_and_zero_differ_but_zero_and_zero_point_zero_agree() -> None:
    none, zero = key(temperature=...), key(temperature=0)
    assert none != zero
    assert key(temperature=0.0) == zero


def test_embedding_key_covers_kind_and_input() -> None:
    def emb(**changes: Any) -> str:
        doc = {"request_id": "e1", "task_type": "embed", "kind": "embedding", "input": ["a", "b"], **changes}
        return cache_key(MODEL, CompletionRequest.model_validate(doc))

    assert emb() == emb(request_id="e2")
    assert emb(input="a") == emb(input=["a"])  # a string is one text
    assert emb(input=["b", "a"]) != emb()
    assert emb(input=["a", "b "]) != emb()
    chat = cache_key(MODEL, CompletionRequest.model_validate(
        {"request_id": "c1", "task_type": "embed", "messages": [{"role": "user", "content": "a"}]}))
    assert chat != emb(input=["a"])


def test_unrendered_template_has_no_key() -> None:
    templated = CompletionRequest.model_validate(
        {"request_id": "t1", "task_type": "t", "template": "greet", "variables": {"name": "Ann"}})
    with pytest.raises(ValueError, match="render"):
        cache_key(MODEL, templated)
    rendered = templated.model_copy(update={"messages": req().messages, "template": None, "variables": {}})
    plain = CompletionRequest.model_validate({"request_id": "p1", "task_type": "t", "messages": BASE["messages"]})
    assert cache_key(MODEL, rendered) == cache_key(MODEL, plain)  # the rendered messages carry the variables
    with pytest.raises(ValueError):
        cache_key("", req())


def test_cacheable() -> None:
    assert cacheable(req())
    assert cacheable(req(cache=True))
    assert not cacheable(req(cache=False))


def test_the_default_scope_keys_by_tenant_and_shared_does_not() -> None:
    """Scope `tenant` (the default): one tenant's answer is never another's; `shared` leaves the tenant out."""
    alpha, beta = req(tenant="alpha"), req(tenant="beta")
    assert cache_key(MODEL, alpha) != cache_key(MODEL, beta)
    assert cache_key(MODEL, alpha) == cache_key(MODEL, alpha, "tenant")
    assert cache_key(MODEL, alpha, "shared") == cache_key(MODEL, beta, "shared")
    assert cache_key(MODEL, alpha, "shared") != cache_key(MODEL, alpha)  # the two scopes never share entries
    assert cache_key(MODEL, req()) == cache_key(MODEL, req(tenant="default"))  # no tenant: the default one
    with pytest.raises(ValueError, match="scope"):
        cache_key(MODEL, alpha, "everyone")  # type: ignore[arg-type]
