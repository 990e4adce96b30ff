"""The request commands: `send` publishes one request and prints its reply, `route` previews routing.

Both build a `CompletionRequest` from the same flags (`--fallback`/`--no-fallbacks` included)
and stop with exit code 2 naming the invalid field; `send` goes through Kafka with the SDK,
`route` only plans, calling nothing. main.py registers the commands; pydantic models, the SDK
and the routing stage are imported only when a command runs.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from pipeline.cli.common import CostPreferenceName, catalog_or_exit, console, err, fallbacks_flag, load_settings


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
    set_field: Annotated[list[str] | None, typer.Option(
        "--set", help="Any request field FIELD=VALUE (repeat), VALUE as JSON when it parses: top_p=0.9, seed=7, "
                      "n=2, stop='[\"END\"]', kind=rerank, documents='[\"a\",\"b\"]'.")] = None,
) -> None:
    """Publish one request, wait for its reply, print it. Exit 1 on an error reply, 3 on timeout.

    Built on `pipeline.client.PipelineClient`.

    Examples: pipeline send -t summarize -m "Summarise: Kafka is a log."
              pipeline send -t summarize -m "..." --model gpt-4o --fallback claude-haiku-4-5
              pipeline send -t summarize --template summarize-ticket --var ticket="Printer on fire" --stream
              pipeline send -t chat -m "Name a colour" --set n=2 --set seed=7 --set top_p=0.9
    """
    from pydantic import ValidationError

    from pipeline.client import PipelineClient, ReplyTimeout, StreamRestart
    from pipeline.contracts.models import CompletionChunk, CompletionRequest

    settings = load_settings()
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
             "fallbacks": fallbacks_flag(fallback, no_fallbacks)}
    doc.update({key: value for key, value in flags.items() if value is not None})  # flags win over the file
    doc.update(_assignments(set_field or ()))
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



def _assignments(assignments: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`--set FIELD=VALUE` pairs; VALUE as JSON when it parses (numbers, lists, objects, true),
    else the text itself. The request model names any field it does not know."""
    fields: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep or not name:
            err.print(f"[red]--set {assignment!r}:[/red] expected FIELD=VALUE")
            raise typer.Exit(2)
        try:
            fields[name] = json.loads(text)
        except ValueError:
            fields[name] = text
    return fields


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

    settings = load_settings()
    catalog = catalog_or_exit(settings)
    text = message if message is not None else " ".join(["word"] * max(1, tokens))
    doc = {"request_id": "route-preview", "task_type": task_type, "tenant": tenant, "model": model,
           "max_tokens": max_tokens, "max_cost_usd": max_cost_usd, "messages": [{"role": "user", "content": text}],
           "fallbacks": fallbacks_flag(fallback, no_fallbacks)}
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
