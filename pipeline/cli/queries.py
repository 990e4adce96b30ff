"""The query commands: `models` (deployment health, `--check` probes, `--catalog`) and `report`.

They read what the pipeline has recorded (shared health in Redis, usage in ClickHouse) or the
config and print tables or JSON; none publishes anything. main.py registers the commands;
LiteLLM, Redis and ClickHouse clients are imported only when a command runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from pipeline.cli.common import catalog_or_exit, console, err, load_settings


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

    settings = load_settings()
    catalog = catalog_or_exit(settings)
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
    settings = load_settings()
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
