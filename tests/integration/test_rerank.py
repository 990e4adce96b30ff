"""Rerank end to end: a `kind: rerank` request through real Apache Kafka and the worker, routed to the
`rerank` task's candidates (config/routing.yaml), whose first model fails at the simulator's Cohere
endpoint; it falls back to the second, the reply carries the ranked results, and the usage events
and rows record both attempts (kind rerank), priced per search unit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.contracts.models import AttemptOutcome, CompletionReply, RequestKind, UsageEvent
from pipeline.simulator import FaultRule
from tests.integration.kafka_helpers import encode, eventually, produce, read_topic

pytestmark = pytest.mark.kafka

PER_QUERY_USD = 0.002  # LiteLLM's input_cost_per_query of cohere/rerank-v4.0-fast (one search unit)


async def test_a_rerank_falls_back_and_both_attempts_are_recorded(settings: Any, start_worker: Any, sim: Any) -> None:
    worker = await start_worker()
    await sim.set_rules([FaultRule(api="cohere", model="rerank-v3.5", fault="server_error", status=503, times=10)])
    doc = {"request_id": "rerank-fallback", "task_type": "rerank", "kind": "rerank", "query": "red apple",
           "documents": ["a green pear", "one red apple", "a red car"], "top_n": 2}
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests, [(b"rerank-fallback", encode(doc))])

    (record,) = await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=1, timeout_s=30)
    reply = CompletionReply.model_validate(json.loads(record.value))
    assert reply.status == "ok", reply.error
    assert reply.model == "sim-rerank-fast"
    assert [(r.index, r.relevance_score) for r in reply.results or ()] == [(1, 1.0), (2, 0.5)]
    assert reply.cost_usd == pytest.approx(PER_QUERY_USD)
    assert [a.model for a in reply.attempts][-1] == "sim-rerank-fast"
    assert {e["model"] for e in await sim.requests()} == {"rerank-v3.5", "rerank-v4.0-fast"}

    records = await eventually(lambda: _usage(settings, "rerank-fallback", len(reply.attempts)), timeout_s=30)
    events = [UsageEvent.model_validate(json.loads(r.value)) for r in records]
    assert {e.kind for e in events} == {RequestKind.RERANK}
    failed, answered = [e for e in events if e.model == "sim-rerank"], [e for e in events if e.is_final]
    assert failed and all(e.status is AttemptOutcome.ERROR and e.http_status == 503 and e.cost_usd == 0
                          for e in failed)
    (final,) = answered
    assert (final.model, final.status, final.is_fallback) == ("sim-rerank-fast", AttemptOutcome.OK, True)
    assert final.cost_usd == pytest.approx(PER_QUERY_USD) and final.attributes == {"search_units": "1"}

    db = worker.settings.clickhouse_database

    async def stored() -> list[tuple[Any, ...]] | None:
        rows = await worker.store.query(
            f"SELECT model, status, kind, cost_usd FROM {db}.llm_usage FINAL WHERE request_id = %(r)s "
            "ORDER BY attempt", {"r": "rerank-fallback"})
        return rows if len(rows) >= len(events) else None

    rows = await eventually(stored, timeout_s=30)
    events.sort(key=lambda e: e.attempt)
    assert [(m, s, k) for m, s, k, _ in rows] == [(e.model, e.status.value, "rerank") for e in events]
    assert float(rows[-1][3]) == pytest.approx(PER_QUERY_USD, rel=1e-6)


async def _usage(settings: Any, request_id: str, count: int) -> list[Any] | None:
    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_usage, count=count, timeout_s=10)
    mine = [r for r in records if json.loads(r.value)["request_id"] == request_id]
    return mine if len(mine) >= count else None
