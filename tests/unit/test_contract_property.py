"""One contract: the worker accepts a request exactly when the published JSON Schema does.

Requests are generated from `schemas/completion_request.schema.json` itself (hypothesis-jsonschema)
and mutated (wrong types, nulls, numbers as strings, deleted fields); any document that one side
accepts and the other rejects fails the test. The schema is read as a producer in another
language reads it: the committed file, a stock Draft 2020-12 validator, `date-time` as RFC 3339.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator, FormatChecker

from pipeline.contracts.models import ErrorCode
from pipeline.contracts.wire_rules import is_rfc3339
from pipeline.stages.validate import Rejection, validate_request

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "completion_request.schema.json").read_text())
_checker = FormatChecker(formats=())
_checker.checks("date-time")(is_rfc3339)
PUBLISHED = Draft202012Validator(SCHEMA, format_checker=_checker)
FIELDS = sorted(SCHEMA["properties"])
# Documents are drawn from the schema's field types only (its cross-field rules left out): drawing
# them to satisfy every if/then/not would be rejection sampling, far too slow. So roughly half the
# drawn documents break a cross-field rule, and both verdicts, accept and reject, get exercised.
SHAPES = {k: v for k, v in SCHEMA.items() if k != "allOf"}
CHECKS = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


def schema_accepts(doc: Any) -> bool:
    return PUBLISHED.is_valid(doc)


def worker_accepts(doc: Any) -> bool:
    """The worker's contract verdict (later checks, such as the reply-topic allow-list, aside)."""
    result = validate_request(json.dumps(doc).encode(), max_bytes=1 << 30, reply_topic_allowed=lambda _, __: True)
    return not (isinstance(result, Rejection) and result.code in (ErrorCode.SCHEMA_INVALID, ErrorCode.INVALID_JSON))


def assert_one_truth(doc: Any) -> None:
    schema, worker = schema_accepts(doc), worker_accepts(doc)
    verdict = {True: "accepts", False: "rejects"}
    assert schema == worker, f"schema {verdict[schema]}, worker {verdict[worker]}: {doc!r}"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8) | st.sampled_from(["true", "0", "1", "", "2026-12-02T10:00:00Z", "llm.replies.x bad"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@given(from_schema(SHAPES))
@CHECKS
def test_requests_drawn_from_the_schema_get_the_same_verdict_from_both(doc: dict[str, Any]) -> None:
    assert_one_truth(doc)


@given(from_schema(SCHEMA["allOf"][0]["else"]["else"]["oneOf"][0] | SHAPES))  # neither embedding nor rerank
@CHECKS
def test_completion_requests_with_messages_get_the_same_verdict_from_both(doc: dict[str, Any]) -> None:
    assert_one_truth(doc)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = dict(draw(from_schema(SHAPES)))
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()) and field in doc:
            del doc[field]
        else:
            doc[field] = draw(json_values)
    return doc


@given(mutated())
@CHECKS
@example({"request_id": "r", "task_type": "t", "messages": [{"role": "user", "content": "x"}], "max_tokens": True})
@example({"request_id": "r", "task_type": "t", "messages": [{"role": "user", "content": "x"}], "stream": "true"})
@example({"request_id": "r", "task_type": "t", "messages": [{"role": "user", "content": "x"}], "cache": 0})
@example({"request_id": "r", "task_type": "t", "messages": [{"role": "user", "content": "x"}], "temperature": "0"})
@example({"request_id": "r", "task_type": "t", "messages": [{"role": "user", "content": "x"}], "deadline_at": 17e8})
@example({"request_id": "r", "task_type": "t", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1e308})
@example({"request_id": "r", "task_type": "t", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5.0})
@example({"request_id": "r", "task_type": "t", "messages": None, "template": "summarize-ticket"})
@example({"request_id": "r", "task_type": "t", "kind": "embedding", "input": "a string"})
@example({"request_id": "r", "task_type": "t", "kind": "embedding", "input": "a", "tools": None})
@example({"request_id": "r", "task_type": "t", "kind": "rerank", "query": "q", "documents": ["a", "b"], "top_n": 1})
@example({"request_id": "r", "task_type": "t", "kind": "rerank", "query": "q", "documents": ["a"], "stream": True})
@example({"request_id": "r", "task_type": "t", "kind": "rerank", "query": "q", "documents": None})
@example({"request_id": "r", "task_type": "t", "kind": "rerank", "query": "q", "documents": ["a"], "input": "x"})
@example({"request_id": "r", "task_type": "t", "kind": "embedding", "input": "a", "query": "q"})
@example({"request_id": "r", "task_type": "t", "messages": [{"role": "user", "content": "x"}], "top_n": 2})
@example({"request_id": "r", "task_type": "t", "messages": [{"role": "user", "content": "x"}],
          "reply_to": "llm.replies.x bad"})
@example({"request_id": "r", "task_type": "t", "messages": [{"role": "user", "content": "x"}], "reply_to": "r" * 250})
@example({"request_id": "r", "task_type": "t", "messages": [{"role": "user", "content": "x"}], "reply_to": ".."})
def test_mutated_requests_get_the_same_verdict_from_both(doc: dict[str, Any]) -> None:
    assert_one_truth(doc)


@pytest.mark.parametrize("doc", [
    {"request_id": "r", "task_type": "t", "messages": [{"role": "user", "content": "x"}], "max_tokens": True},
    {"request_id": "r", "task_type": "t", "messages": [{"role": "user", "content": "x"}], "deadline_at": 17e8},
    {"request_id": "r", "task_type": "t", "messages": [{"role": "user", "content": "x"}], "reply_to": "a b"},
])
def test_what_the_fuzzing_found_is_now_refused_by_both(doc: dict[str, Any]) -> None:
    assert not schema_accepts(doc) and not worker_accepts(doc)
