"""`pipeline check`: can this process reach everything it needs? One row per dependency."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pipeline.settings import Settings

#: Where each LiteLLM provider prefix answers when a catalog entry sets no api_base.
DEFAULT_ENDPOINTS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "ollama": "http://127.0.0.1:11434",
    "ollama_chat": "http://127.0.0.1:11434",
}


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


async def _kafka(settings: Settings) -> CheckResult:
    from aiokafka.admin import AIOKafkaAdminClient

    from pipeline.transport.kafka import pipeline_topics

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 8)
        topics = set(await admin.list_topics())
    except Exception as exc:
        return CheckResult("kafka", False, f"{settings.kafka_bootstrap_servers}: {type(exc).__name__}: {exc}")
    finally:
        await admin.close()
    missing = [t for t in pipeline_topics(settings) if t not in topics]
    detail = f"{settings.kafka_bootstrap_servers}: {len(topics)} topics"
    if missing:
        detail += f"; missing {missing}" + (" (created at start)" if settings.create_topics else "")
    return CheckResult("kafka", not missing or settings.create_topics, detail)


async def _clickhouse(settings: Settings) -> CheckResult:
    from pipeline.transport.clickhouse import ClickHouseUsageStore

    store = ClickHouseUsageStore.from_settings(settings)
    try:
        (version,), = await asyncio.wait_for(store.query("SELECT version()"), 35)
        return CheckResult("clickhouse", True, f"{settings.clickhouse_url.split('@')[-1]}: ClickHouse {version}")
    except Exception as exc:
        return CheckResult("clickhouse", False, f"{type(exc).__name__}: {str(exc)[:200]}")
    finally:
        store.close()


async def _redis(settings: Settings) -> CheckResult:
    if not settings.redis_url:
        return CheckResult("redis", True, "not configured: state is in-process (one worker)")
    from pipeline.state.redis_client import connect

    client = connect(settings.redis_url)
    try:
        await asyncio.wait_for(client.ping(), 5)
        return CheckResult("redis", True, "PING ok")
    except Exception as exc:
        return CheckResult("redis", False, f"{type(exc).__name__}: {exc}")
    finally:
        await client.aclose()


async def _endpoint(name: str, url: str) -> CheckResult:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(url)
        return CheckResult(name, True, f"{url}: HTTP {response.status_code}")
    except Exception as exc:
        return CheckResult(name, False, f"{url}: {type(exc).__name__}")


async def run_checks(settings: Settings) -> list[CheckResult]:
    from pipeline.catalog import ConfigError, load_catalog

    try:
        catalog = load_catalog(settings.config_dir)
    except ConfigError as exc:
        return [CheckResult("config", False, str(exc))]
    results = [CheckResult("config", True, f"{len(catalog.models)} models, {len(catalog.routing.routes)} routes")]
    endpoints: dict[str, str] = {}
    for spec in catalog.models.values():
        if spec.disabled:
            continue
        for d in spec.deployments:
            url = d.api_base or DEFAULT_ENDPOINTS.get(d.litellm_model.split("/", 1)[0])
            if url:
                endpoints.setdefault(url, f"provider {d.litellm_model.split('/', 1)[0]}")
    checks = [_kafka(settings), _clickhouse(settings), _redis(settings)]
    checks += [_endpoint(name, url) for url, name in endpoints.items()]
    return results + list(await asyncio.gather(*checks))
