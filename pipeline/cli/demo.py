"""`pipeline demo`: the whole flow on embedded parts, from a fresh clone, in one command.

Starts the no-JVM broker, the provider simulator (with the primary of the `reason` route
failing, to show a fallback) and the worker with its usage sink on chDB; publishes requests
of several task types plus one malformed record; prints the replies and the cost table.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

from pipeline.contracts.models import ChatMessage, CompletionRequest
from pipeline.settings import Settings

TASKS = [
    ("summarize", "Summarise in one line: Kafka is a distributed, partitioned, replicated commit log."),
    ("classify", "Classify the sentiment of: 'the deploy went smoothly'."),
    ("extract", "Extract the city from: 'Ship to 10 Downing St, London'."),
    ("reason", "If a train leaves at 3pm going 60 mph, when has it covered 90 miles?"),
    ("translate", "Translate 'good morning' to French."),  # no route: served by the default route
]


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "llm-pipeline" / "demo"


async def run_demo(console: Console, *, requests: int = 12, data_dir: Path | None = None) -> int:
    from pipeline.analytics.cost_reports import cost_by_model_task_tenant
    from pipeline.analytics.tables import print_table
    from pipeline.catalog import load_catalog
    from pipeline.client import PipelineClient
    from pipeline.local.tansu import RECOMMENDED_FETCH_MAX_WAIT_MS, EmbeddedBroker
    from pipeline.simulator import FaultRule, ProviderSimulator, SimulatorConfig
    from pipeline.transport.clickhouse import ClickHouseUsageStore
    from pipeline.worker.app import create_worker

    data_dir = data_dir or _default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with console.status("starting embedded broker, provider simulator and worker..."):
        broker = EmbeddedBroker()
        broker.start()
        simulator = ProviderSimulator(
            SimulatorConfig(
                latency_ms=40,
                latency_jitter_ms=40,
                # The `reason` route's primary (gpt-4o) answers 503: its fallback serves instead.
                rules=[FaultRule(model="gpt-4o", fault="server_error", status=503)],
            )
        )
        await simulator.start()
        os.environ["PIPELINE_SIMULATOR_URL"] = simulator.url  # read by config/models.yaml
        run_id = uuid.uuid4().hex[:8]
        settings = Settings(
            kafka_bootstrap_servers=broker.bootstrap_servers,
            kafka_fetch_max_wait_ms=RECOMMENDED_FETCH_MAX_WAIT_MS,
            kafka_idempotent_producer=False,  # the embedded broker has no InitProducerId
            kafka_session_timeout_ms=3000,  # it holds group joins for about half the session timeout
            clickhouse_url=f"chdb://{data_dir.resolve()}",
            clickhouse_database="llm_demo",
            consumer_group=f"demo-workers-{run_id}",
            usage_consumer_group=f"demo-sink-{run_id}",
            usage_flush_interval_s=0.2,
            http_port=None,  # a demo must not take a running worker's metrics port
        )
        worker = create_worker(settings, catalog=load_catalog(settings.config_dir, settings.litellm_config))
        await worker.start()
    try:
        async with PipelineClient(settings) as client:
            plan = [
                CompletionRequest(
                    request_id=f"demo-{run_id}-{i:03d}",
                    task_type=TASKS[i % len(TASKS)][0],
                    tenant=("acme", "globex")[i % 2],
                    messages=[ChatMessage(role="user", content=TASKS[i % len(TASKS)][1])],
                    metadata={"demo_run": run_id},
                )
                for i in range(requests)
            ]
            plan.append(
                CompletionRequest(
                    request_id=f"demo-{run_id}-explicit",
                    task_type="summarize",
                    model="sim-llama",
                    messages=[ChatMessage(role="user", content="An explicit model skips routing.")],
                )
            )
            with console.status(f"publishing {len(plan)} requests and one malformed record..."):
                bad = await client.publish_raw(
                    b'{"request_id": "demo-' + run_id.encode() + b'-bad", "messages": []}',
                    expect_request_id=f"demo-{run_id}-bad",
                )
                replies = await asyncio.gather(*(client.complete(r, timeout=60) for r in plan))
                replies.append(await asyncio.wait_for(bad, 60))
        _print_replies(console, replies)
        expected_rows = sum(len(r.attempts) for r in replies)
        with console.status("waiting for usage rows in ClickHouse..."):
            await _wait_for_rows(worker.store, settings.clickhouse_database, plan[0].request_id.rsplit("-", 1)[0],
                                 expected_rows)
        assert isinstance(worker.store, ClickHouseUsageStore)  # create_worker made it: no store was passed in
        table = await asyncio.to_thread(cost_by_model_task_tenant, worker.store, days=1)
        print_table(console, table)
        console.print(
            f"[green]demo done[/green] in {time.perf_counter() - started:.1f}s: {len(replies)} replies, "
            f"{expected_rows} usage rows; chDB data in {data_dir} (the table accumulates across runs)."
        )
        return 0 if all(r.status == "ok" for r in replies[:-1]) and replies[-1].status == "error" else 1
    finally:
        await worker.stop()
        await simulator.stop()
        broker.stop()


def _print_replies(console: Console, replies: list) -> None:
    table = RichTable(title="Replies")
    for column in ("request", "status", "answered by", "attempts", "tokens", "cost_usd"):
        table.add_column(column, no_wrap=column != "attempts")
    for r in replies:
        attempts = " > ".join(f"{a.model}:{a.error_code.value if a.error_code else 'ok'}" for a in r.attempts)
        status = "ok" if r.status == "ok" else f"error: {r.error.code.value}"
        table.add_row(r.request_id.rsplit("-", 1)[-1], status, r.model or "-", attempts or "-",
                      str(r.usage.total_tokens), f"{r.cost_usd:.6f}")
    console.print(table)
    sample = next((r for r in replies if r.status == "ok"), None)
    if sample is not None:
        console.print(f"[dim]sample answer ({sample.model}):[/dim] {sample.content}")
    for r in replies:
        if r.status != "ok":
            console.print(f"[dim]error reply {r.request_id}:[/dim] {r.error.message}")


async def _wait_for_rows(store, database: str, request_prefix: str, expected: int, timeout_s: float = 30) -> None:
    sql = f"SELECT count() FROM {database}.llm_usage FINAL WHERE startsWith(request_id, %(p)s)"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        (count,), = await store.query(sql, {"p": request_prefix})
        if count >= expected:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"only {count} of {expected} usage rows reached ClickHouse")
