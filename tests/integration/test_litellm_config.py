"""A LiteLLM Proxy config served by the worker: Azure, OpenAI and Anthropic (all on the simulator),
with retries, cooldowns and fallbacks as the config sets them, and each attempt recorded under the
provider and deployment that served it, in replies and usage rows."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import yaml

from pipeline.client import PipelineClient
from pipeline.contracts.models import CompletionRequest, ErrorCode, SkipReason

pytestmark = pytest.mark.kafka


def litellm_config(tmp_path: Path) -> Path:
    sim = os.environ["PIPELINE_SIMULATOR_URL"]
    config = {
        "model_list": [
            # One model on two providers; Azure is all but certain to be picked first.
            {"model_name": "gpt-4o", "litellm_params": {
                "model": "azure/eu-gpt4o", "api_base": sim, "api_version": "2024-10-21",
                "api_key": "os.environ/H1_AZURE_KEY", "weight": 1000},
             "model_info": {"id": "azure-eu", "base_model": "azure/gpt-4o"}},
            {"model_name": "gpt-4o", "litellm_params": {
                "model": "openai/gpt-4o", "api_base": f"{sim}/v1", "weight": 0.001}},
            {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-haiku-4-5", "api_base": sim}},
        ],
        "router_settings": {
            "num_retries": 1, "allowed_fails": 0, "cooldown_time": 60,
            "fallbacks": [{"gpt-4o": ["claude"]}], "redis_host": "localhost",
        },
        "general_settings": {"master_key": "sk-proxy-master"},
    }
    path = tmp_path / "litellm" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def req(request_id: str) -> CompletionRequest:
    return CompletionRequest(request_id=request_id, task_type="chat", model="gpt-4o",
                             messages=[{"role": "user", "content": "hello"}])


async def usage_rows(worker, ids: list[str], count: int) -> list[tuple]:
    db = worker.settings.clickhouse_database
    sql = (f"SELECT request_id, attempt, model, deployment, provider, status FROM {db}.llm_usage FINAL "
           f"WHERE request_id IN ({', '.join(repr(i) for i in ids)}) ORDER BY request_id, attempt")
    for _ in range(100):
        rows = await worker.store.query(sql)
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.2)
    raise AssertionError(f"only {len(rows)} of {count} usage rows arrived")


async def test_a_litellm_config_serves_with_its_retries_cooldowns_and_fallbacks(
    settings, start_worker, sim, tmp_path, monkeypatch,
) -> None:
    monkeypatch.setenv("H1_AZURE_KEY", "az-key-integration")
    config = litellm_config(tmp_path)
    worker = await start_worker(reload_config=True, config_dir=config.parent, litellm_config=config)
    assert worker.live_catalog is not None
    assert any("redis_host" in w for w in worker.live_catalog().warnings)  # reported by name at start-up
    await sim.add_rule({"api": "azure", "fault": "server_error", "status": 503})
    async with PipelineClient(settings) as client:
        # Azure fails and cools down at once (allowed_fails 0); the retry goes to the OpenAI deployment.
        first = await client.complete(req("ll-1"), timeout=30)
        # Azure is cooling down: OpenAI serves without another Azure call.
        second = await client.complete(req("ll-2"), timeout=30)
        await sim.add_rule({"api": "openai", "fault": "server_error", "status": 503})
        # Both deployments down: gpt-4o's configured fallback answers.
        third = await client.complete(req("ll-3"), timeout=30)
    assert first.status == "ok" and first.provider == "openai"
    assert [(a.deployment, a.provider, a.error_code) for a in first.attempts] == [
        ("gpt-4o@azure-eu", "azure", ErrorCode.SERVER_ERROR), ("gpt-4o@openai", "openai", None)]
    assert [(a.deployment, a.provider) for a in second.attempts] == [("gpt-4o@openai", "openai")]
    assert third.status == "ok" and third.model == "claude" and third.provider == "anthropic"
    assert [(a.model, a.provider) for a in third.attempts] == [("gpt-4o", "openai"), ("claude", "anthropic")]
    assert any(s.model == "gpt-4o" and s.reason == SkipReason.COOLING_DOWN for s in third.routing.skipped)
    calls = [(c["api"], c["model"]) for c in await sim.requests()]
    assert calls == [("azure", "eu-gpt4o"), ("openai", "gpt-4o"), ("openai", "gpt-4o"), ("openai", "gpt-4o"),
                     ("anthropic", "claude-haiku-4-5")]
    rows = await usage_rows(worker, ["ll-1", "ll-3"], 4)
    assert [(r[0], r[2], r[3], r[4], r[5]) for r in rows] == [
        ("ll-1", "gpt-4o", "gpt-4o@azure-eu", "azure", "error"),
        ("ll-1", "gpt-4o", "gpt-4o@openai", "openai", "ok"),
        ("ll-3", "gpt-4o", "gpt-4o@openai", "openai", "error"),
        ("ll-3", "claude", "claude", "anthropic", "ok"),
    ]
