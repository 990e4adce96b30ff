"""Wiring: the request intake, the usage sink, and the Kafka publisher they share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.analytics.spend_restore import restore_spend
from pipeline.catalog import Catalog
from pipeline.catalog.live import LiveCatalog
from pipeline.catalog.secrets import SecretSources
from pipeline.observability import metrics, tracing
from pipeline.observability.http import HealthServer
from pipeline.settings import Settings
from pipeline.stages.budget import BudgetGuard
from pipeline.stages.deployments import DeploymentPool
from pipeline.state import SharedState, shared_state_from_settings
from pipeline.state.redis_client import check_credentials, is_redis_outage
from pipeline.transport.clickhouse import ClickHouseUsageStore, UsageStore
from pipeline.transport.kafka import (
    BrokerPublisher,
    build_consumer,
    ensure_topics,
    is_kafka_outage,
    pipeline_topics,
)
from pipeline.transport.kafka_intake import ConcurrentIntake, FailurePolicy, IntakeLimits
from pipeline.transport.llm import LiteLLMProvider
from pipeline.transport.provider import ProviderClient
from pipeline.transport.records import PublishRefused
from pipeline.worker.answer_cache import CachedAnswers
from pipeline.worker.handler import RequestHandler
from pipeline.worker.tenant_auth import request_subscription
from pipeline.worker.usage_sink import UsageSink

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """A running worker: request consumers, and optionally the usage sink, on one broker."""

    settings: Settings
    publisher: BrokerPublisher
    store: UsageStore | None = None
    intake: ConcurrentIntake | None = None
    state: SharedState | None = None
    live_catalog: LiveCatalog | None = None
    sink: UsageSink | None = None
    _owned_store: ClickHouseUsageStore | None = field(default=None, repr=False)
    _owned_provider: LiteLLMProvider | None = field(default=None, repr=False)
    _watcher: asyncio.Task[None] | None = field(default=None, repr=False)
    _lag_task: asyncio.Task[None] | None = field(default=None, repr=False)
    http: HealthServer | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    async def start(self) -> None:
        """Start every part; when one fails (KafkaConnectError names why), close what was opened."""
        try:
            await self._start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop()
            raise

    async def _start(self) -> None:
        if self.settings.create_topics:
            await ensure_topics(
                self.settings,
                pipeline_topics(self.settings),
                partitions=self.settings.topic_partitions,
                max_message_bytes=self.settings.record_limit_bytes,
            )
        if self.settings.tracing and not tracing.enable():
            log.warning(
                "PIPELINE_TRACING is set but OpenTelemetry is not installed (pip install llm-pipeline[tracing])"
            )
        await self._prepare_clickhouse()
        if self.state is not None and self.state.client is not None:
            await check_credentials(self.state.client, self.settings)  # a wrong password stops here
        await self.publisher.start()
        if self.live_catalog is not None and self.settings.config_reload_interval_s > 0:
            self._watcher = asyncio.create_task(self.live_catalog.watch(self.settings.config_reload_interval_s))
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not on the main thread / Windows
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.live_catalog.reload)
        if self.sink is not None:
            await self.sink.start()
        if self.intake is not None:
            await self.intake.start()
            intake = self.intake
            metrics.IN_FLIGHT.set_function(lambda: intake.in_flight)
        self._lag_task = asyncio.create_task(self._report_lag())
        if self.settings.http_port is not None:
            self.http = HealthServer(self.readiness, self.settings.http_host, self.settings.http_port)
            await self.http.start()
            consuming = self.intake.pattern if self.intake is not None and self.intake.pattern else None
            log.info("worker consuming %s as group %s", consuming or self.settings.topic_requests,
                     self.settings.consumer_group)

    async def _prepare_clickhouse(self) -> None:
        """Migrations and the budget restore. An unreachable ClickHouse does not stop the worker:
        requests are served, usage waits in Kafka, and the sink migrates before its first insert."""
        try:
            if self._owned_store is not None:
                applied = await self._owned_store.migrate()
                if applied:
                    log.info("applied ClickHouse migrations %s", applied)
            if self.state is not None and isinstance(self.store, ClickHouseUsageStore):
                await restore_spend(self.store, self.state.budgets)
        except Exception as exc:
            log.warning("ClickHouse unreachable at start-up (%s): serving requests, usage waits in Kafka", exc)

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: broker reachable and config loaded; ClickHouse reachable or usage buffering in Kafka."""
        broker_ok = await self.publisher.ping(timeout=2.0)
        details: dict[str, Any] = {"broker": "connected" if broker_ok else "unreachable", "config": "loaded"}
        if self.intake is not None and not self.intake.healthy:
            details["intake"] = f"stopped: {self.intake.failure!r}"
            return False, details
        if self.live_catalog is not None and self.live_catalog.last_error:
            details["config"] = f"loaded; last reload rejected: {self.live_catalog.last_error}"
        if self.sink is not None:
            details["clickhouse"] = "buffering (unreachable)" if self.sink.outage else "reachable"
        return broker_ok, details

    async def _report_lag(self, period_s: float = 5.0) -> None:
        """Consumer lag per assigned partition, for dashboards and autoscaling alerts."""
        consumers = []
        if self.intake is not None:
            consumers.append((self.settings.consumer_group, self.intake.consumer))
        if self.sink is not None:
            consumers.append((self.settings.usage_consumer_group, self.sink.consumer))
        while True:
            await asyncio.sleep(period_s)
            for group, consumer in consumers:
                for tp in consumer.assignment():
                    highwater = consumer.highwater(tp)
                    if highwater is None:
                        continue
                    with contextlib.suppress(Exception):
                        lag = max(0, highwater - await consumer.position(tp))
                        metrics.CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(lag)

    async def until_failed(self) -> BaseException:
        """Returns (the cause) once a part the worker cannot serve without has died: the intake loop.
        The caller should stop and exit non-zero, so an orchestrator restarts the process."""
        if self.intake is None:
            await asyncio.Event().wait()  # nothing that can die: wait for ever
        assert self.intake is not None
        await self.intake.failed.wait()
        return self.intake.failure or RuntimeError("the intake stopped")

    async def stop(self) -> None:
        """Intake first: in-flight requests still need the broker to publish their replies."""
        if self._stopped:
            return
        self._stopped = True
        if self.http is not None:
            await self.http.stop()
        for task in (self._watcher, self._lag_task):
            if task is not None:
                task.cancel()
        if self.intake is not None:
            await self.intake.stop()
        if self.sink is not None:
            await self.sink.stop()
        await self.publisher.stop()
        if self.state is not None:
            await self.state.aclose()
        if self._owned_store is not None:
            self._owned_store.close()
        if self._owned_provider is not None:
            await self._owned_provider.aclose()

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def is_outage(exc: BaseException) -> bool:
    """Failures worth waiting out (the partition holds) rather than dead-lettering the record."""
    if isinstance(exc, PublishRefused):
        return False
    return is_kafka_outage(exc) or is_redis_outage(exc) or isinstance(exc, (ConnectionError, TimeoutError))


