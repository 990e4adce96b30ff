"""What `pipeline models --catalog` and `pipeline route` print: one document each, as a table or JSON.

The JSON documents are stable (keys always present, `null` when unknown; lists in catalog or
routing order) so scripts can read them; their shape is described in docs/cli.md. Neither names
a key: deployments show where they point (credentials in a URL masked), never what they sign with.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from pipeline.catalog import Catalog, ModelSpec
from pipeline.catalog.resilience import Deployment
from pipeline.contracts.models import CompletionRequest
from pipeline.stages.cost import per_token_prices
from pipeline.stages.route import RoutePlan, RouteRefusal
from pipeline.urls import mask_url

FORMATS = ("table", "json")


def _price(spec: ModelSpec, litellm_model: str) -> dict[str, Any]:
    """USD per million tokens, and whether the catalog or LiteLLM's price map set it."""
    inp, out = per_token_prices(spec, litellm_model)
    return {"input_per_mtok": round(inp * 1e6, 6), "output_per_mtok": round(out * 1e6, 6),
            "source": "catalog" if spec.price is not None else "litellm"}


def _deployment(spec: ModelSpec, d: Deployment) -> dict[str, Any]:
    return {"name": d.name, "id": d.id, "provider": d.provider, "litellm_model": d.litellm_model,
            "api_base": mask_url(d.api_base) if d.api_base else None, "weight": d.weight, "rpm": d.rpm, "tpm": d.tpm,
            "price": _price(spec, d.litellm_model)}


def catalog_document(catalog: Catalog) -> dict[str, Any]:
    """Every catalog model with its deployments, capabilities, context window, prices and fallbacks."""
    return {"models": [
        {"name": spec.name, "provider": spec.provider, "litellm_model": spec.litellm_model,
         "disabled": spec.disabled, "capabilities": sorted(spec.capabilities),
         "context_window": spec.context_window, "quality": spec.quality,
         "price": _price(spec, spec.litellm_model), "fallbacks": list(spec.fallbacks),
         "context_window_fallbacks": list(spec.context_window_fallbacks),
         "content_policy_fallbacks": list(spec.content_policy_fallbacks),
         "deployments": [_deployment(spec, d) for d in spec.deployments]}
        for spec in catalog.models.values()
    ]}


def print_catalog(console: Console, catalog: Catalog, fmt: str) -> None:
    doc = catalog_document(catalog)
    if fmt == "json":
        console.print_json(json.dumps(doc))
        return
    table = RichTable(title="Model catalog (USD per million tokens)")
    for column in ("model", "provider", "deployments", "capabilities", "context_window", "in_per_mtok",
                   "out_per_mtok", "quality", "fallbacks", "state"):
        table.add_column(column, overflow="fold")
    for m in doc["models"]:
        price = m["price"]
        table.add_row(
            m["name"], ",".join(dict.fromkeys(d["provider"] for d in m["deployments"])),  # each deployment's
            ", ".join(d["name"] for d in m["deployments"]), ",".join(m["capabilities"]),
            str(m["context_window"] or "-"), f"{price['input_per_mtok']:g}", f"{price['output_per_mtok']:g}",
            str(m["quality"]), _fallbacks_cell(m), "disabled" if m["disabled"] else "enabled")
    console.print(table)


def _fallbacks_cell(model: dict[str, Any]) -> str:
    """The general fallbacks, then each conditional list labelled with the failure it answers."""
    parts = [", ".join(model["fallbacks"])] if model["fallbacks"] else []
    for key, label in (("context_window_fallbacks", "context window"), ("content_policy_fallbacks", "content policy")):
        if model[key]:
            parts.append(f"{label}: {', '.join(model[key])}")
    return "; ".join(parts) or "-"


def route_document(
    request: CompletionRequest, plan: RoutePlan | RouteRefusal, catalog: Catalog, cost_preference: str | None,
    budgets: list[dict[str, Any]],
) -> dict[str, Any]:
    """The routing decision as data: candidates in the order they would be tried, skips, refusal, budgets."""
    route = catalog.routing.route_for(request.task_type) if request.model is None else None
    preference = cost_preference or (route.cost_preference.value if route is not None else "listed")
    fallbacks = plan.fallbacks if isinstance(plan, RoutePlan) else ()
    candidates = [] if isinstance(plan, RouteRefusal) else [
        {"order": i, "model": c.spec.name, "provider": c.spec.provider, "role": "primary" if i == 1 else "fallback",
         "from": "fallbacks" if c.spec.name in fallbacks else ("model" if request.model else "route"),
         "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
         "estimated_cost_usd": round(c.estimated_cost_usd, 9)}
        for i, c in enumerate(plan.candidates, start=1)
    ]
    return {
        "task_type": request.task_type, "tenant": request.tenant, "model": request.model,
        "cost_preference": preference,
        "candidates": candidates,
        "skipped": [{"model": s.model, "reason": s.reason.value, "detail": s.detail} for s in plan.skipped],
        "fallbacks": list(fallbacks),
        "fallbacks_source": plan.fallbacks_source.value if isinstance(plan, RoutePlan) and plan.fallbacks_source
        else None,
        "refusal": {"code": plan.code.value, "detail": plan.detail} if isinstance(plan, RouteRefusal) else None,
        "budgets": budgets,
    }


def print_route(console: Console, doc: dict[str, Any], fmt: str, *, shared: bool) -> None:
    if fmt == "json":
        console.print_json(json.dumps(doc))
        return
    table = RichTable(title=f"Route for task_type={doc['task_type']} tenant={doc['tenant']} "
                            f"(cost_preference={doc['cost_preference']})")
    for column in ("order", "model", "provider", "prompt_tokens", "completion_tokens", "est_cost_usd", "decision"):
        table.add_column(column)
    for c in doc["candidates"]:
        decision = c["role"] + (" (fallbacks)" if c["from"] == "fallbacks" else "")
        table.add_row(str(c["order"]), c["model"], c["provider"], str(c["prompt_tokens"]), str(c["completion_tokens"]),
                      f"{c['estimated_cost_usd']:.6f}", decision)
    for s in doc["skipped"]:
        table.add_row("-", s["model"], "", "", "", "", f"skipped: {s['reason']} {s['detail']}".strip())
    console.print(table)
    if doc["refusal"] is not None:
        console.print(f"[red]refused[/red] {doc['refusal']['code']}: {doc['refusal']['detail']}")
    scope = "shared spend from Redis" if shared else "this process only: set REDIS_URL"
    budget_table = RichTable(title=f"Budgets ({scope})")
    for column in ("budget", "window", "limit_usd", "spent_or_reserved_usd", "remaining_usd"):
        budget_table.add_column(column)
    for b in doc["budgets"]:
        budget_table.add_row(b["budget"], b["window"], f"{b['limit_usd']:.2f}", f"{b['spent_or_reserved_usd']:.6f}",
                             f"{b['remaining_usd']:.6f}")
    console.print(budget_table)
