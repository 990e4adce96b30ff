"""Usage analytics ingest: exactly N rows for N events, through crashes and ClickHouse outages."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.contracts.models import UsageEvent
from pipeline.transport.clickhouse import ClickHouseUsageStore
from pipeline.transport.kafka import ensure_topics
from tests.integration.kafka_helpers import eventually, produce, read_topic

pytestmark = pytest.mark.kafka


def events(n: int, run: str) -> list[UsageEvent]:
    base = datetime(2026, 11, 20, 12, tzinfo=UTC)
    return [
        UsageEvent(request_id=f"{run}-{i}", tenant=("acme", "globex")[i % 2], task_type=("a", "b", "c")[i % 3],
                   model=("m1", "m2")[i % 2], provider="openai", status="ok" if i % 5 else "error",
                   prompt_tokens=10 + i % 7, completion_tokens=i % 11, total_tokens=10 + i % 7 + i % 11,
                   cost_usd=round(0.000123 * (i % 13), 9), latency_ms=float(100 + i % 50), attempt=1,
                   ts=base + timedelta(hours=i % 48))
        for i in range(n)
    ]


async def publish_events(settings, evs: list[UsageEvent], *extra: tuple[bytes, bytes]) -> None:
    await ensure_topics(settings, [settings.topic_usage], partitions=4)
    await produce(settings.kafka_bootstrap_servers, settings.topic_usage,
                  [(e.request_id.encode(), e.model_dump_json().encode()) for e in evs] + list(extra))


async def count(store: ClickHouseUsageStore, final: bool = True) -> int:
    return (await store.query(f"SELECT count() FROM {store.database}.llm_usage {'FINAL' if final else ''}"))[0][0]


async def test_n_events_give_exactly_n_rows_and_rollups_agree(settings, tmp_path) -> None:
    from pipeline.worker.app import create_worker

    run = uuid.uuid4().hex[:6]
    evs = events(600, run)
    await publish_events(settings, evs, (b"bad", b"{not a usage event"), (b"bad2", b'{"request_id": 1}'))
    worker = create_worker(settings.model_copy(update={"usage_batch_size": 128}), with_requests=False)
    await worker.start()
    try:
        store = worker.store
        await eventually(lambda: _equals(count(store), 600), timeout_s=60)
        await asyncio.sleep(1.0)  # nothing more arrives
        assert await count(store, final=False) == 600  # no duplicate rows at all, not just after FINAL
        db = store.database
        (total,), = await store.query(f"SELECT sum(cost_usd) FROM {db}.llm_usage FINAL")
        assert total == sum(Decimal(repr(e.cost_usd)) for e in evs)
        raw = await store.query(f"SELECT toDate(ts), tenant, model, status, count(), sum(cost_usd) "
                                f"FROM {db}.llm_usage FINAL GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4")
        rolled = await store.query(f"SELECT day, tenant, model, status, sum(calls), sum(cost_usd) "
                                   f"FROM {db}.llm_cost_daily GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4")
        assert raw == rolled
        monthly = await store.query(f"SELECT tenant, sum(cost_usd) FROM {db}.llm_spend_monthly GROUP BY 1 ORDER BY 1")
        assert monthly == await store.query(
            f"SELECT tenant, sum(cost_usd) FROM {db}.llm_usage FINAL GROUP BY 1 ORDER BY 1")
        (p50,), = await store.query(f"SELECT quantilesMerge(0.5, 0.95, 0.99)(latency)[1] FROM {db}.llm_latency_hourly")
        assert 100 <= p50 <= 150
    finally:
        await worker.stop()
    dead = await read_topic(settings.kafka_bootstrap_servers, settings.topic_usage_dlq, count=2)
    assert sorted(r.key for r in dead) == [b"bad", b"bad2"]


async def _equals(awaitable, expected: int) -> bool:
    return await awaitable == expected


def sink_env(settings, clickhouse_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CLICKHOUSE_", "PIPELINE_F"))}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers, "CLICKHOUSE_URL": clickhouse_url,
        "CLICKHOUSE_DATABASE": settings.clickhouse_database, "PIPELINE_TOPIC_USAGE": settings.topic_usage,
        "PIPELINE_TOPIC_USAGE_DLQ": settings.topic_usage_dlq, "PIPELINE_TOPIC_REQUESTS": settings.topic_requests,
        "PIPELINE_TOPIC_REPLIES": settings.topic_replies, "PIPELINE_TOPIC_DLQ": settings.topic_dlq,
        "PIPELINE_TOPIC_ALERTS": settings.topic_alerts,
        "PIPELINE_USAGE_CONSUMER_GROUP": settings.usage_consumer_group,
        "PIPELINE_CONSUMER_GROUP": settings.consumer_group, "PIPELINE_CONFIG_DIR": str(settings.config_dir),
        "PIPELINE_KAFKA_FETCH_MAX_WAIT_MS": "100", "PIPELINE_USAGE_FLUSH_INTERVAL_S": "0.3",
        "PIPELINE_USAGE_BATCH_SIZE": "100", "PIPELINE_LOG_LEVEL": "INFO", "PIPELINE_LOG_FORMAT": "text",
        "PIPELINE_HTTP_PORT": "0", **extra,
    })
    return env


async def spawn(args: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    # Opening a local log file is not a meaningful block of the event loop; the child keeps its own descriptor.
    with open(log, "ab") as out:  # noqa: ASYNC230 -- see above
        return await asyncio.create_subprocess_exec(sys.executable, "-m", "pipeline.cli", *args, env=env,
                                                    stdout=out, stderr=out)


@pytest.mark.slow
async def test_sink_killed_between_insert_and_commit_still_stores_exactly_n(settings, chdb_dir, tmp_path) -> None:
    run = uuid.uuid4().hex[:6]
    await publish_events(settings, events(300, run))
    url = f"chdb://{chdb_dir}"
    crashing = await spawn(["sink"], sink_env(settings, url, PIPELINE_FAILPOINTS="sink_after_insert"),
                           tmp_path / "sink-1.log")
    assert await asyncio.wait_for(crashing.wait(), 120) == 137  # died right after its first insert
    store = ClickHouseUsageStore(url, settings.clickhouse_database)
    try:
        stored_before_restart = await count(store, final=False)
        assert 0 < stored_before_restart < 300
        sink = await spawn(["sink"], sink_env(settings, url), tmp_path / "sink-2.log")
        try:
            await eventually(lambda: _equals(count(store, final=False), 300), timeout_s=120)
            await asyncio.sleep(1.5)
        finally:
            sink.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(sink.wait(), 60) == 0
        assert await count(store, final=False) == 300  # the re-read batch was skipped, not stored twice
        assert await count(store) == 300
    finally:
        store.close()


@pytest.mark.slow
async def test_clickhouse_outage_loses_nothing_and_requests_keep_flowing(settings, sim, tmp_path) -> None:
    from tests.integration.kafka_helpers import encode, request_doc

    unopenable = tmp_path / "chdb-data"
    unopenable.write_text("a file where the data directory should be: the engine cannot open it")
    env = sink_env(settings, f"chdb://{unopenable}")
    await ensure_topics(settings,
                        [settings.topic_requests, settings.topic_replies, settings.topic_usage], partitions=4)
    worker = await spawn(["run"], env, tmp_path / "worker.log")
    try:
        await produce(settings.kafka_bootstrap_servers, settings.topic_requests,
                      [(f"k{i}".encode(), encode(request_doc(f"out-{i}"))) for i in range(40)])
        replies = await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=40, timeout_s=90)
        assert len(replies) == 40  # the request path served while ClickHouse was down
        log = tmp_path / "worker.log"
        await eventually(lambda: _true("usage insert of" in log.read_text()), timeout_s=30)
        unopenable.unlink()  # ClickHouse "comes back"
        await eventually(lambda: _true("ClickHouse is back" in log.read_text()), timeout_s=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 60) == 0
    store = ClickHouseUsageStore(f"chdb://{unopenable}", settings.clickhouse_database)
    try:
        assert await count(store, final=False) == 40  # every well-formed event arrived, once
    finally:
        store.close()


async def _true(value: bool) -> bool:
    return value


def test_migrations_run_twice_without_error(chdb_dir) -> None:
    store = ClickHouseUsageStore(f"chdb://{chdb_dir}", f"mig_{uuid.uuid4().hex[:8]}")
    try:
        assert len(store.migrate_sync()) >= 4
        assert store.migrate_sync() == []
        store._migrated = False
        assert store.migrate_sync() == []  # a second process starting up applies nothing again
    finally:
        store.close()


@pytest.mark.slow
async def test_report_while_a_worker_holds_the_embedded_engine(settings, sim, tmp_path) -> None:
    """Another process asks for a report on the same chDB directory: it waits its turn, no lock error."""
    import json

    from tests.integration.kafka_helpers import encode, request_doc

    url = f"chdb://{tmp_path / 'shared-chdb'}"
    env = sink_env(settings, url, PIPELINE_USAGE_FLUSH_INTERVAL_S="0.1", PIPELINE_USAGE_BATCH_SIZE="5")
    await ensure_topics(settings,
                        [settings.topic_requests, settings.topic_replies, settings.topic_usage], partitions=4)
    worker = await spawn(["run"], env, tmp_path / "worker.log")
    try:
        await produce(settings.kafka_bootstrap_servers, settings.topic_requests,
                      [(f"k{i}".encode(), encode(request_doc(f"rep-{i}", tenant="acme"))) for i in range(30)])
        await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=30, timeout_s=90)
        calls = 0
        for _ in range(30):  # keep asking while the sink keeps flushing
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pipeline.cli", "report", "--format", "json", env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, err.decode()[-2000:]
            assert b"Cannot lock" not in err and b"Unable to open" not in err
            rows = json.loads(out)
            calls = sum(r["calls"] for r in rows if r["tenant"] == "acme")
            if calls == 30:
                break
        assert calls == 30
    finally:
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 60) == 0
