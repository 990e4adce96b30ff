"""Operators' view: metrics that move with traffic, health and readiness endpoints, JSON logs."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import httpx
import pytest

from pipeline.client import PipelineClient
from pipeline.contracts.models import CompletionRequest
from tests.integration.kafka_helpers import eventually

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
    assert delta("llm_attempts_total", model="sim-gpt-4o-mini", outcome="error", error_code="auth_error") == 1
    assert delta("llm_fallbacks_total", model="sim-claude-haiku") == 1
    assert delta("llm_tokens_total", tenant="metrics-co", kind="prompt") > 0
    assert delta("llm_cost_usd_total", tenant="metrics-co") > 0
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


def test_json_log_lines_carry_request_context_and_no_prompt(capsys) -> None:
    from pipeline.observability.logs import configure_logging

    configure_logging("INFO", "json")
    logging.getLogger("pipeline.worker.handler").info(
        "request %s -> ok", "r-7", extra={"request_id": "r-7", "tenant": "acme", "task_type": "summarize",
                                          "model": "sim-llama"})
    line = capsys.readouterr().err.strip().splitlines()[-1]
    doc = json.loads(line)
    assert doc["request_id"] == "r-7" and doc["tenant"] == "acme" and doc["model"] == "sim-llama"
    assert doc["level"] == "info" and re.match(r"\d{4}-\d\d-\d\dT", doc["ts"])
    configure_logging("INFO", "text")
