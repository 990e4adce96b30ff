"""Nothing is shared across tenants, on real Kafka and the provider simulator: idempotency, reply
topics and the response cache."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.contracts.models import CompletionReply, ErrorCode
from pipeline.transport.kafka import ensure_topics
from tests.integration.kafka_helpers import encode, eventually, header, produce, read_topic, request_doc

pytestmark = pytest.mark.kafka


async def _send(settings: Any, *docs: dict[str, Any]) -> None:
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests,
                  [(d["request_id"].encode(), encode(d)) for d in docs])


async def _replies(settings: Any, topic: str, count: int, settle_s: float = 0.5) -> list[CompletionReply]:
    records = await read_topic(settings.kafka_bootstrap_servers, topic, count=count, settle_s=settle_s)
    return [CompletionReply.model_validate_json(r.value) for r in records]


async def _chat_calls(sim: Any) -> int:
    return len([r for r in await sim.requests() if r["kind"] == "chat"])


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_the_same_request_id_from_two_tenants_gets_two_answers(
    settings, start_worker, sim, redis_url, backend,
) -> None:
    overrides: dict[str, Any] = {}
    if backend == "redis":
        overrides = {"redis_url": redis_url, "redis_namespace": f"iso-{settings.consumer_group}"}
    await start_worker(**overrides)
    await _send(settings, request_doc("order-1", tenant="alpha", metadata={"who": "alpha"}))
    (alpha,) = await _replies(settings, settings.topic_replies, 1, settle_s=0)
    await _send(settings, request_doc("order-1", tenant="beta", metadata={"who": "beta"}))
    first, beta = await _replies(settings, settings.topic_replies, 2)
    assert first == alpha and alpha.status == beta.status == "ok"
    assert (alpha.metadata, beta.metadata) == ({"who": "alpha"}, {"who": "beta"})  # beta's own answer
    assert await _chat_calls(sim) == 2  # one provider call each
    # alpha's redelivery/retry still gets alpha's stored answer, with no third call
    await _send(settings, request_doc("order-1", tenant="alpha", metadata={"who": "alpha-retry"}))
    replies = await _replies(settings, settings.topic_replies, 3)
    assert replies[2] == alpha and await _chat_calls(sim) == 2


async def test_a_tenant_cannot_reply_into_another_tenants_reply_topic(settings, start_worker, sim) -> None:
    alpha_topic = f"{settings.topic_replies}.alpha"
    await ensure_topics(settings, [alpha_topic], partitions=1)
    await start_worker()
    await _send(settings,
                request_doc("beta-hijack", tenant="beta", reply_to=alpha_topic),
                request_doc("alpha-own", tenant="alpha", reply_to=alpha_topic),
                request_doc("other-deployment", tenant="alpha", reply_to="llm.replies"))
    (own,) = await _replies(settings, alpha_topic, 1)  # only alpha's own reply reached alpha's topic
    assert own.request_id == "alpha-own" and own.status == "ok"
    errors = {r.request_id: r for r in await _replies(settings, settings.topic_replies, 2)}
    assert set(errors) == {"beta-hijack", "other-deployment"}
    assert all(r.error is not None and r.error.code == ErrorCode.REPLY_TOPIC_NOT_ALLOWED for r in errors.values())
    dead = await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq, count=2, settle_s=0.5)
    assert sorted(header(d, "dlq_request_id") or "" for d in dead) == ["beta-hijack", "other-deployment"]
    assert {header(d, "dlq_reason") for d in dead} == {"reply_topic_not_allowed"}
    assert await _chat_calls(sim) == 1  # the refused requests reached no provider


async def test_the_workers_own_topics_are_never_reply_topics(settings, start_worker, sim) -> None:
    await start_worker(allowed_reply_topics="llm.*")  # patterns that would allow every test topic
    await _send(settings,
                request_doc("to-usage", tenant="alpha", reply_to=settings.topic_usage),
                request_doc("to-requests", tenant="alpha", reply_to=settings.topic_requests),
                request_doc("to-alerts", tenant="alpha", reply_to=settings.topic_alerts))
    errors = {r.request_id: r for r in await _replies(settings, settings.topic_replies, 3)}
    assert set(errors) == {"to-usage", "to-requests", "to-alerts"}
    assert all(r.error is not None and r.error.code == ErrorCode.REPLY_TOPIC_NOT_ALLOWED for r in errors.values())
    dead = await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq, count=3, settle_s=0.5)
    assert {header(d, "dlq_reason") for d in dead} == {"reply_topic_not_allowed"}
    requests = await read_topic(settings.kafka_bootstrap_servers, settings.topic_requests, count=None)
    assert len(requests) == 3  # the three requests, no reply among them
    await ensure_topics(settings, [settings.topic_usage], partitions=1)
    assert await read_topic(settings.kafka_bootstrap_servers, settings.topic_usage, count=None) == []
    assert await _chat_calls(sim) == 0


async def _usage(worker: Any, request_id: str) -> list[tuple]:
    db = worker.settings.clickhouse_database
    return await worker.store.query(
        f"SELECT tenant, cache_hit, shared_cache_hit, cost_usd FROM {db}.llm_usage FINAL "
        f"WHERE request_id = %(r)s ORDER BY attempt", {"r": request_id})


SAME = {"messages": [{"role": "user", "content": "what is a consumer group?"}], "temperature": 0}


async def test_the_response_cache_is_per_tenant_by_default(settings, start_worker, sim) -> None:
    await start_worker(response_cache="memory")
    await _send(settings, request_doc("a-1", tenant="alpha", **SAME))
    await _replies(settings, settings.topic_replies, 1, settle_s=0)
    await _send(settings, request_doc("b-1", tenant="beta", **SAME), request_doc("a-2", tenant="alpha", **SAME))
    replies = {r.request_id: r for r in await _replies(settings, settings.topic_replies, 3)}
    assert not replies["b-1"].cached and replies["b-1"].cost_usd > 0  # beta never gets alpha's answer
    assert replies["a-2"].cached and replies["a-2"].cost_usd == 0  # alpha's own answer, free
    assert await _chat_calls(sim) == 2


async def test_a_shared_response_cache_serves_other_tenants_and_books_the_hit(settings, start_worker, sim) -> None:
    worker = await start_worker(response_cache="memory", response_cache_scope="shared")
    await _send(settings, request_doc("a-1", tenant="alpha", **SAME))
    (first,) = await _replies(settings, settings.topic_replies, 1, settle_s=0)
    await _send(settings, request_doc("b-1", tenant="beta", **SAME))
    hit = {r.request_id: r for r in await _replies(settings, settings.topic_replies, 2)}["b-1"]
    assert hit.cached and hit.content == first.content and await _chat_calls(sim) == 1
    assert hit.cost_usd == pytest.approx(first.cost_usd) and hit.cost_usd > 0  # what the call would have cost
    rows = await eventually(lambda: _usage(worker, "b-1"), timeout_s=30)
    assert [(r[0], r[1], r[2]) for r in rows] == [("beta", True, True)]
    assert float(rows[0][3]) == pytest.approx(first.cost_usd)
    (origin,) = await eventually(lambda: _usage(worker, "a-1"), timeout_s=30)
    assert origin[:3] == ("alpha", False, False)
