"""`pipeline check`: can this process reach everything it needs? One row per dependency."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

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
    from pipeline.transport.connect_errors import KafkaConnectError
    from pipeline.transport.kafka import kafka_admin, pipeline_topics

    where = f"{settings.kafka_bootstrap_servers} ({settings.kafka_security_protocol}" + (
        f", {settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username})"
        if settings.kafka_sasl_mechanism else ")")
    try:
        async with asyncio.timeout(8), kafka_admin(settings, request_timeout_ms=5000) as admin:
            topics = set(await admin.list_topics())
    except KafkaConnectError as exc:  # names the cause, never the password
        return CheckResult("kafka", False, str(exc))
    except Exception as exc:
        return CheckResult("kafka", False, f"{where}: {type(exc).__name__}: {exc}")
    missing = [t for t in pipeline_topics(settings) if t not in topics]
    detail = f"{where}: {len(topics)} topics visible"
    if missing:
        detail += f"; missing {missing}" + (" (created at start)" if settings.create_topics else "")
    return CheckResult("kafka", not missing or settings.create_topics, detail)


async def _clickhouse(settings: Settings) -> CheckResult:
    from pipeline.transport.clickhouse import ClickHouseUsageStore
    from pipeline.urls import mask_url, redact

    password = settings.clickhouse_password.get_secret_value()
    shown = mask_url(settings.clickhouse_url)
    try:
        store = ClickHouseUsageStore.from_settings(settings)
    except ValueError as exc:  # a malformed URL; the message names the scheme only
        return CheckResult("clickhouse", False, f"{shown}: {redact(str(exc), (password,))}")
    try:
        (version,), = await asyncio.wait_for(store.query("SELECT version()"), 35)
        return CheckResult("clickhouse", True, f"{shown}: ClickHouse {version}")
    except Exception as exc:
        detail = redact(f"{type(exc).__name__}: {str(exc)[:200]}", (password,))
        return CheckResult("clickhouse", False, f"{shown}: {detail}")
    finally:
        store.close()


async def _redis(settings: Settings) -> CheckResult:
    if not settings.redis_url:
        return CheckResult("redis", True, "not configured: state is in-process (one worker)")
    from pipeline.state.redis_client import connect_from_settings, describe_redis_error
    from pipeline.urls import mask_url

    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    try:
        client = connect_from_settings(settings)
    except Exception as exc:  # a malformed URL: redis-py's message may quote it
        return CheckResult("redis", False, describe_redis_error(exc, settings.redis_url, password))
    try:
        await asyncio.wait_for(client.ping(), 5)
        return CheckResult("redis", True, f"{mask_url(settings.redis_url)}: PING ok")
    except Exception as exc:
        return CheckResult("redis", False, describe_redis_error(exc, settings.redis_url, password))
    finally:
        await client.aclose()


def _secrets(catalog: Any, settings: Settings) -> CheckResult:
    """Every enabled deployment's key reference resolves now; failures named, values never shown."""
    from pipeline.catalog.secrets import SecretSources

    sources = SecretSources.from_settings(settings)
    missing, keyed = [], 0
    for spec in catalog.models.values():
        for d in () if spec.disabled else spec.deployments:
            if d.key_source() is not None:
                keyed += 1
                try:
                    d.api_key(sources)
                except LookupError as exc:  # SecretNotFound: names the reference only
                    missing.append(f"{d.name}: {exc.args[0]}")
            try:  # credentials among the pass-through litellm_params (aws_secret_access_key, ...)
                d.call_params(sources)
            except LookupError as exc:
                missing.append(f"{d.name} litellm_params: {exc.args[0]}")
    if missing:
        return CheckResult("secrets", False, "; ".join(missing))
    return CheckResult("secrets", True, f"{keyed} key references resolve")


async def _endpoint(name: str, url: str) -> CheckResult:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(url)
        return CheckResult(name, True, f"{url}: HTTP {response.status_code}")
    except Exception as exc:
        return CheckResult(name, False, f"{url}: {type(exc).__name__}")


async def run_checks(settings: Settings) -> list[CheckResult]:
    from pipeline.catalog import ConfigError, load_catalog, models_source

    try:
        catalog = load_catalog(settings.config_dir, settings.litellm_config)
    except ConfigError as exc:
        return [CheckResult("config", False, str(exc))]
    source = models_source(settings.config_dir, settings.litellm_config)
    results = [CheckResult("config", True, f"{source}: {len(catalog.models)} models, "
                                           f"{len(catalog.routing.routes)} routes")]
    # What a LiteLLM config held that does not map: one row each, named; the check still passes.
    results += [CheckResult("config warning", True, w) for w in catalog.warnings]
    endpoints: dict[str, str] = {}
    for spec in catalog.models.values():
        if spec.disabled:
            continue
        for d in spec.deployments:
            url = d.api_base or DEFAULT_ENDPOINTS.get(d.provider)
            if url:
                endpoints.setdefault(url, f"provider {d.provider}")
    results.append(_secrets(catalog, settings))
    checks = [_kafka(settings), _clickhouse(settings), _redis(settings)]
    checks += [_endpoint(name, url) for url, name in endpoints.items()]
    return results + list(await asyncio.gather(*checks))
