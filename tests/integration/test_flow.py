"""The whole flow on real Apache Kafka, the provider simulator (via LiteLLM) and chDB."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipeline.contracts.models import CompletionReply, ErrorCode
from tests.integration.kafka_helpers import (
    encode,
    eventually,
    header,
    produce,
    read_topic,
    request_doc,
)

pytestmark = pytest.mark.kafka


async def usage_rows(worker, sql_tail: str = "") -> list[tuple]:
    db = worker.settings.clickhouse_database
    return await worker.store.query(
        f"SELECT request_id, attempt, model, status, error_code, is_fallback, cost_usd, total_tokens "
        f"FROM {db}.llm_usage FINAL {sql_tail} ORDER BY request_id, attempt"
    )


def replies_by_id(records) -> dict[str, CompletionReply]:
    return {r.request_id: r for r in (CompletionReply.model_validate_json(x.value) for x in records)}


async def test_n_requests_give_n_replies_and_n_usage_rows(settings, start_worker, sim) -> None:
    worker = await start_worker()
    tasks = ["summarize", "classify", "extract", "reason", "unrouted-task"]
    n = 60
    ids = [f"req-{i:03d}" for i in range(n)]
    await produce(
        settings.kafka_bootstrap_servers,
        settings.topic_requests,
        [(f"key-{i}".encode(), encode(request_doc(rid, tasks[i % len(tasks)], tenant=f"t{i % 3}",
                                                   metadata={"i": i})))
         for i, rid in enumerate(ids)],
    )
    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=n, settle_s=1.0)
    assert len(records) == n
    replies = replies_by_id(records)
    assert sorted(replies) == ids
    for record in records:
        reply = CompletionReply.model_validate_json(record.value)
        assert header(record, "correlation_id") == reply.request_id
        assert record.key == f"key-{int(reply.request_id[4:])}".encode()  # the request's key
        assert reply.status == "ok" and reply.content and reply.usage.total_tokens > 0
        assert reply.metadata == {"i": int(reply.request_id[4:])}
    # Task types went to their routes' primaries (each answered first time).
    assert replies["req-000"].model == "sim-gpt-4o-mini"   # summarize
    assert replies["req-001"].model == "sim-llama"         # classify
    assert replies["req-002"].model == "sim-claude-haiku"  # extract
    assert replies["req-003"].model == "sim-gpt-4o"        # reason
    assert replies["req-004"].model == "sim-gpt-4o-mini"   # default route
    rows = await eventually(lambda: _rows_if(worker, n))
    assert sorted(r[0] for r in rows) == ids
    assert sum(r[6] for r in rows) == pytest.approx(Decimal(str(sum(r.cost_usd for r in replies.values()))),
                                                    abs=Decimal("1e-8"))
    # The simulator saw exactly one call per request.
    assert len(await sim.requests()) == n


async def _rows_if(worker, n: int):
    rows = await usage_rows(worker)
    return rows if len(rows) >= n else None


async def test_bad_input_is_dead_lettered_and_the_worker_moves_on(settings, start_worker) -> None:
    await start_worker(max_message_bytes=4096)
    huge = request_doc("too-big", messages=[{"role": "user", "content": "x" * 8000}])
    bad = [
        (b"k-notjson", b"{this is not json"),
        (b"k-schema", encode({"request_id": "schema-bad", "task_type": "summarize", "messages": [{"role": "x"}]})),
        (b"k-empty", encode({"request_id": "empty-msgs", "task_type": "summarize", "messages": []})),
        (b"k-huge", encode(huge)),
        (b"k-good", encode(request_doc("good-after-bad"))),
    ]
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests, bad)
    dlq = await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq, count=4, settle_s=1.0)
    assert len(dlq) == 4
    by_key = {r.key: r for r in dlq}
    assert header(by_key[b"k-notjson"], "dlq_reason") == "invalid_json"
    assert by_key[b"k-notjson"].value == b"{this is not json"  # original bytes, unchanged
    assert header(by_key[b"k-schema"], "dlq_reason") == "schema_invalid"
    assert "messages.0.role" in header(by_key[b"k-schema"], "dlq_detail")
    assert header(by_key[b"k-empty"], "dlq_reason") == "schema_invalid"
    assert header(by_key[b"k-huge"], "dlq_reason") == "too_large"
    for record in dlq:
        assert header(record, "dlq_source_topic") == settings.topic_requests
        assert int(header(record, "dlq_source_partition")) == record_partition_of(record, bad)
        assert int(header(record, "dlq_source_offset")) >= 0
    replies = replies_by_id(
        await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=4, settle_s=1.0)
    )
    assert set(replies) == {"schema-bad", "empty-msgs", "too-big", "good-after-bad"}
    assert replies["schema-bad"].error.code == ErrorCode.SCHEMA_INVALID
    assert replies["empty-msgs"].error.code == ErrorCode.SCHEMA_INVALID
    assert "messages" in replies["empty-msgs"].error.message
    assert replies["too-big"].error.code == ErrorCode.TOO_LARGE
    assert replies["good-after-bad"].status == "ok"


def record_partition_of(record, produced) -> int:
    """Dead-letter headers name the source partition; the default partitioner hashes the key."""
    from aiokafka.partitioner import DefaultPartitioner

    return DefaultPartitioner()(record.key, list(range(4)), list(range(4)))


async def test_reply_to_allowed_and_refused(settings, start_worker) -> None:
    await start_worker()
    custom = settings.topic_replies + ".default.team-a"  # the default {replies}.{tenant}.* pattern, tenant default
    from pipeline.transport.kafka import ensure_topics

    await ensure_topics(settings, [custom], partitions=2)
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests, [
        (b"a", encode(request_doc("to-custom", reply_to=custom))),
        (b"b", encode(request_doc("to-forbidden", reply_to="payments.commands"))),
    ])
    custom_replies = replies_by_id(await read_topic(settings.kafka_bootstrap_servers, custom, count=1))
    assert custom_replies["to-custom"].status == "ok"
    default_replies = replies_by_id(
        await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=1, settle_s=0.5)
    )
    assert list(default_replies) == ["to-forbidden"]
    assert default_replies["to-forbidden"].error.code == ErrorCode.REPLY_TOPIC_NOT_ALLOWED


async def test_explicit_model_is_honoured(settings, start_worker, sim) -> None:
    await start_worker()
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests,
                  [(b"k", encode(request_doc("explicit", "summarize", model="sim-claude-haiku")))])
    (record,) = await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=1)
    reply = CompletionReply.model_validate_json(record.value)
    assert reply.model == "sim-claude-haiku" and reply.provider == "anthropic" and len(reply.attempts) == 1
    calls = await sim.requests()
    assert [(c["api"], c["model"]) for c in calls] == [("anthropic", "claude-haiku-4-5")]


async def test_failed_primary_falls_back_and_both_attempts_are_recorded(settings, start_worker, sim) -> None:
    worker = await start_worker()
    await sim.add_rule({"model": "gpt-4o-mini", "fault": "server_error", "status": 503})
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests,
                  [(b"k", encode(request_doc("fallback-1", "summarize")))])
    (record,) = await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=1)
    reply = CompletionReply.model_validate_json(record.value)
    assert reply.status == "ok" and reply.model == "sim-claude-haiku"
    # The primary is retried twice (transient 5xx policy), then the next candidate answers.
    assert [(a.model, a.outcome, a.error_code) for a in reply.attempts] == [
        ("sim-gpt-4o-mini", "error", ErrorCode.SERVER_ERROR)] * 3 + [("sim-claude-haiku", "ok", None)]
    assert [(c["model"], c["status"]) for c in await sim.requests()] == [("gpt-4o-mini", 503)] * 3 + [
        ("claude-haiku-4-5", 200)]
    rows = await eventually(lambda: _rows_if(worker, 4))
    assert [(r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
        (1, "sim-gpt-4o-mini", "error", "server_error", False),
        (2, "sim-gpt-4o-mini", "error", "server_error", False),
        (3, "sim-gpt-4o-mini", "error", "server_error", False),
        (4, "sim-claude-haiku", "ok", "", True),
    ]
    assert sum(r[6] for r in rows[:3]) == 0 and rows[3][6] > 0


async def test_every_candidate_failing_gives_an_error_reply(settings, start_worker, sim) -> None:
    worker = await start_worker()
    await sim.add_rule({"model": "gpt-4o-mini", "fault": "rate_limit", "retry_after_s": 0.2})
    await sim.add_rule({"model": "claude-haiku-4-5", "fault": "auth"})
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests,
                  [(b"k", encode(request_doc("doomed", "summarize", metadata={"step": 7})))])
    (record,) = await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=1)
    reply = CompletionReply.model_validate_json(record.value)
    assert reply.status == "error" and reply.error.code == ErrorCode.ALL_CANDIDATES_FAILED
    # 429s are retried after Retry-After (twice), the auth error is not retried at all.
    assert [a.error_code for a in reply.attempts] == [ErrorCode.RATE_LIMITED] * 3 + [ErrorCode.AUTH_ERROR]
    assert reply.metadata == {"step": 7} and reply.content is None
    rows = await eventually(lambda: _rows_if(worker, 4))
    assert [(r[3], r[4]) for r in rows] == [("error", "rate_limited")] * 3 + [("error", "auth_error")]


async def test_unknown_model_and_missing_route_get_error_replies(settings, start_worker, tmp_path) -> None:
    from pipeline.catalog import load_catalog

    (tmp_path / "models.yaml").write_text((settings.config_dir / "models.yaml").read_text())
    (tmp_path / "routing.yaml").write_text("routes:\n  summarize: {candidates: [sim-gpt-4o-mini]}\n")
    await start_worker(catalog=load_catalog(tmp_path))
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests, [
        (b"a", encode(request_doc("unknown-model", model="gpt-99"))),
        (b"b", encode(request_doc("no-route", "poetry"))),
    ])
    replies = replies_by_id(await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=2))
    assert replies["unknown-model"].error.code == ErrorCode.UNKNOWN_MODEL
    assert "gpt-99" in replies["unknown-model"].error.message
    assert replies["no-route"].error.code == ErrorCode.NO_ROUTE


async def test_api_keys_never_leave_the_process(
    settings, start_worker, sim, simulator, tmp_path, monkeypatch, caplog,
) -> None:
    from pipeline.catalog import load_catalog

    secret = "sk-test-TOPSECRET-0123456789abcdef"
    monkeypatch.setenv("SIM_TEST_API_KEY", secret)
    (tmp_path / "models.yaml").write_text(
        "models:\n  keyed:\n    litellm_model: openai/gpt-4o-mini\n"
        f"    api_base: {simulator.url}/v1\n    api_key_env: SIM_TEST_API_KEY\n"
    )
    (tmp_path / "routing.yaml").write_text("default: {candidates: [keyed]}\n")
    worker = await start_worker(catalog=load_catalog(tmp_path))
    await sim.add_rule({"model": "gpt-4o-mini", "fault": "auth", "times": 1})
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests,
                  [(b"a", encode(request_doc("auth-fails"))), (b"a", encode(request_doc("auth-ok")))])
    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=2)
    replies = replies_by_id(records)
    assert replies["auth-fails"].error.code == ErrorCode.AUTH_ERROR
    assert replies["auth-ok"].status == "ok"
    calls = await sim.requests()
    assert all(c["key_present"] for c in calls)  # the key was sent to the provider...
    rows = await eventually(lambda: _rows_if(worker, 2))
    usage = await read_topic(settings.kafka_bootstrap_servers, settings.topic_usage, count=2)
    # ...and appears in no reply, usage event, usage row or log line.
    for blob in [r.value for r in records] + [u.value for u in usage] + [repr(rows).encode(),
                                                                         caplog.text.encode()]:
        assert secret.encode() not in blob and b"TOPSECRET" not in blob
    assert "please handle auth-ok" not in caplog.text  # no prompt text in logs either
