"""How the client builds requests from keywords (no broker: nothing is started)."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from pipeline.client import PipelineClient, ProcessResult
from pipeline.contracts.models import CompletionReply, CompletionRequest, ReplyStatus, Usage
from pipeline.settings import Settings

SETTINGS = Settings(kafka_bootstrap_servers="127.0.0.1:1", topic_replies="llm.replies")


async def test_keywords_become_a_validated_request_with_a_fresh_id() -> None:
    client = PipelineClient(SETTINGS)
    first = client.build_request(messages=[{"role": "user", "content": "hi"}], task_type="summarize",
                                 tenant="acme", max_cost_usd=0.01, temperature=0.2)
    second = client.build_request(messages=[{"role": "user", "content": "hi"}])
    assert first.task_type == "summarize" and first.tenant == "acme" and first.max_cost_usd == 0.01
    assert first.temperature == 0.2 and first.request_id != second.request_id and second.task_type == "default"
    assert first.reply_to is None  # the shared reply topic: no reply_to needed
    with pytest.raises(ValidationError, match="needs messages or template"):
        client.build_request(task_type="summarize")
    with pytest.raises(TypeError, match="either a CompletionRequest or keyword fields"):
        client.build_request(first, messages=[{"role": "user", "content": "x"}])


async def test_a_dedicated_reply_topic_goes_into_every_request() -> None:
    client = PipelineClient(SETTINGS, reply_topic="llm.replies.billing-1")
    built = client.build_request(messages=[{"role": "user", "content": "hi"}], request_id="r1")
    assert built.reply_to == "llm.replies.billing-1" and built.request_id == "r1"
    elsewhere = CompletionRequest.model_validate({"request_id": "r2", "task_type": "t", "reply_to": "llm.replies.x",
                                                  "messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(ValueError, match=re.escape("reads 'llm.replies.billing-1', not 'llm.replies.x'")):
        client.build_request(elsewhere)


def test_process_result_is_the_slim_view_of_a_reply() -> None:
    reply = CompletionReply(request_id="r", status=ReplyStatus.OK, content="fine", model="m",
                            usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3), finish_reason="stop")
    result = ProcessResult.of(reply)
    assert (result.content, result.model, result.usage.total_tokens, result.finish_reason, result.ok) == \
        ("fine", "m", 3, "stop", True)
