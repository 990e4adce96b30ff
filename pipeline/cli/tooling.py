"""The tooling commands: `demo`, `check` (config and connectivity), `docs` (AsyncAPI), `schemas`.

They help run and maintain a deployment rather than serve traffic: a self-contained demo, a
health check of every outside world, and the generated contract files under schemas/. main.py
registers the commands; each imports its machinery only when it runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import console, err, load_settings


def demo(
    requests: Annotated[int, typer.Option(help="How many requests to publish.")] = 12,
    data_dir: Annotated[Path | None, typer.Option(help="chDB data directory (persists between runs).")] = None,
) -> None:
    """Embedded broker + provider simulator + chDB: publish requests, print replies and costs, exit."""
    from pipeline.cli.demo import run_demo
    from pipeline.observability.logs import configure_logging

    configure_logging("ERROR")  # the demo reports through its tables; rejections are part of the show
    raise typer.Exit(asyncio.run(run_demo(console, requests=requests, data_dir=data_dir)))


def check() -> None:
    """Validate the config and reach Kafka, ClickHouse, Redis and every provider endpoint.

    Prints a table of what is OK and what is not; exit 1 if anything is not.

    Example: KAFKA_BOOTSTRAP_SERVERS=kafka:9092 CLICKHOUSE_URL=http://ch:8123 pipeline check
    """
    from rich.table import Table as RichTable

    from pipeline.cli.checks import run_checks

    settings = load_settings()
    with console.status("checking configuration, Kafka, ClickHouse, Redis and providers..."):
        results = asyncio.run(run_checks(settings))
    table = RichTable(title="pipeline check")
    for column in ("check", "status", "detail"):
        table.add_column(column)
    for r in results:
        table.add_row(r.name, "[green]OK[/green]" if r.ok else "[red]FAIL[/red]", r.detail)
    console.print(table)
    raise typer.Exit(0 if all(r.ok for r in results) else 1)


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
