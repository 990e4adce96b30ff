"""Routing and budgets end to end: real Kafka, simulator via LiteLLM, chDB, Redis where shared."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from pipeline.catalog import load_catalog
from pipeline.client import PipelineClient
from pipeline.contracts.models import CompletionRequest, ErrorCode, SkipReason
from tests.integration.kafka_helpers import eventually

pytestmark = pytest.mark.kafka
REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"

ONE_MODEL_ROUTES = """
routes:
  summarize: {candidates: [sim-gpt-4o-mini]}
default: {candidates: [sim-gpt-4o-mini]}
cost_controls:
  tenants:
    tiny: {daily_usd: 0.0001}
"""


def config_dir(tmp_path: Path, routing: str) -> Path:
    d = tmp_path / "config"
    d.mkdir(exist_ok=True)
    shutil.copy(REPO_CONFIG / "models.yaml", d / "models.yaml")
    (d / "routing.yaml").write_text(routing)
    return d


def req(request_id: str, task: str = "summarize", **kw: object) -> CompletionRequest:
    return CompletionRequest(request_id=request_id, task_type=task,
                             messages=[{"role": "user", "content": f"short text {request_id}"}], **kw)


async def test_skipped_candidates_are_explained_in_reply_and_usage_row(settings, start_worker) -> None:
    worker = await start_worker()
    async with PipelineClient(settings) as client:
        reply = await client.complete(req("vision-1", "describe-image"), timeout=30)
        long_reply = await client.complete(
            CompletionRequest(request_id="long-1", task_type="summarize", max_tokens=10,
                              messages=[{"role": "user", "content": "word " * 130_000}]), timeout=60)
    assert reply.status == "ok" and reply.model == "sim-gpt-4o-mini"
    assert [(s.model, s.reason, s.detail) for s in reply.routing.skipped] == [
        ("sim-llama", SkipReason.MISSING_CAPABILITY, "vision")]
    # 130k tokens: too long for gpt-4o-mini's 128k window, fine for haiku's 200k.
    assert long_reply.model == "sim-claude-haiku"
    assert [(s.model, s.reason) for s in long_reply.routing.skipped] == [
        ("sim-gpt-4o-mini", SkipReason.CONTEXT_TOO_LONG)]
    db = settings.clickhouse_database
    rows = await eventually(lambda: worker.store.query(
        f"SELECT request_id, route_skipped FROM {db}.llm_usage FINAL "
        f"WHERE (SELECT count() FROM {db}.llm_usage) = 2 ORDER BY request_id"))
    assert dict(rows) == {"long-1": ["sim-gpt-4o-mini:context_too_long"],
                          "vision-1": ["sim-llama:missing_capability"]}


async def test_tight_max_cost_picks_the_cheaper_model(settings, start_worker) -> None:
    await start_worker()
    async with PipelineClient(settings) as client:
        reply = await client.complete(req("thrifty", "reason", max_tokens=200, max_cost_usd=0.0015), timeout=30)
    # gpt-4o (~0.002 USD for 200 tokens) is over the ceiling; haiku (~0.001) fits.
    assert reply.status == "ok" and reply.model == "sim-claude-haiku"
    assert [(s.model, s.reason) for s in reply.routing.skipped] == [("sim-gpt-4o", SkipReason.OVER_COST_CEILING)]


async def test_exhausted_tenant_budget_refuses_while_others_are_served(settings, start_worker, tmp_path) -> None:
    catalog = load_catalog(config_dir(tmp_path, ONE_MODEL_ROUTES))
    await start_worker(catalog=catalog)
    async with PipelineClient(settings) as client:
        tiny = [await client.complete(req(f"tiny-{i}", tenant="tiny", max_tokens=100), timeout=30)
                for i in range(8)]
        other = await client.complete(req("other-1", tenant="other", max_tokens=100), timeout=30)
    statuses = [r.status for r in tiny]
    assert statuses[0] == "ok" and "error" in statuses
    refused = [r for r in tiny if r.status == "error"]
    assert all(r.error.code == ErrorCode.BUDGET_EXCEEDED for r in refused)
    assert "tenant tiny daily budget" in refused[0].error.message
    assert refused[0].attempts == [] and refused[0].routing.skipped[0].reason == SkipReason.BUDGET_EXCEEDED
    assert sum(r.cost_usd for r in tiny) <= 0.0001
    assert other.status == "ok"


async def test_concurrent_requests_never_overspend_a_small_budget(settings, start_worker, tmp_path, sim) -> None:
    await sim.configure(latency_ms=200)
    catalog = load_catalog(config_dir(tmp_path, ONE_MODEL_ROUTES.replace("0.0001", "0.0005")))
    await start_worker(catalog=catalog)
    async with PipelineClient(settings) as client:
        replies = await asyncio.gather(*(client.complete(req(f"c-{i}", tenant="tiny", max_tokens=100), timeout=60)
                                         for i in range(60)))
    ok = [r for r in replies if r.status == "ok"]
    refused = [r for r in replies if r.status == "error"]
    assert ok and refused and all(r.error.code == ErrorCode.BUDGET_EXCEEDED for r in refused)
    # Reservations hold each estimate while calls run, so actual spend stays under the limit.
    assert sum(r.cost_usd for r in ok) <= 0.0005


async def test_budget_alert_is_published_once_per_window(settings, start_worker, tmp_path) -> None:
    from tests.integration.kafka_helpers import read_topic

    routing = ONE_MODEL_ROUTES.replace("tiny: {daily_usd: 0.0001}", "alerty: {daily_usd: 0.001}") + \
        "  alert_threshold: 0.01\n"
    await start_worker(catalog=load_catalog(config_dir(tmp_path, routing)))
    async with PipelineClient(settings) as client:
        for i in range(3):
            assert (await client.complete(req(f"a-{i}", tenant="alerty"), timeout=30)).status == "ok"
    alerts = await read_topic(settings.kafka_bootstrap_servers, settings.topic_alerts, count=1, settle_s=1.0)
    import orjson

    budgets = sorted(orjson.loads(a.value)["budget"] for a in alerts)
    assert budgets == ["tenant alerty daily"]


async def test_config_edit_takes_effect_and_a_broken_edit_is_rejected(settings, start_worker, tmp_path) -> None:
    cfg = config_dir(tmp_path, ONE_MODEL_ROUTES)
    worker = await start_worker(reload_config=True, config_dir=cfg, config_reload_interval_s=0.1)
    async with PipelineClient(settings) as client:
        before = await client.complete(req("cfg-1"), timeout=30)
        (cfg / "routing.yaml").write_text(
            ONE_MODEL_ROUTES.replace("[sim-gpt-4o-mini]}\ndefault", "[sim-llama]}\ndefault")
        )
        await eventually(lambda: _true(worker.live_catalog.reloads == 1))
        after = await client.complete(req("cfg-2"), timeout=30)
        (cfg / "routing.yaml").write_text("routes:\n  summarize: {candidates: [no-such-model]}\n")
        await eventually(lambda: _true(worker.live_catalog.rejected == 1))
        still = await client.complete(req("cfg-3"), timeout=30)
    assert (before.model, after.model, still.model) == ("sim-gpt-4o-mini", "sim-llama", "sim-llama")
    assert "no-such-model" in worker.live_catalog.last_error


async def _true(value: bool) -> bool:
    return value


async def test_spend_survives_a_worker_restart(settings, start_worker, tmp_path) -> None:
    catalog = load_catalog(config_dir(tmp_path, ONE_MODEL_ROUTES))
    first = await start_worker(catalog=catalog)
    async with PipelineClient(settings) as client:
        replies = [await client.complete(req(f"s-{i}", tenant="tiny", max_tokens=20), timeout=30) for i in range(3)]
    spent = sum(r.cost_usd for r in replies)
    db = settings.clickhouse_database
    await eventually(lambda: first.store.query(f"SELECT count() FROM {db}.llm_usage FINAL HAVING count() = 3"))
    await first.stop()
    second = await start_worker(catalog=catalog)  # a fresh in-process ledger, restored from ClickHouse
    from datetime import UTC, datetime

    key = f"tenant=tiny:daily:{datetime.now(UTC):%Y-%m-%d}"
    (restored,) = await second.state.budgets.values([key])
    assert restored == pytest.approx(spent * 1e6, abs=3)


@pytest.mark.parametrize("model, litellm_name", [
    ("sim-gpt-4o-mini", "gpt-4o-mini"), ("sim-gpt-4o", "gpt-4o"), ("sim-claude-haiku", "claude-haiku-4-5"),
])
async def test_recorded_cost_matches_the_price_map(settings, start_worker, model: str, litellm_name: str) -> None:
    import litellm

    await start_worker()
    async with PipelineClient(settings) as client:
        reply = await client.complete(req(f"cost-{model}", model=model), timeout=30)
    prompt_cost, completion_cost = litellm.cost_per_token(
        model=litellm_name, prompt_tokens=reply.usage.prompt_tokens, completion_tokens=reply.usage.completion_tokens)
    assert reply.cost_usd == pytest.approx(prompt_cost + completion_cost, rel=0.01)
    assert reply.cost_usd > 0


async def test_recorded_cost_uses_the_catalog_price_override(settings, start_worker, tmp_path) -> None:
    d = config_dir(tmp_path, "default: {candidates: [priced]}\n")
    (d / "models.yaml").write_text(
        "models:\n  priced:\n    litellm_model: ollama_chat/llama3.1\n"
        "    api_base: ${PIPELINE_SIMULATOR_URL}\n    price: {input_per_mtok: 3.0, output_per_mtok: 7.0}\n")
    await start_worker(catalog=load_catalog(d))
    async with PipelineClient(settings) as client:
        reply = await client.complete(req("priced-1"), timeout=30)
    expected = reply.usage.prompt_tokens * 3.0e-6 + reply.usage.completion_tokens * 7.0e-6
    assert reply.cost_usd == pytest.approx(expected, rel=0.01) and reply.cost_usd > 0


@pytest.mark.slow
async def test_two_worker_processes_sharing_redis_respect_one_budget(settings, sim, redis_url, tmp_path) -> None:
    """Each worker alone would allow the whole budget; through Redis they share it."""
    import signal

    from pipeline.contracts.models import CompletionReply
    from pipeline.transport.kafka import ensure_topics
    from tests.integration.kafka_helpers import encode, produce, request_doc
    from tests.integration.test_crash_rebalance import (
        collect_replies,
        start_worker_process,
        worker_env,
    )

    await sim.configure(latency_ms=300)
    cfg = config_dir(tmp_path, ONE_MODEL_ROUTES.replace("0.0001", "0.0003"))
    await ensure_topics(settings,
                        [settings.topic_requests, settings.topic_replies, settings.topic_usage], partitions=4)
    n = 100
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests,
                  [(f"k{i}".encode(), encode(request_doc(f"shared-{i}", tenant="tiny", max_tokens=100)))
                   for i in range(n)])
    env = worker_env(settings, redis_url, PIPELINE_CONFIG_DIR=str(cfg))
    workers = [await start_worker_process(env, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        replies = await collect_replies(settings.kafka_bootstrap_servers, settings.topic_replies, n,
                                        timeout_s=120, settle_s=1)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            await asyncio.wait_for(w.wait(), 30)
    parsed = [CompletionReply.model_validate_json(values[0][0]) for values in replies.values()]
    assert len(parsed) == n
    ok = [r for r in parsed if r.status == "ok"]
    assert ok and len(ok) < n
    assert all(r.error.code == ErrorCode.BUDGET_EXCEEDED for r in parsed if r.status == "error")
    assert sum(r.cost_usd for r in ok) <= 0.0003
