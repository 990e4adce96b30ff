"""Figure for the delivery issue: N requests at a fixed provider latency through ONE worker process.

    .venv/bin/python bench/inflight.py [--requests 2000] [--latency-ms 1000] [--max-in-flight 500]

Starts Apache Kafka (Maven jars), the provider simulator and `pipeline run --no-sink` as a
child process; publishes every request at once, waits for every reply and prints wall time,
throughput, the ideal time (requests / in-flight bound x latency) and the worker's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main(args: argparse.Namespace) -> None:
    from pipeline.local.apache_kafka import ApacheKafka
    from pipeline.simulator import ProviderSimulator, SimulatorConfig
    from pipeline.transport.kafka import ensure_topics
    from tests.integration.kafka_helpers import encode, produce, request_doc
    from tests.integration.test_crash_rebalance import collect_replies

    kafka = ApacheKafka()
    kafka.start()
    sim = ProviderSimulator(SimulatorConfig(latency_ms=args.latency_ms))
    await sim.start()
    run = f"bench{int(time.time())}"
    topics = {"PIPELINE_TOPIC_REQUESTS": f"{run}.requests", "PIPELINE_TOPIC_REPLIES": f"llm.replies.{run}",
              "PIPELINE_TOPIC_USAGE": f"{run}.usage", "PIPELINE_TOPIC_DLQ": f"{run}.dlq"}
    await ensure_topics({"bootstrap_servers": kafka.bootstrap_servers}, list(topics.values()),
                        partitions=args.partitions)
    env = {**os.environ, **topics, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           "PIPELINE_SIMULATOR_URL": sim.url, "PIPELINE_CONFIG_DIR": str(REPO / "config"),
           "PIPELINE_CONSUMER_GROUP": f"{run}-workers", "PIPELINE_MAX_IN_FLIGHT": str(args.max_in_flight),
           "PIPELINE_PARTITION_WINDOW": str(args.max_in_flight), "PIPELINE_LOG_LEVEL": "WARNING",
           "PIPELINE_KAFKA_FETCH_MAX_WAIT_MS": "50", "PIPELINE_HTTP_PORT": "0"}
    env.pop("REDIS_URL", None)
    # The child gets its own copy of the descriptor, so ours is closed once it is spawned.
    # Opening a local log file is not a meaningful block of the event loop.
    with open(Path(tempfile.gettempdir()) / f"{run}-worker.log", "wb") as log:  # noqa: ASYNC230 -- see above
        worker = await asyncio.create_subprocess_exec(sys.executable, "-m", "pipeline.cli", "run", "--no-sink",
                                                      env=env, stdout=log, stderr=log)
    try:
        # Warm-up: one request, so group join and first-call set-up are not in the figure.
        await produce(kafka.bootstrap_servers, topics["PIPELINE_TOPIC_REQUESTS"], [(b"w", encode(request_doc("warm")))])
        await collect_replies(kafka.bootstrap_servers, topics["PIPELINE_TOPIC_REPLIES"], 1, timeout_s=120, settle_s=0)
        t0 = time.perf_counter()
        await produce(kafka.bootstrap_servers, topics["PIPELINE_TOPIC_REQUESTS"],
                      [(f"k{i}".encode(), encode(request_doc(f"r{i}"))) for i in range(args.requests)])
        replies = await collect_replies(kafka.bootstrap_servers, topics["PIPELINE_TOPIC_REPLIES"],
                                        args.requests + 1, timeout_s=600, settle_s=0)
        wall = time.perf_counter() - t0
        rss = peak_rss_mib(worker.pid)
    finally:
        worker.terminate()
        await worker.wait()
        await sim.stop()
        kafka.stop()
    ideal = args.requests / args.max_in_flight * args.latency_ms / 1000
    print(f"requests={args.requests} latency_ms={args.latency_ms} max_in_flight={args.max_in_flight} "
          f"partitions={args.partitions} replies={len(replies) - 1}")
    print(f"wall_s={wall:.2f} throughput_rps={args.requests / wall:.1f} ideal_wall_s={ideal:.2f} "
          f"efficiency={ideal / wall:.0%} worker_peak_rss_mib={rss:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--latency-ms", type=int, default=1000)
    parser.add_argument("--max-in-flight", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=4)
    asyncio.run(main(parser.parse_args()))
