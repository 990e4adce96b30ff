"""Validate stage: every kind of bad input gets a precise rejection; good input a request."""

import orjson
import pytest

from pipeline.contracts.models import CompletionRequest, ErrorCode
from pipeline.settings import Settings
from pipeline.stages.validate import Rejection, validate_request

ALLOWED = Settings(allowed_reply_topics="llm.replies*,team-a.replies").reply_topic_allowed


def check(doc: object, max_bytes: int = 10_000) -> CompletionRequest | Rejection:
    raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return validate_request(raw, max_bytes=max_bytes, reply_topic_allowed=ALLOWED)


GOOD = {"request_id": "r1", "task_type": "summarize", "messages": [{"role": "user", "content": "hi"}]}


def test_valid_request_gets_defaults() -> None:
    result = check(GOOD)
    assert isinstance(result, CompletionRequest)
    assert result.tenant == "default" and result.metadata == {} and result.schema_version == 1


def test_not_json_is_dead_lettered_without_reply() -> None:
    result = check(b"\x00\xffnot json")
    assert isinstance(result, Rejection)
    assert result.code is ErrorCode.INVALID_JSON and result.dead_letter and result.request_id is None


def test_tombstone_is_dead_lettered() -> None:
    result = validate_request(None, max_bytes=10, reply_topic_allowed=ALLOWED)
    assert isinstance(result, Rejection) and result.code is ErrorCode.INVALID_JSON


@pytest.mark.parametrize(
    "patch, fragment",
    [
        ({"messages": []}, "messages"),
        ({"task_type": None}, "task_type"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "role"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_schema_violations_name_the_field_and_keep_request_id(patch: dict, fragment: str) -> None:
    doc = {**GOOD, **patch, "metadata": {"trace": "t-1"}}
    doc = {k: v for k, v in doc.items() if v is not None}
    result = check(doc)
    assert isinstance(result, Rejection)
    assert result.code is ErrorCode.SCHEMA_INVALID and result.dead_letter
    assert fragment in result.detail
    assert result.request_id == "r1" and result.metadata == {"trace": "t-1"}


def test_schema_violation_without_readable_id_has_no_reply_target() -> None:
    result = check({"task_type": "x", "messages": [], "request_id": 42})
    assert isinstance(result, Rejection) and result.request_id is None


def test_schema_violation_replies_to_allowed_reply_to_only() -> None:
    ok = check({**GOOD, "messages": [], "reply_to": "team-a.replies"})
    bad = check({**GOOD, "messages": [], "reply_to": "payments"})
    assert isinstance(ok, Rejection) and ok.reply_to == "team-a.replies"
    assert isinstance(bad, Rejection) and bad.reply_to is None


def test_disallowed_reply_topic_is_refused_and_dead_lettered() -> None:
    result = check({**GOOD, "reply_to": "payments.commands"})
    assert isinstance(result, Rejection)
    assert result.code is ErrorCode.REPLY_TOPIC_NOT_ALLOWED and result.dead_letter
    assert result.reply_to is None and result.request_id == "r1"


def test_allowed_reply_topic_passes() -> None:
    result = check({**GOOD, "reply_to": "llm.replies.team-b"})
    assert isinstance(result, CompletionRequest) and result.reply_to == "llm.replies.team-b"


def test_too_large_is_dead_lettered_with_request_id() -> None:
    doc = {**GOOD, "messages": [{"role": "user", "content": "x" * 5000}]}
    result = check(doc, max_bytes=1000)
    assert isinstance(result, Rejection)
    assert result.code is ErrorCode.TOO_LARGE and result.dead_letter and result.request_id == "r1"


def test_too_large_and_not_json() -> None:
    result = check(b"{" * 2000, max_bytes=1000)
    assert isinstance(result, Rejection) and result.code is ErrorCode.TOO_LARGE


def test_json_that_utf8_or_a_float_cannot_carry_is_refused_with_a_reply_when_the_id_can_be_read() -> None:
    allow = lambda topic, tenant: True  # noqa: E731
    def base(rid: str, content: str, extra: str) -> str:
        return '{"request_id":' + rid + ',"task_type":"t","messages":[{"role":"user","content":' + content + "}]" \
            + extra + "}"

    big = validate_request(base('"r"', '"x"', ',"metadata":{"n":123456789012345678901234567890}').encode(),
                           max_bytes=10**6, reply_topic_allowed=allow)
    assert not isinstance(big, Rejection) and big.metadata == {"n": 123456789012345678901234567890}  # exact
    for raw, request_id in ((base('"r"', '"x"', ',"metadata":{"n":1e400}'), "r"),
                            (base('"r"', '"x\\ud800"', ""), "r"),
                            (base('"x\\udc00"', '"x"', ""), None)):  # no header may carry that id
        rejected = validate_request(raw.encode(), max_bytes=10**6, reply_topic_allowed=allow)
        assert isinstance(rejected, Rejection) and rejected.code is ErrorCode.INVALID_JSON and rejected.dead_letter
        assert rejected.request_id == request_id


def test_metadata_nested_deeper_than_the_stdlib_recursion_limit_is_too_large() -> None:
    deep = '{"a":' * 1010 + "1" + "}" * 1010
    raw = '{"request_id":"r","task_type":"t","messages":[{"role":"user","content":"x"}],"metadata":' + deep + "}"
    rejected = validate_request(raw.encode(), max_bytes=10**6, reply_topic_allowed=lambda topic, tenant: True)
    assert isinstance(rejected, Rejection) and rejected.code is ErrorCode.TOO_LARGE and rejected.request_id == "r"
