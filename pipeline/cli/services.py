"""The long-lived `pipeline` services: `run` (the worker), `sink` (usage only) and `simulate`.

They share how a service runs: on the configured event loop, until SIGTERM/SIGINT or until the
worker's intake dies (exit 1 so an orchestrator restarts it). main.py registers the commands;
the worker, the simulator and uvloop are imported only when a command runs.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli.common import catalog_or_exit, err, load_settings
from pipeline.settings import Settings


def _run_service(main: Callable[[], Coroutine[Any, Any, None]], settings: Settings) -> None:
    """Run a long-lived service on the configured event loop (uvloop by default when installed)."""
    factory = None
    if settings.event_loop != "asyncio":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            if settings.event_loop == "uvloop":
                err.print("[red]PIPELINE_EVENT_LOOP=uvloop but uvloop is not installed[/red]")
                raise typer.Exit(2) from None
    from pipeline.lifecycle import ShutdownHung, run_service

    try:
        run_service(main, loop_factory=factory)
    except ShutdownHung as exc:
        err.print(f"[red]shutdown hung:[/red] {exc} (their stacks are in the log)")
        raise typer.Exit(1) from None


async def _until_signalled(failure: Coroutine[Any, Any, BaseException] | None = None) -> BaseException | None:
    """Until SIGINT/SIGTERM (None), or until `failure` returns (its exception)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    signalled = asyncio.create_task(stop.wait(), name="signals")
    died = asyncio.create_task(failure, name="failure") if failure is not None else None
    try:
        await asyncio.wait([t for t in (signalled, died) if t is not None], return_when=asyncio.FIRST_COMPLETED)
    finally:
        signalled.cancel()
        if died is not None and not died.done():
            died.cancel()
    return died.result() if died is not None and died.done() and not died.cancelled() else None


def run(
    requests: Annotated[bool, typer.Option(help="Consume and serve completion requests.")] = True,
    sink: Annotated[bool, typer.Option(help="Also write usage events to ClickHouse in this process.")] = True,
) -> None:
    """Run a worker until SIGTERM/SIGINT.

    Example: KAFKA_BOOTSTRAP_SERVERS=kafka:9092 CLICKHOUSE_URL=http://ch:8123 pipeline run
    """
    from pipeline.worker.app import create_worker

    settings = load_settings(service=True)
    catalog = catalog_or_exit(settings)

    async def main() -> None:
        from pipeline.state.redis_client import RedisAuthError
        from pipeline.transport.connect_errors import KafkaConnectError

        worker = create_worker(settings, catalog=catalog, with_requests=requests, with_sink=sink, reload_config=True)
        try:
            await worker.start()
        except KafkaConnectError as exc:  # the cause in words (credentials, certificate), never a password
            err.print(f"[red]cannot connect to Kafka:[/red] {exc}")
            raise typer.Exit(1) from None
        except RedisAuthError as exc:  # the URL masked, never a password
            err.print(f"[red]Redis refused the credentials:[/red] {exc}")
            raise typer.Exit(1) from None
        try:
            failure = await _until_signalled(worker.until_failed())
        finally:
            await worker.stop()
        if failure is not None:
            err.print(f"[red]worker stopped: the intake died ({failure!r}); exiting 1 so it is restarted[/red]")
            raise typer.Exit(1)

    _run_service(main, settings)


def sink() -> None:
    """Run only the usage sink: usage events from Kafka into ClickHouse, exactly once.

    Its own consumer group (PIPELINE_USAGE_CONSUMER_GROUP); batches of PIPELINE_USAGE_BATCH_SIZE
    rows or PIPELINE_USAGE_FLUSH_INTERVAL_S seconds; pauses and retries while ClickHouse is down.

    Example: CLICKHOUSE_URL=http://ch:8123 pipeline sink
    """
    run(requests=False, sink=True)


def simulate(
    host: str = "127.0.0.1",
    port: int = 8900,
    latency_ms: Annotated[float, typer.Option(help="Base latency of every call.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Uniform extra latency, 0..jitter.")] = 0.0,
    completion_tokens: int = 16,
    rules: Annotated[Path | None, typer.Option(help="JSON file with a list of fault rules.")] = None,
) -> None:
    """Run the LLM provider simulator (OpenAI, Azure OpenAI, Anthropic, Ollama and Cohere rerank wire formats).

    Serves chat (plain, streamed, tool calls, JSON output), embeddings and rerank. Fault kinds:
    rate_limit, server_error, timeout, malformed, context_length, auth, bad_request,
    content_policy, stream_cut, invalid_json. Change stream_chunk_words,
    stream_chunk_delay_ms or embedding_dimensions at runtime with PATCH /_sim/config.

    Example: pipeline simulate --port 8900 --latency-ms 500
    """
    from pipeline.simulator import FaultRule, SimulatorConfig, serve

    fault_rules = [FaultRule.model_validate(r) for r in json.loads(rules.read_text())] if rules else []
    config = SimulatorConfig(
        latency_ms=latency_ms, latency_jitter_ms=jitter_ms, completion_tokens=completion_tokens, rules=fault_rules
    )
    serve(host, port, config)
