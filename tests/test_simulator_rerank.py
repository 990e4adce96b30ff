"""Rerank against the simulator's Cohere wire format, through LiteLLM's real rerank code: first
`litellm.arerank` itself, then the pipeline's seam (`LiteLLMProvider`) and stages (route, call with
fallback, reply, usage) over config/models.yaml's sim-rerank entries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import litellm
import pytest

from pipeline.catalog import Catalog, load_catalog
from pipeline.contracts.models import AttemptOutcome, CompletionRequest, ErrorCode, ReplyStatus, RequestKind
from pipeline.simulator import FaultRule, SimulatorClient
from pipeline.stages.call import CallContext, call_with_fallback
from pipeline.stages.reply import build_reply, usage_events
from pipeline.stages.route import RoutePlan, plan_route
from pipeline.transport.llm import classify

REPO = Path(__file__).resolve().parents[1]
KEY = "co-sim-SECRET-rerank-key"
DOCUMENTS = ["the green pear is ripe", "a red apple a day", "red cars are fast", "nothing relevant"]


async def arerank(simulator: Any, **kw: Any) -> Any:
    return await litellm.arerank(model="cohere/rerank-v3.5", api_base=simulator.url, api_key=KEY,
                                 query="red apple", documents=DOCUMENTS, **kw)


async def test_litellm_rerank_gets_deterministic_scores_and_billed_units(simulator: Any, sim: SimulatorClient) -> None:
    response = await arerank(simulator, top_n=3)
    assert [r["index"] for r in response.results] == [1, 2, 0]  # both words, one word, tie broken by order
    assert [r["relevance_score"] for r in response.results] == [1.0, 0.5, 0.0]
    assert response.meta["billed_units"]["search_units"] == 1
    (entry,) = await sim.requests()
    assert (entry["api"], entry["kind"], entry["path"], entry["model"]) == ("cohere", "rerank", "/v2/rerank",
                                                                           "rerank-v3.5")
    assert (entry["documents"], entry["params"]["top_n"], entry["key_header"]) == (4, 3, "authorization")
    assert KEY not in json.dumps(entry)


async def test_documents_as_objects_and_returned_documents(simulator: Any, sim: SimulatorClient) -> None:
    response = await litellm.arerank(model="cohere/rerank-v3.5", api_base=simulator.url, api_key=KEY,
                                     query="apple", documents=[{"text": "pear"}, {"text": "apple pie"}],
                                     return_documents=True)
    assert response.results[0]["index"] == 1 and response.results[0]["document"] == {"text": "apple pie"}


async def test_a_bad_body_is_cohere_400_naming_the_field(simulator: Any, sim: SimulatorClient) -> None:
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        reply = await http.post("/v2/rerank", json={"model": "rerank-v3.5", "query": "q", "documents": []})
    assert reply.status_code == 400 and "documents" in reply.json()["message"]


@pytest.mark.parametrize(("fault", "exc_type", "code"), [
    ("rate_limit", litellm.RateLimitError, ErrorCode.RATE_LIMITED),
    ("auth", litellm.AuthenticationError, ErrorCode.AUTH_ERROR),
    ("server_error", litellm.InternalServerError, ErrorCode.SERVER_ERROR),
    ("context_length", litellm.ContextWindowExceededError, ErrorCode.CONTEXT_WINDOW_EXCEEDED),
    ("bad_request", litellm.BadRequestError, ErrorCode.BAD_REQUEST),
])
async def test_cohere_fault_gives_litellms_exception_and_our_class(
    simulator: Any, sim: SimulatorClient, fault: str, exc_type: type[Exception], code: ErrorCode
) -> None:
    await sim.set_rules([FaultRule(api="cohere", fault=fault)])  # type: ignore[arg-type]
    with pytest.raises(exc_type) as info:
        await arerank(simulator)
    error = classify(info.value, (KEY,))
    assert error.code is code, f"{type(info.value).__name__}: {info.value}"
    assert KEY not in error.message
    (entry,) = await sim.requests()
    assert (entry["outcome"], entry["status"]) == (fault, error.status)


# --------------------------------------------------------------------------- through the pipeline


@pytest.fixture
async def catalog(simulator: Any, sim: SimulatorClient) -> Catalog:
    return load_catalog(REPO / "config")  # after the session simulator set PIPELINE_SIMULATOR_URL


def rerank_request(**kw: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({
        "request_id": "rerank-1", "task_type": "rerank", "kind": "rerank", "cache": False,
        "query": "red apple", "documents": DOCUMENTS, **kw})


async def test_a_rerank_falls_back_and_both_attempts_are_priced_per_search_unit(
    catalog: Catalog, sim: SimulatorClient, litellm_provider: Any,
) -> None:
    await sim.set_rules([FaultRule(api="cohere", model="rerank-v3.5", fault="auth")])  # the first model fails
    req = rerank_request(top_n=2)
    plan = plan_route(req, catalog)
    assert isinstance(plan, RoutePlan)
    assert [c.spec.name for c in plan.candidates] == ["sim-rerank", "sim-rerank-fast"]
    assert plan.candidates[0].estimated_cost_usd == pytest.approx(0.002)  # one search unit, LiteLLM's price
    outcome = await call_with_fallback(req, plan, CallContext(litellm_provider, 5))
    reply = build_reply(req, plan, outcome, 1.0)
    assert reply.status is ReplyStatus.OK and reply.model == "sim-rerank-fast"
    assert [(r.index, r.relevance_score) for r in reply.results or ()] == [(1, 1.0), (2, 0.5)]
    assert reply.cost_usd == pytest.approx(0.002)  # rerank-v4.0-fast: 0.002 USD per search unit
    usage = usage_events(req, plan, outcome)
    assert [(u.model, u.status, u.kind) for u in usage] == [
        ("sim-rerank", AttemptOutcome.ERROR, RequestKind.RERANK),
        ("sim-rerank-fast", AttemptOutcome.OK, RequestKind.RERANK)]
    assert [u.cost_usd for u in usage] == [0.0, pytest.approx(0.002)]
    assert [u.attributes for u in usage] == [{}, {"search_units": "1"}]  # what the answer was billed by
    assert [e["model"] for e in await sim.requests()] == ["rerank-v3.5", "rerank-v4.0-fast"]


async def test_rerank_routes_only_to_rerank_models(catalog: Catalog) -> None:
    plan = plan_route(rerank_request(task_type="summarize"), catalog)  # a chat route: no model can rerank
    assert not isinstance(plan, RoutePlan)
    assert plan.code is ErrorCode.NO_ELIGIBLE_MODEL


async def test_many_documents_cost_more_search_units(
    catalog: Catalog, sim: SimulatorClient, litellm_provider: Any,
) -> None:
    req = rerank_request(documents=[f"document {i}" for i in range(150)], model="sim-rerank")
    plan = plan_route(req, catalog)
    assert isinstance(plan, RoutePlan)
    assert plan.candidates[0].estimated_cost_usd == pytest.approx(0.004)  # 150 documents: 2 search units
    outcome = await call_with_fallback(req, plan, CallContext(litellm_provider, 5))
    reply = build_reply(req, plan, outcome, 1.0)
    assert reply.cost_usd == pytest.approx(0.004) and len(reply.results or ()) == 150
