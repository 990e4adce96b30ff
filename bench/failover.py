"""Figures for the resilience issue: failover time and success rate under a failing primary.

    .venv/bin/python bench/failover.py [--requests 1000] [--failover-samples 50]

Apache Kafka (Maven jars), the provider simulator and one in-process worker with the shipped
config (summarize: sim-gpt-4o-mini, then sim-claude-haiku) and its default resilience policy.
1. Failover time: the primary answers 503 to every call. For each request, the time from the
   end of its first failed attempt to the fallback's answer (retries with backoff, then the
   fallback call). Cooldown is disabled (allowed_fails very high) so every request pays it.
2. Success rate: the primary fails 50% of calls at random (seeded); N requests, concurrently.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main(args: argparse.Namespace) -> None:
    import os
    import shutil
    import tempfile

    from pipeline.catalog import load_catalog
    from pipeline.client import PipelineClient
    from pipeline.contracts.models import CompletionRequest
    from pipeline.local.apache_kafka import ApacheKafka
    from pipeline.settings import Settings
    from pipeline.simulator import FaultRule, ProviderSimulator, SimulatorConfig
    from pipeline.worker.app import create_worker

    kafka = ApacheKafka()
    kafka.start()
    sim = ProviderSimulator(SimulatorConfig(latency_ms=20, seed=7))
    await sim.start()
    os.environ["PIPELINE_SIMULATOR_URL"] = sim.url
    cfg = Path(tempfile.mkdtemp())
    models = (REPO / "config/models.yaml").read_text()
    (cfg / "models.yaml").write_text(models.replace("models:\n", "defaults: {allowed_fails: 1000000}\nmodels:\n", 1))
    shutil.copy(REPO / "config/routing.yaml", cfg / "routing.yaml")
    run = uuid.uuid4().hex[:8]
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap_servers, kafka_fetch_max_wait_ms=50,
                        topic_requests=f"b.{run}.req", topic_replies=f"llm.replies.{run}", topic_usage=f"b.{run}.use",
                        topic_dlq=f"b.{run}.dlq", topic_alerts=f"b.{run}.alerts", consumer_group=f"b-{run}",
                        clickhouse_url=f"chdb://{tempfile.mkdtemp()}", max_in_flight=500, partition_window=500)
    worker = create_worker(settings, catalog=load_catalog(cfg))
    await worker.start()
    try:
        async with PipelineClient(settings) as client:
            def request(i: str) -> CompletionRequest:
                return CompletionRequest(request_id=i, task_type="summarize",
                                         messages=[{"role": "user", "content": "failover"}])

            await client.complete(request("warm"), timeout=60)
            sim.book.set_rules([FaultRule(model="gpt-4o-mini", fault="server_error", status=503)])
            gaps = []
            for i in range(args.failover_samples):
                reply = await client.complete(request(f"f{i}"), timeout=60)
                assert reply.status == "ok" and reply.model == "sim-claude-haiku", reply
                gaps.append(reply.latency_ms - reply.attempts[0].latency_ms)
            sim.book.set_rules([FaultRule(model="gpt-4o-mini", fault="server_error", status=503, probability=0.5)])
            t0 = time.perf_counter()
            replies = await asyncio.gather(*(client.complete(request(f"s{i}"), timeout=120)
                                             for i in range(args.requests)))
            wall = time.perf_counter() - t0
    finally:
        await worker.stop()
        await sim.stop()
        kafka.stop()
    ok = sum(r.status == "ok" for r in replies)
    served_by = {m: sum(r.model == m for r in replies) for m in ("sim-gpt-4o-mini", "sim-claude-haiku")}
    print(f"failover (primary always 503; retries with backoff, then fallback), n={len(gaps)}: "
          f"p50={statistics.median(gaps):.0f} ms p99={pct(gaps, 0.99):.0f} ms max={max(gaps):.0f} ms")
    print(f"primary failing 50%: {ok}/{len(replies)} ok ({ok / len(replies):.1%}) in {wall:.1f}s; "
          f"served by primary {served_by['sim-gpt-4o-mini']}, fallback {served_by['sim-claude-haiku']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--failover-samples", type=int, default=50)
    asyncio.run(main(parser.parse_args()))
