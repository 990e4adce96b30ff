"""The `pipeline` command: run the worker, the simulator and the demo; send; report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, Literal

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
err = Console(stderr=True, soft_wrap=True)  # an error names a path: never broken mid-word to fit a width
#: `--cost-preference` choices: pipeline.catalog.routing.CostPreference, spelled out to keep start-up light.
CostPreferenceName = Literal["listed", "cheapest", "balanced", "quality"]


def _settings(*, service: bool = False) -> Settings:
    """Services (run, sink) log JSON lines by default; interactive commands log plain text."""
    from pipeline.observability.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format if service else "text")
    return settings


def _catalog_or_exit(settings: Settings) -> Any:
    """Load the config or stop with exit code 2 and a message naming file, entry and problem."""
    from pipeline.catalog import ConfigError, load_catalog

    try:
        return load_catalog(settings.config_dir, settings.litellm_config)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _fallbacks_flag(fallback: list[str] | None, no_fallbacks: bool) -> list[str] | None:
    """`--fallback M` (repeated) or `--no-fallbacks` ([]); neither: None, the request says nothing."""
    if fallback and no_fallbacks:
        err.print("[red]--fallback and --no-fallbacks contradict each other[/red]")
        raise typer.Exit(2)
    return [] if no_fallbacks else (fallback or None)


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


@app.command()
def run(
    requests: Annotated[bool, typer.Option(help="Consume and serve completion requests.")] = True,
    sink: Annotated[bool, typer.Option(help="Also write usage events to ClickHouse in this process.")] = True,
) -> None:
    """Run a worker until SIGTERM/SIGINT.

    Example: KAFKA_BOOTSTRAP_SERVERS=kafka:9092 CLICKHOUSE_URL=http://ch:8123 pipeline run
    """
    from pipeline.worker.app import create_worker

    settings = _settings(service=True)
    catalog = _catalog_or_exit(settings)

    async def main() -> None:
        from pipeline.transport.connect_errors import KafkaConnectError

        worker = create_worker(settings, catalog=catalog, with_requests=requests, with_sink=sink, reload_config=True)
        try:
            await worker.start()
        except KafkaConnectError as exc:  # the cause in words (credentials, certificate), never a password
            err.print(f"[red]cannot connect to Kafka:[/red] {exc}")
            raise typer.Exit(1) from None
        try:
            failure = await _until_signalled(worker.until_failed())
        finally:
            await worker.stop()
        if failure is not None:
            err.print(f"[red]worker stopped: the intake died ({failure!r}); exiting 1 so it is restarted[/red]")
            raise typer.Exit(1)

    _run_service(main, settings)


@app.command()
def sink() -> None:
    """Run only the usage sink: usage events from Kafka into ClickHouse, exactly once.

    Its own consumer group (PIPELINE_USAGE_CONSUMER_GROUP); batches of PIPELINE_USAGE_BATCH_SIZE
    rows or PIPELINE_USAGE_FLUSH_INTERVAL_S seconds; pauses and retries while ClickHouse is down.

    Example: CLICKHOUSE_URL=http://ch:8123 pipeline sink
    """
    run(requests=False, sink=True)


@app.command()
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


@app.command()
def send(
    task_type: Annotated[str | None, typer.Option("--task-type", "-t")] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="User message text.")] = None,
    system: Annotated[str | None, typer.Option(help="Optional system prompt.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="A CompletionRequest JSON file.")] = None,
    tenant: str | None = None,
    model: Annotated[str | None, typer.Option(help="Catalog model name (skips routing).")] = None,
    fallback: Annotated[list[str] | None, typer.Option(
        "--fallback", help="A fallback model (repeat), tried in order after --model or the route; replaces the "
                           "model's configured fallbacks.")] = None,
    no_fallbacks: Annotated[bool, typer.Option("--no-fallbacks", help="Send fallbacks: [] (none).")] = False,
    max_tokens: int | None = None,
    temperature: float | None = None,
    max_cost_usd: float | None = None,
    request_id: Annotated[str | None, typer.Option(help="Defaults to a new UUID.")] = None,
    reply_to: str | None = None,
    template: Annotated[str | None, typer.Option(help="A template in config/templates.yaml.")] = None,
    var: Annotated[list[str] | None, typer.Option("--var", help="Template variable NAME=VALUE (repeat).")] = None,
    stream: Annotated[bool, typer.Option(help="Print the answer as it streams, then the reply.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 60.0,
) -> None:
    """Publish one request, wait for its reply, print it. Exit 1 on an error reply, 3 on timeout.

    Built on `pipeline.client.PipelineClient`.

    Examples: pipeline send -t summarize -m "Summarise: Kafka is a log."
              pipeline send -t summarize -m "..." --model gpt-4o --fallback claude-haiku-4-5
              pipeline send -t summarize --template summarize-ticket --var ticket="Printer on fire" --stream
    """
    from pydantic import ValidationError

    from pipeline.client import PipelineClient, ReplyTimeout, StreamRestart
    from pipeline.contracts.models import CompletionChunk, CompletionRequest

    settings = _settings()
    doc: dict = json.loads(file.read_text()) if file else {}
    if message is not None:
        doc["messages"] = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": message}
        ]
    if template is not None:
        doc["template"] = template
    for assignment in var or ():
        name, sep, value = assignment.partition("=")
        if not sep:
            err.print(f"[red]--var {assignment!r}:[/red] expected NAME=VALUE")
            raise typer.Exit(2)
        doc.setdefault("variables", {})[name] = value
    flags = {"task_type": task_type, "tenant": tenant, "model": model, "max_tokens": max_tokens,
             "temperature": temperature, "max_cost_usd": max_cost_usd, "reply_to": reply_to,
             "request_id": request_id, "stream": stream or None,
             "fallbacks": _fallbacks_flag(fallback, no_fallbacks)}
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
                if request.stream:
                    reply = None
                    async for event in client.stream(request, timeout=timeout):
                        if isinstance(event, CompletionChunk):
                            err.print(event.delta, end="", highlight=False, markup=False, soft_wrap=True)
                        elif isinstance(event, StreamRestart):
                            err.print("\n[yellow]-- the answer restarts (the partial one above is void) --[/yellow]")
                        else:
                            reply = event
                    err.print()
                    assert reply is not None
                else:
                    reply = await client.complete(request, timeout=timeout)
            except ReplyTimeout as exc:
                err.print(f"[red]timeout:[/red] {exc}")
                return 3
        console.print_json(reply.model_dump_json())
        return 0 if reply.status == "ok" else 1

    raise typer.Exit(asyncio.run(main()))


@app.command()
def route(
    task_type: Annotated[str, typer.Option("--task-type", "-t")] = "default",
    tokens: Annotated[int, typer.Option(help="Prompt size in tokens (a synthetic prompt).")] = 100,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Route this text instead.")] = None,
    tenant: str = "default",
    model: Annotated[str | None, typer.Option(help="An explicit catalog model.")] = None,
    fallback: Annotated[list[str] | None, typer.Option(
        "--fallback", help="A request fallback model (repeat); replaces the explicit model's configured ones.")] = None,
    no_fallbacks: Annotated[bool, typer.Option("--no-fallbacks", help="Send fallbacks: [] (none).")] = False,
    max_tokens: int | None = None,
    max_cost_usd: float | None = None,
    cost_preference: Annotated[CostPreferenceName | None, typer.Option(
        help="Order the route's candidates this way instead of the route's own cost_preference.")] = None,
    format: Annotated[Literal["table", "json"], typer.Option("--format")] = "table",
) -> None:
    """Print the routing decision for a request, without calling anything. Exit 1 if it is refused.

    Shows the candidates in the order they would be tried (the route's, ordered by its
    cost_preference or --cost-preference, then the fallbacks) with estimated tokens and cost,
    every skipped candidate with its reason, and each budget the request draws on (shared spend
    when REDIS_URL is set). --format json prints one document (docs/cli.md).

    Example: pipeline route -t summarize --tokens 3000 --tenant acme --max-cost-usd 0.01
    """
    from datetime import UTC, datetime

    from pydantic import ValidationError

    from pipeline.catalog.routing import CostPreference
    from pipeline.cli.views import print_route, route_document
    from pipeline.contracts.models import CompletionRequest
    from pipeline.stages.budget import budget_lines
    from pipeline.stages.route import RouteRefusal, plan_route
    from pipeline.state import shared_state_from_settings

    settings = _settings()
    catalog = _catalog_or_exit(settings)
    text = message if message is not None else " ".join(["word"] * max(1, tokens))
    doc = {"request_id": "route-preview", "task_type": task_type, "tenant": tenant, "model": model,
           "max_tokens": max_tokens, "max_cost_usd": max_cost_usd, "messages": [{"role": "user", "content": text}],
           "fallbacks": _fallbacks_flag(fallback, no_fallbacks)}
    try:
        request = CompletionRequest.model_validate(doc)
    except ValidationError as exc:
        err.print(f"[red]invalid request:[/red] {exc}")
        raise typer.Exit(2) from None
    preference = CostPreference(cost_preference) if cost_preference else None
    plan = plan_route(request, catalog, default_completion_tokens=settings.estimate_completion_tokens,
                      cost_preference=preference)

    async def budgets() -> list[dict[str, Any]]:
        state = shared_state_from_settings(settings)
        lines = budget_lines(catalog.routing.cost_controls, tenant, task_type, datetime.now(UTC))
        try:
            spent = await state.budgets.values([line.key for line in lines])
        finally:
            await state.aclose()
        return [{"budget": line.name, "window": line.key.rsplit(":", 1)[-1], "limit_usd": line.limit / 1e6,
                 "spent_or_reserved_usd": used / 1e6, "remaining_usd": (line.limit - used) / 1e6}
                for line, used in zip(lines, spent, strict=False)]

    report = route_document(request, plan, catalog, cost_preference, asyncio.run(budgets()))
    print_route(console, report, format, shared=bool(settings.redis_url))
    raise typer.Exit(1 if isinstance(plan, RouteRefusal) else 0)


@app.command()
def models(
    check: Annotated[
        bool, typer.Option("--check", help="Call every deployment with a tiny prompt (5 s limit).")
    ] = False,
    catalog_view: Annotated[bool, typer.Option(
        "--catalog", help="List every model: deployments, provider, capabilities, context window, prices, "
                          "fallbacks (reads only the config).")] = False,
    format: Annotated[Literal["table", "json"], typer.Option("--format", help="With --catalog.")] = "table",
) -> None:
    """Each deployment's health: cooldown, recent error rate and latency, RPM/TPM used.

    Health is shared through Redis: without REDIS_URL this process sees only itself. --check
    calls every deployment once, concurrently, and reports within 5 seconds. --catalog lists
    the catalog instead (--format json: one document, docs/cli.md).

    Examples: REDIS_URL=redis://redis:6379/0 pipeline models --check · pipeline models --catalog --format json
    """
    from rich.table import Table as RichTable

    from pipeline.catalog.secrets import SecretSources
    from pipeline.state import shared_state_from_settings

    settings = _settings()
    catalog = _catalog_or_exit(settings)
    if catalog_view or format == "json":
        if check or not catalog_view:
            err.print("[red]--format json goes with --catalog, and --catalog not with --check[/red]")
            raise typer.Exit(2)
        from pipeline.cli.views import print_catalog

        print_catalog(console, catalog, format)
        return
    deployments = [(spec, d) for spec in catalog.models.values() for d in spec.deployments]
    names = [d.name for _, d in deployments]

    async def gather() -> tuple[dict, dict, dict, dict]:
        state = shared_state_from_settings(settings)
        health = state.health
        try:
            cooling, usage, stats = (await health.cooling_down(names), await health.usage(names),
                                     await health.stats(names))
        finally:
            await state.aclose()
        probes = await _probe_all(deployments, secrets=SecretSources.from_settings(settings)) if check else {}
        return cooling, usage, stats, probes

    cooling, usage, stats, probes = asyncio.run(gather())
    table = RichTable(title="Deployments" + ("" if settings.redis_url else " (this process only: set REDIS_URL)"))
    columns = ["deployment", "provider", "state", "calls", "error_rate", "p50_ms", "rpm used/limit", "tpm used/limit"]
    for column in columns + (["check"] if check else []):
        table.add_column(column)
    for spec, d in deployments:
        st = stats.get(d.name)
        requests_used, tokens_used = usage.get(d.name, (0, 0))
        state = "disabled" if spec.disabled else (f"cooling {cooling[d.name]:.0f}s" if d.name in cooling else "ready")
        row = [d.name, d.provider, state, str(st.calls if st else 0),
               f"{st.error_rate:.0%}" if st and st.calls else "-",
               f"{st.p50_latency_ms:.0f}" if st and st.p50_latency_ms is not None else "-",
               f"{requests_used}/{d.rpm or '-'}", f"{tokens_used}/{d.tpm or '-'}"]
        table.add_row(*row, *([probes.get(d.name, "")] if check else []))
    console.print(table)
    if check and any(not v.startswith("ok") for v in probes.values()):
        raise typer.Exit(1)


async def _probe_all(deployments: list, timeout_s: float = 5.0, secrets: Any = None) -> dict[str, str]:
    """One tiny call per deployment, all at once; anything not done in `timeout_s` is reported so."""
    import time as _time

    from pipeline.contracts.models import ChatMessage, CompletionRequest
    from pipeline.transport.llm import LiteLLMProvider
    from pipeline.transport.provider import ProviderError

    provider = LiteLLMProvider(secrets=secrets)
    request = CompletionRequest(request_id="health-check", task_type="health-check", max_tokens=1,
                                messages=[ChatMessage(role="user", content="ping")])

    async def probe(deployment) -> str:
        t0 = _time.perf_counter()
        try:
            await provider.complete(deployment, request, timeout_s=timeout_s)
        except ProviderError as exc:
            return f"{exc.code.value}"
        return f"ok {(_time.perf_counter() - t0) * 1000:.0f} ms"

    tasks = {d.name: asyncio.create_task(probe(d)) for _, d in deployments}
    done, pending = await asyncio.wait(tasks.values(), timeout=timeout_s)
    for task in pending:
        task.cancel()
    return {name: (t.result() if t in done and not t.cancelled() else "no answer in 5 s") for name, t in tasks.items()}


@app.command()
def report(
    name: Annotated[str | None, typer.Argument(
        help="cost (default), daily, budgets, latency, reliability, errors, waste, top-tenants, top-requests, all"
    )] = None,
    days: Annotated[int, typer.Option(help="Look back this many days (UTC calendar days, today included).")] = 30,
    format: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
    html: Annotated[Path | None, typer.Option(help="Write one self-contained HTML page with charts.")] = None,
    limit: Annotated[int, typer.Option(help="Rows of the top-spender reports.")] = 10,
    model: Annotated[str, typer.Option(help="Only attempts served by this model.")] = "",
    tenant: Annotated[str, typer.Option(help="Only this tenant's attempts.")] = "",
    task_type: Annotated[str, typer.Option("--task-type", "-t", help="Only this task type's attempts.")] = "",
) -> None:
    """Answer the analysts' questions from ClickHouse (exact figures, read with FINAL).

    --model, --tenant and --task-type select the attempts every report but `budgets` aggregates
    (bound as query parameters).

    Works while a worker runs on the embedded engine: the worker holds it only while flushing,
    and the report waits for it. SQL for each report: docs/analytics.md.

    Examples: pipeline report budgets · pipeline report daily --days 7 --format csv ·
    pipeline report --html costs.html · pipeline report waste --tenant acme --model gpt-4o
    """
    from pipeline.analytics.filters import RowFilter
    from pipeline.analytics.report_cli import run_report
    from pipeline.catalog import ConfigError, load_catalog
    from pipeline.transport.clickhouse import ClickHouseUsageStore

    try:
        only = RowFilter(model=model, tenant=tenant, task_type=task_type)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    settings = _settings()
    try:
        catalog = load_catalog(settings.config_dir, settings.litellm_config)
    except ConfigError:
        catalog = None  # budgets report then shows spend without limits
    store = ClickHouseUsageStore.from_settings(settings)
    try:
        store.migrate_sync()
        code = run_report(store, catalog, name=name, days=days, fmt=format, html=html, console=console, limit=limit,
                          only=only)
    finally:
        store.close()
    raise typer.Exit(code)


@app.command()
def demo(
    requests: Annotated[int, typer.Option(help="How many requests to publish.")] = 12,
    data_dir: Annotated[Path | None, typer.Option(help="chDB data directory (persists between runs).")] = None,
) -> None:
    """Embedded broker + provider simulator + chDB: publish requests, print replies and costs, exit."""
    from pipeline.cli.demo import run_demo
    from pipeline.observability.logs import configure_logging

    configure_logging("ERROR")  # the demo reports through its tables; rejections are part of the show
    raise typer.Exit(asyncio.run(run_demo(console, requests=requests, data_dir=data_dir)))


@app.command()
def check() -> None:
    """Validate the config and reach Kafka, ClickHouse, Redis and every provider endpoint.

    Prints a table of what is OK and what is not; exit 1 if anything is not.

    Example: KAFKA_BOOTSTRAP_SERVERS=kafka:9092 CLICKHOUSE_URL=http://ch:8123 pipeline check
    """
    from rich.table import Table as RichTable

    from pipeline.cli.checks import run_checks

    settings = _settings()
    with console.status("checking configuration, Kafka, ClickHouse, Redis and providers..."):
        results = asyncio.run(run_checks(settings))
    table = RichTable(title="pipeline check")
    for column in ("check", "status", "detail"):
        table.add_column(column)
    for r in results:
        table.add_row(r.name, "[green]OK[/green]" if r.ok else "[red]FAIL[/red]", r.detail)
    console.print(table)
    raise typer.Exit(0 if all(r.ok for r in results) else 1)


@app.command()
def docs(
    write: Annotated[bool, typer.Option("--write", help="Regenerate schemas/asyncapi.json and exit.")] = False,
    check: Annotated[bool, typer.Option(help="Fail if schemas/asyncapi.json differs from the code.")] = False,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> None:
    """Serve the AsyncAPI document of every topic the worker reads and writes.

    Generated from the code with FastStream; the committed copy is schemas/asyncapi.json. The
    page's viewer loads its script from a CDN; /asyncapi.json works offline.

    Example: pipeline docs --port 8000   (then open http://127.0.0.1:8000)
    """
    from pipeline.contracts.asyncapi import asyncapi_drifted, serve_docs, write_asyncapi

    if check:
        if asyncapi_drifted():
            err.print("[red]schemas/asyncapi.json is out of date[/red] (run: pipeline docs --write)")
            raise typer.Exit(1)
        console.print("asyncapi.json up to date")
        return
    if write:
        console.print(f"wrote {write_asyncapi()}")
        return
    serve_docs(host, port)


@app.command()
def schemas(
    out: Annotated[Path, typer.Option(help="Directory of the generated JSON Schemas.")] = Path("schemas"),
    check: Annotated[bool, typer.Option(help="Fail if the files differ from the models.")] = False,
) -> None:
    """Generate (or check) the public JSON Schemas of every event."""
    from pipeline.contracts.schema_export import drifted_schemas, write_schemas

    if check:
        stale = drifted_schemas(out)
        if stale:
            err.print(f"[red]schemas out of date:[/red] {', '.join(stale)} (run: pipeline schemas)")
            raise typer.Exit(1)
        console.print("schemas up to date")
        return
    for path in write_schemas(out):
        console.print(f"wrote {path}")


from pipeline.cli.convert import config_app  # noqa: E402  # `pipeline config convert`

app.add_typer(config_app, name="config")


def main() -> None:
    with contextlib.suppress(BrokenPipeError):
        app()
    sys.stdout.flush()

