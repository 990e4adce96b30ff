"""Routing eligibility and ordering, budget lines and the ledger's reserve/settle arithmetic."""

from datetime import UTC, datetime

import pytest

from pipeline.catalog import Catalog, load_catalog
from pipeline.catalog.budgets import CostControls
from pipeline.contracts.models import CompletionRequest, ErrorCode, SkipReason
from pipeline.stages.budget import BudgetGuard, BudgetRefusal, Reservation, budget_lines
from pipeline.stages.route import RoutePlan, RouteRefusal, plan_route
from pipeline.state.budget import InProcessLedger

MODELS = """
models:
  cheap:   {litellm_model: openai/gpt-4o-mini, context_window: 4000, quality: 2, capabilities: [json_mode]}
  pricey:  {litellm_model: openai/gpt-4o, context_window: 128000, quality: 5, capabilities: [json_mode, vision]}
  claude:  {litellm_model: anthropic/claude-haiku-4-5, context_window: 200000, quality: 4, capabilities: [vision]}
  retired: {litellm_model: openai/gpt-4o-mini, disabled: true}
"""
ROUTING = """
routes:
  listed:   {candidates: [pricey, claude, cheap]}
  cheapest: {candidates: [pricey, claude, cheap], cost_preference: cheapest}
  quality:  {candidates: [cheap, claude, pricey], cost_preference: quality}
  vision:   {candidates: [cheap, retired, claude, pricey], capabilities: [vision]}
cost_controls:
  alert_threshold: 0.5
  global: {daily_usd: 100}
  default_tenant: {daily_usd: 1, monthly_usd: 10, request_ceiling_usd: 0.5}
  tenants:
    acme: {daily_usd: 2}
  task_types:
    vision: {monthly_usd: 50}
"""


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    d = tmp_path_factory.mktemp("cfg")
    (d / "models.yaml").write_text(MODELS)
    (d / "routing.yaml").write_text(ROUTING)
    return load_catalog(d)


def req(task: str, text: str = "hello", **kw: object) -> CompletionRequest:
    return CompletionRequest(request_id="r", task_type=task, messages=[{"role": "user", "content": text}], **kw)


def names(plan: RoutePlan | RouteRefusal) -> list[str]:
    assert isinstance(plan, RoutePlan), plan
    return [c.spec.name for c in plan.candidates]


def test_orders_by_preference(catalog: Catalog) -> None:
    assert names(plan_route(req("listed"), catalog)) == ["pricey", "claude", "cheap"]
    assert names(plan_route(req("cheapest"), catalog)) == ["cheap", "claude", "pricey"]
    assert names(plan_route(req("quality"), catalog)) == ["pricey", "claude", "cheap"]


def test_capabilities_and_disabled_are_skipped_with_reasons(catalog: Catalog) -> None:
    plan = plan_route(req("vision"), catalog)
    assert names(plan) == ["claude", "pricey"]
    assert [(s.model, s.reason, s.detail) for s in plan.skipped] == [
        ("cheap", SkipReason.MISSING_CAPABILITY, "vision"), ("retired", SkipReason.DISABLED, "")]


def test_too_long_prompt_skips_small_context_model(catalog: Catalog) -> None:
    long_text = "word " * 5000  # about 5,000 tokens: more than cheap's 4,000 window
    plan = plan_route(req("cheapest", long_text, max_tokens=100), catalog)
    assert names(plan) == ["claude", "pricey"]
    (skip,) = plan.skipped
    assert skip.model == "cheap" and skip.reason is SkipReason.CONTEXT_TOO_LONG


def test_tight_cost_ceiling_picks_cheaper_model(catalog: Catalog) -> None:
    # 1,000 completion tokens: gpt-4o ~0.01 USD, haiku ~0.005, gpt-4o-mini ~0.0006
    plan = plan_route(req("listed", max_tokens=1000, max_cost_usd=0.001), catalog)
    assert names(plan) == ["cheap"]
    assert {s.model: s.reason for s in plan.skipped} == {
        "pricey": SkipReason.OVER_COST_CEILING, "claude": SkipReason.OVER_COST_CEILING}
    refusal = plan_route(req("listed", max_tokens=1000, max_cost_usd=0.0000001), catalog)
    assert isinstance(refusal, RouteRefusal) and refusal.code is ErrorCode.BUDGET_EXCEEDED


def test_no_eligible_model(catalog: Catalog) -> None:
    refusal = plan_route(req("vision", "word " * 300_000, max_tokens=10), catalog)
    assert isinstance(refusal, RouteRefusal) and refusal.code is ErrorCode.NO_ELIGIBLE_MODEL
    assert "context_too_long" in refusal.detail


def test_estimate_uses_price_map(catalog: Catalog) -> None:
    plan = plan_route(req("listed", max_tokens=1000), catalog)
    pricey = plan.candidates[0]
    assert pricey.estimated_cost_usd == pytest.approx(pricey.prompt_tokens * 2.5e-6 + 1000 * 10e-6)


def test_budget_lines_per_scope_and_window(catalog: Catalog) -> None:
    now = datetime(2026, 11, 23, 10, tzinfo=UTC)
    controls = catalog.routing.cost_controls
    keys = [line.key for line in budget_lines(controls, "acme", "vision", now)]
    assert keys == ["global:daily:2026-11-23", "tenant=acme:daily:2026-11-23", "task_type=vision:monthly:2026-11"]
    keys = [line.key for line in budget_lines(controls, "other", "listed", now)]
    assert keys == ["global:daily:2026-11-23", "tenant=other:daily:2026-11-23", "tenant=other:monthly:2026-11"]
    assert controls.request_ceiling("other", None) == 0.5 and controls.request_ceiling("acme", 0.1) == 0.1


async def test_reserve_settle_release_and_one_alert(catalog: Catalog) -> None:
    guard = BudgetGuard(InProcessLedger(), clock=lambda: datetime(2026, 11, 23, tzinfo=UTC))
    controls = catalog.routing.cost_controls
    r1 = await guard.reserve(controls, "acme", "listed", 0.8)
    r2 = await guard.reserve(controls, "acme", "listed", 0.8)
    assert isinstance(r1, Reservation) and isinstance(r2, Reservation)
    refused = await guard.reserve(controls, "acme", "listed", 0.8)  # 2.4 > acme's 2.0 daily
    assert isinstance(refused, BudgetRefusal) and refused.line.name == "tenant acme daily"
    assert "tenant acme daily budget" in refused.describe()
    assert (await guard.settle(r2, 0.0, 0.5)).alerts == []  # a failed call releases its reservation
    alerts = (await guard.settle(r1, 1.1, 0.5)).alerts  # actual cost above the estimate: 1.1 >= 50% of 2.0
    assert [a.line.name for a in alerts] == ["tenant acme daily"]
    r3 = await guard.reserve(controls, "acme", "listed", 0.1)
    assert isinstance(r3, Reservation)
    assert (await guard.settle(r3, 0.1, 0.5)).alerts == []  # the alert fires once per window
    assert await guard.ledger.values(["tenant=acme:daily:2026-11-23"]) == [1_200_000]


def test_cost_controls_validation() -> None:
    with pytest.raises(ValueError, match="exceeds monthly"):
        CostControls.model_validate({"tenants": {"x": {"daily_usd": 5, "monthly_usd": 1}}})
