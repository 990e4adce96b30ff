"""Operators' view: metrics that move with traffic, health and readiness endpoints, JSON logs."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest

from pipeline.client import PipelineClient
from pipeline.contracts.models import CompletionRequest
from tests.integration.kafka_helpers import eventually, header, read_topic

pytestmark = pytest.mark.kafka


def sample(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include `labels` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def scrape(port: int) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"http://127.0.0.1:{port}/metrics")).text


async def test_metrics_move_when_requests_flow(settings, start_worker, sim) -> None:
    worker = await start_worker()
    port = worker.http.port
    before = await scrape(port)
    await sim.add_rule({"model": "gpt-4o-mini", "fault": "auth", "times": 1})
    async with PipelineClient(settings) as client:
        for i in range(3):
            reply = await client.complete(CompletionRequest(
                request_id=f"m{i}", task_type="summarize", tenant="metrics-co",
                messages=[{"role": "user", "content": "count me"}]), timeout=30)
            assert reply.status == "ok"
        await client.publish_raw(b"not json at all")
    await asyncio.sleep(0.5)
    after = await scrape(port)
    delta = lambda name, **labels: sample(after, name, **labels) - sample(before, name, **labels)  # noqa: E731
    assert delta("llm_requests_total", task_type="summarize", status="ok") == 3
    assert delta("llm_attempts_total", model="sim-gpt-4o-mini", provider="openai", outcome="error",
                 error_code="auth_error") == 1
    assert delta("llm_fallbacks_total", model="sim-claude-haiku") == 1
    assert delta("llm_tokens_total", tenant="metrics-co", kind="prompt") > 0
    assert delta("llm_cost_usd_total", tenant="metrics-co") > 0
    assert delta("llm_cost_usd_total", model="sim-claude-haiku", provider="anthropic", tenant="metrics-co") > 0
    assert delta("llm_provider_latency_seconds_count", model="sim-gpt-4o-mini") == 3
    assert delta("llm_request_duration_seconds_count", task_type="summarize") == 3
    assert delta("llm_dead_letters_total", reason="invalid_json") == 1
    assert sample(after, "llm_budget_remaining_usd", budget="tenant metrics-co daily", period="daily") > 0
    assert "llm_in_flight_requests" in after

    async def lag_reported() -> bool:
        return f'group="{settings.consumer_group}"' in await scrape(port)

    await eventually(lag_reported, timeout_s=15)


async def test_health_and_readiness(settings, start_worker) -> None:
    worker = await start_worker()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.http.port}") as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "broker": "connected", "config": "loaded", "clickhouse": "reachable"}


@pytest.mark.slow
async def test_readiness_flips_when_the_broker_goes_away(settings, sim, tmp_path) -> None:
    from pipeline.catalog import load_catalog
    from pipeline.local.apache_kafka import ApacheKafka
    from pipeline.worker.app import create_worker

    kafka = ApacheKafka(work_dir=tmp_path / "kafka")
    await asyncio.to_thread(kafka.start)
    worker = create_worker(settings.model_copy(update={"kafka_bootstrap_servers": kafka.bootstrap_servers}),
                           catalog=load_catalog(settings.config_dir), with_sink=False)
    await worker.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.http.port}", timeout=10) as http:
            assert (await http.get("/readyz")).status_code == 200
            kafka.kill()

            async def not_ready() -> bool:
                response = await http.get("/readyz")
                return response.status_code == 503 and response.json()["broker"] == "unreachable"

            await eventually(not_ready, timeout_s=30, interval_s=1)
            assert (await http.get("/healthz")).status_code == 200  # alive, just not ready
            await asyncio.to_thread(kafka.restart)

            async def ready_again() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await eventually(ready_again, timeout_s=60, interval_s=1)
    finally:
        await worker.stop()
        await asyncio.to_thread(kafka.stop)


#: A prompt nobody else would write: wherever it turns up, the prompt leaked there.
PROMPT_MARKER = "zq-PROMPT-MARKER-7f3a91c2"


async def test_json_log_lines_carry_request_context_and_no_prompt(settings, start_worker, sim, json_logs) -> None:
    """A request that is answered, one that falls back, one whose every candidate fails and one
    refused by validation, each carrying the marker in its prompt: the JSON log lines name the
    request's context, and the marker appears in no log line, no metric, no reply, no usage event
    or usage row and no dead-letter header (a dead letter's value is the original record, on purpose)."""
    worker = await start_worker()
    messages = [  # the simulator quotes the last user turn back: that one carries no marker
        {"role": "system", "content": f"system prompt {PROMPT_MARKER}"},
        {"role": "user", "content": f"earlier turn {PROMPT_MARKER}"},
        {"role": "assistant", "content": f"earlier answer {PROMPT_MARKER}"},
        {"role": "user", "content": "and now?"},
    ]
    replies = {}
    async with PipelineClient(settings) as client:
        replies["np-ok"] = await client.complete(CompletionRequest(
            request_id="np-ok", task_type="summarize", tenant="np-co", messages=messages), timeout=30)
        await sim.add_rule({"model": "gpt-4o-mini", "fault": "auth", "times": 1})
        replies["np-fallback"] = await client.complete(CompletionRequest(
            request_id="np-fallback", task_type="summarize", tenant="np-co", messages=messages), timeout=30)
        await sim.add_rule({"model": "gpt-4o-mini", "fault": "auth"})
        await sim.add_rule({"model": "claude-haiku-4-5", "fault": "auth"})
        replies["np-failed"] = await client.complete(CompletionRequest(
            request_id="np-failed", task_type="summarize", tenant="np-co", messages=messages), timeout=30)
        invalid = {"request_id": "np-invalid", "task_type": "summarize", "messages": messages, "temperature": "hot"}
        waiter = await client.publish_raw(json.dumps(invalid).encode(), expect_request_id="np-invalid")
        replies["np-invalid"] = await asyncio.wait_for(waiter, 30)
    assert {rid: r.status for rid, r in replies.items()} == {
        "np-ok": "ok", "np-fallback": "ok", "np-failed": "error", "np-invalid": "error"}
    assert replies["np-fallback"].model == "sim-claude-haiku"
    assert "sim reply" in (replies["np-ok"].content or "")  # the provider was really called

    db = settings.clickhouse_database
    rows = await eventually(lambda: worker.store.query(
        f"SELECT * FROM {db}.llm_usage FINAL WHERE (SELECT count(DISTINCT request_id) FROM {db}.llm_usage) = 3"),
        timeout_s=30)
    bootstrap = settings.kafka_bootstrap_servers
    reply_records = await read_topic(bootstrap, settings.topic_replies, count=None, timeout_s=30)
    usage_records = await read_topic(bootstrap, settings.topic_usage, count=None, timeout_s=30)
    (dead,) = await read_topic(bootstrap, settings.topic_dlq, count=1, timeout_s=30)
    assert header(dead, "dlq_request_id") == "np-invalid" and PROMPT_MARKER.encode() in dead.value
    metrics_text = await scrape(worker.http.port)
    await worker.stop()  # its last log lines too
    log_text = json_logs.getvalue()

    # The log lines are JSON and carry the request's context.
    docs = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    (served,) = [d for d in docs if d.get("request_id") == "np-ok"]
    assert served["tenant"] == "np-co" and served["task_type"] == "summarize" and served["model"] == "sim-gpt-4o-mini"
    assert served["status"] == "ok" and served["level"] == "info" and re.match(r"\d{4}-\d\d-\d\dT", served["ts"])
    assert any("schema_invalid: temperature" in d["message"] for d in docs)  # the rejection, with its reason

    # ...and nowhere is the prompt.
    outputs = {
        "log output": log_text,
        "metrics": metrics_text,
        "reply records": " ".join(r.value.decode() for r in reply_records),
        "usage events": " ".join(r.value.decode() for r in usage_records),
        "usage rows": repr(rows),
        "dead-letter headers": repr(dead.headers),
    }
    assert len(reply_records) == 4 and len(usage_records) >= 5 and len(log_text) > 0
    leaks = {where: text.count(PROMPT_MARKER) for where, text in outputs.items() if PROMPT_MARKER in text}
    assert leaks == {}, f"the prompt text leaked into: {leaks}"
