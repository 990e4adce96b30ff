"""Figure for the analytics issue: usage sink throughput into chDB, in rows/s.

    .venv/bin/python bench/sink_throughput.py [--events 200000] [--batch-size 5000]

Publishes N usage events to Apache Kafka first (not timed), then starts the usage sink alone
(in-process, embedded ClickHouse in a scratch directory) and times it from start to the last
row stored (counted with FINAL, so the figure is for exact, deduplicated rows).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


async def main(args: argparse.Namespace) -> None:
    from aiokafka import AIOKafkaProducer

    from pipeline.contracts.models import UsageEvent
    from pipeline.local.apache_kafka import ApacheKafka
    from pipeline.settings import Settings
    from pipeline.transport.kafka import ensure_topics
    from pipeline.worker.app import create_worker

    kafka = ApacheKafka()
    kafka.start()
    run = uuid.uuid4().hex[:8]
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap_servers, topic_usage=f"u.{run}",
                        topic_usage_dlq=f"u.{run}.dlq", usage_consumer_group=f"sink-{run}",
                        clickhouse_url=f"chdb://{tempfile.mkdtemp()}", clickhouse_database="bench",
                        usage_batch_size=args.batch_size, usage_flush_interval_s=1.0, config_dir=REPO / "config",
                        create_topics=False)
    await ensure_topics(settings, [settings.topic_usage, settings.topic_usage_dlq], partitions=4)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    t0 = time.perf_counter()
    template = UsageEvent(request_id="x", tenant="acme", task_type="summarize", model="sim-gpt-4o-mini",
                          provider="openai", status="ok", prompt_tokens=120, completion_tokens=40, total_tokens=160,
                          cost_usd=0.000042, latency_ms=321.0, attempt=1)
    for i in range(args.events):
        event = template.model_copy(update={"event_id": str(uuid.uuid4()), "request_id": f"r{i}",
                                            "tenant": f"t{i % 50}"})
        await producer.send(settings.topic_usage, event.model_dump_json().encode(), key=f"r{i}".encode())
    await producer.flush()
    await producer.stop()
    published = time.perf_counter() - t0
    worker = create_worker(settings, with_requests=False)
    t1 = time.perf_counter()
    await worker.start()
    try:
        db = settings.clickhouse_database
        while True:
            (n,), = await worker.store.query(f"SELECT count() FROM {db}.llm_usage")
            if n >= args.events:
                break
            await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - t1
        (exact,), = await worker.store.query(f"SELECT count() FROM {db}.llm_usage FINAL")
    finally:
        await worker.stop()
        kafka.stop()
    print(f"published {args.events} events in {published:.1f}s; batch_size={args.batch_size}")
    print(f"sink stored {exact} rows (FINAL) in {elapsed:.1f}s: {exact / elapsed:,.0f} rows/s "
          f"(includes consumer-group join and migrations)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    asyncio.run(main(parser.parse_args()))
