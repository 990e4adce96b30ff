"""The `pipeline` command: run the worker, the simulator and the demo; send; report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import uuid
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from pipeline.settings import Settings

app = typer.Typer(
    help="Event-driven LLM request pipeline: Kafka in, routed LiteLLM calls, replies out, costs in ClickHouse.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
if not console.is_terminal:  # piped or captured: tables are read later, do not squeeze them to 80 columns
    console.width = 160
err = Console(stderr=True)


def _settings() -> Settings:
    from pipeline.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    return settings


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@app.command()
def run(
    requests: Annotated[bool, typer.Option(help="Consume and serve completion requests.")] = True,
    sink: Annotated[bool, typer.Option(help="Also write usage events to ClickHouse in this process.")] = True,
) -> None:
    """Run a worker until SIGTERM/SIGINT.

    Example: KAFKA_BOOTSTRAP_SERVERS=kafka:9092 CLICKHOUSE_URL=http://ch:8123 pipeline run
    """
    from pipeline.catalog import ConfigError, load_catalog
    from pipeline.worker.app import create_worker

    settings = _settings()
    try:
        catalog = load_catalog(settings.config_dir)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None

    async def main() -> None:
        worker = create_worker(settings, catalog=catalog, with_requests=requests, with_sink=sink)
        async with worker:
            await _until_signalled()

    asyncio.run(main())


@app.command()
def simulate(
    host: str = "127.0.0.1",
    port: int = 8900,
    latency_ms: Annotated[float, typer.Option(help="Base latency of every call.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Uniform extra latency, 0..jitter.")] = 0.0,
    completion_tokens: int = 16,
    rules: Annotated[Optional[Path], typer.Option(help="JSON file with a list of fault rules.")] = None,
) -> None:
    """Run the LLM provider simulator (OpenAI, Anthropic and Ollama wire formats).

    Example: pipeline simulate --port 8900 --latency-ms 500
    """
    from pipeline.simulator import FaultRule, SimulatorConfig, serve

    fault_rules = [FaultRule.model_validate(r) for r in json.loads(rules.read_text())] if rules else []
    config = SimulatorConfig(
        latency_ms=latency_ms, latency_jitter_ms=jitter_ms, completion_tokens=completion_tokens, rules=fault_rules
    )
    serve(host, port, config)


@app.command()
def send(
    task_type: Annotated[Optional[str], typer.Option("--task-type", "-t")] = None,
    message: Annotated[Optional[str], typer.Option("--message", "-m", help="User message text.")] = None,
    system: Annotated[Optional[str], typer.Option(help="Optional system prompt.")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="A CompletionRequest JSON file.")] = None,
    tenant: Optional[str] = None,
    model: Annotated[Optional[str], typer.Option(help="Catalog model name (skips routing).")] = None,
    max_tokens: Optional[int] = None,
    temperature: Optional[float] = None,
    max_cost_usd: Optional[float] = None,
    request_id: Annotated[Optional[str], typer.Option(help="Defaults to a new UUID.")] = None,
    reply_to: Optional[str] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 60.0,
) -> None:
    """Publish one request, wait for its reply, print it. Exit 1 on an error reply, 3 on timeout.

    Example: pipeline send -t summarize -m "Summarise: Kafka is a log."
    """
    from pydantic import ValidationError

    from pipeline.client import PipelineClient, ReplyTimeout
    from pipeline.contracts import CompletionRequest

    settings = _settings()
    doc: dict = json.loads(file.read_text()) if file else {}
    if message is not None:
        doc["messages"] = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": message}
        ]
    flags = {"task_type": task_type, "tenant": tenant, "model": model, "max_tokens": max_tokens,
             "temperature": temperature, "max_cost_usd": max_cost_usd, "reply_to": reply_to,
             "request_id": request_id}
    doc.update({key: value for key, value in flags.items() if value is not None})  # flags win over the file
    doc.setdefault("task_type", "default")
    doc.setdefault("request_id", str(uuid.uuid4()))
    try:
        request = CompletionRequest.model_validate(doc)
    except ValidationError as exc:
        err.print(f"[red]invalid request:[/red] {exc}")
        raise typer.Exit(2) from None

    async def main() -> int:
        async with PipelineClient(settings, reply_topic=request.reply_to) as client:
            try:
                reply = await client.complete(request, timeout=timeout)
            except ReplyTimeout as exc:
                err.print(f"[red]timeout:[/red] {exc}")
                return 3
        console.print_json(reply.model_dump_json())
        return 0 if reply.status == "ok" else 1

    raise typer.Exit(asyncio.run(main()))


@app.command()
def report(
    days: Annotated[int, typer.Option(help="Look back this many days.")] = 30,
    format: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
) -> None:
    """Cost and call counts by model, task type and tenant, from ClickHouse.

    Example: CLICKHOUSE_URL=http://ch:8123 pipeline report --days 7 --format csv
    """
    from pipeline.reports import cost_by_model_task_tenant
    from pipeline.transport.clickhouse import ClickHouseUsageStore
    from pipeline.ui import print_table

    settings = _settings()
    store = ClickHouseUsageStore.from_settings(settings)
    try:
        store.migrate_sync()
        table = cost_by_model_task_tenant(store, days=days)
    finally:
        store.close()
    print_table(console, table, format)


@app.command()
def demo(
    requests: Annotated[int, typer.Option(help="How many requests to publish.")] = 12,
    data_dir: Annotated[Optional[Path], typer.Option(help="chDB data directory (persists between runs).")] = None,
) -> None:
    """Embedded broker + provider simulator + chDB: publish requests, print replies and costs, exit."""
    from pipeline.demo import run_demo
    from pipeline.logs import configure_logging

    configure_logging("ERROR")  # the demo reports through its tables; rejections are part of the show
    raise typer.Exit(asyncio.run(run_demo(console, requests=requests, data_dir=data_dir)))


@app.command()
def schemas(
    out: Annotated[Path, typer.Option(help="Directory of the generated JSON Schemas.")] = Path("schemas"),
    check: Annotated[bool, typer.Option(help="Fail if the files differ from the models.")] = False,
) -> None:
    """Generate (or check) the public JSON Schemas of every event."""
    from pipeline.schema_export import drifted_schemas, write_schemas

    if check:
        stale = drifted_schemas(out)
        if stale:
            err.print(f"[red]schemas out of date:[/red] {', '.join(stale)} (run: pipeline schemas)")
            raise typer.Exit(1)
        console.print("schemas up to date")
        return
    for path in write_schemas(out):
        console.print(f"wrote {path}")


def main() -> None:
    with contextlib.suppress(BrokenPipeError):
        app()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