def create_worker(
    settings: Settings,
    *,
    catalog: Catalog | None = None,
    provider: ProviderClient | None = None,
    store: UsageStore | None = None,
    with_requests: bool = True,
    with_sink: bool = True,
    reload_config: bool = False,
) -> Worker:
    """Build a worker from settings. Pass `store` to share one ClickHouse engine in-process.

    Without `catalog` (or with `reload_config`) the configuration is read from
    `settings.config_dir` and reloaded when its files change or on SIGHUP.
    """
    live = (LiveCatalog(settings.config_dir, catalog, settings.litellm_config)
            if reload_config or catalog is None else None)
    fixed = catalog
    current: Callable[[], Catalog] = live if live is not None else (lambda: fixed)  # type: ignore[assignment,return-value]
    publisher = BrokerPublisher.from_settings(settings)
    owned: ClickHouseUsageStore | None = None
    if with_sink and store is None:
        store = owned = ClickHouseUsageStore.from_settings(settings)

    intake: ConcurrentIntake | None = None
    state: SharedState | None = None
    owned_provider: LiteLLMProvider | None = None
    if with_requests:
        state = shared_state_from_settings(settings)  # one Redis pool for all of it; connects lazily
        response_cache = state.response_cache
        if provider is None:
            provider = owned_provider = LiteLLMProvider(secrets=SecretSources.from_settings(settings))
        handler = RequestHandler(
            settings, current, provider, publisher, state.processed, BudgetGuard(state.budgets),
            DeploymentPool(state.health),
            CachedAnswers(response_cache, settings.response_cache_ttl_s, settings.response_cache_scope)
            if response_cache is not None else None,
        )
        intake = ConcurrentIntake(
            build_consumer(settings, settings.consumer_group),
            settings.topic_requests,
            handler.handle,
            IntakeLimits(
                max_in_flight=settings.max_in_flight,
                partition_window=settings.partition_window,
                commit_every=settings.commit_every,
                commit_interval_s=settings.commit_interval_s,
                ordered_by_key=settings.ordered_by_key,
                grace_s=settings.shutdown_grace_s,
                poison_max_attempts=settings.poison_max_attempts,
            ),
            FailurePolicy(is_outage=is_outage, give_up=handler.give_up, undecodable=handler.undecodable),
            pattern=request_subscription(settings),  # topic mode: every tenant's request topic
        )

    sink: UsageSink | None = None
    if with_sink:
        assert store is not None
        sink = UsageSink(
            build_consumer(settings, settings.usage_consumer_group),
            settings.topic_usage,
            store,
            publisher,
            settings.topic_usage_dlq,
            batch_size=settings.usage_batch_size,
            flush_interval_s=settings.usage_flush_interval_s,
        )

    return Worker(settings=settings, publisher=publisher, store=store, intake=intake, state=state,
                  live_catalog=live, sink=sink, _owned_store=owned, _owned_provider=owned_provider)
