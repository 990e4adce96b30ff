"""Rerank's pure parts: the request contract, the answer's parsing, per-query pricing, cache keys,
and the simulator's deterministic scores (no broker, no server)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.catalog.models import ModelSpec, Price
from pipeline.contracts.models import MAX_RERANK_DOCUMENTS, CompletionReply, CompletionRequest, ErrorCode, RerankResult
from pipeline.simulator import rerank as sim_rerank
from pipeline.stages.cache import cache_key
from pipeline.stages.cost import search_cost, usage_cost
from pipeline.stages.validate import Rejection, validate_request
from pipeline.transport.llm_rerank import parse_rerank
from pipeline.transport.provider import ProviderError, TokenUsage, search_units

BASE = {"request_id": "r-1", "task_type": "rerank", "kind": "rerank"}


def verdict(**fields: Any) -> CompletionRequest | Rejection:
    doc = {**BASE, **fields}
    return validate_request(json.dumps(doc).encode(), max_bytes=1 << 22, reply_topic_allowed=lambda _, __: True)


def refusal(**fields: Any) -> str:
    result = verdict(**fields)
    assert isinstance(result, Rejection) and result.code is ErrorCode.SCHEMA_INVALID, result
    return result.detail


def test_a_rerank_request_takes_query_documents_and_top_n() -> None:
    request = verdict(query="q", documents=["a", "b"], top_n=1)
    assert isinstance(request, CompletionRequest)
    assert (request.query, request.documents, request.top_n) == ("q", ["a", "b"], 1)


@pytest.mark.parametrize(("fields", "named"), [
    ({"documents": ["a"]}, "query"),
    ({"query": "q"}, "documents"),
    ({"query": "q", "documents": []}, "documents"),
    ({"query": "q", "documents": [""]}, "documents"),
    ({"query": "", "documents": ["a"]}, "query"),
    ({"query": "q", "documents": ["a"] * (MAX_RERANK_DOCUMENTS + 1)}, "documents"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ({"query": "q", "documents": ["a"], "messages": [{"role": "user", "content": "x"}]}, "messages"),
    ({"query": "q", "documents": ["a"], "input": "x"}, "input"),
    ({"query": "q", "documents": ["a"], "stream": True}, "stream"),
])
def test_a_bad_rerank_request_is_refused_naming_the_field(fields: dict[str, Any], named: str) -> None:
    assert named in refusal(**fields)


@pytest.mark.parametrize("kind", ["completion", "embedding"])
def test_rerank_fields_belong_to_rerank_requests(kind: str) -> None:
    shape = {"messages": [{"role": "user", "content": "x"}]} if kind == "completion" else {"input": "x"}
    detail = refusal(kind=kind, query="q", top_n=2, **shape)
    assert "query, top_n belong to rerank requests" in detail


def reply(**response: Any) -> Any:
    return SimpleNamespace(**{"results": None, "meta": None, **response})


SPEC = SimpleNamespace(name="sim-rerank")


def test_parse_orders_results_and_reads_search_units_and_tokens() -> None:
    parsed = parse_rerank(reply(results=[{"index": 0, "relevance_score": 0.1}, {"index": 2, "relevance_score": 0.9}],
                                meta={"billed_units": {"search_units": 3}, "tokens": {"input_tokens": 42}}),
                          SPEC, documents=3, top_n=None)  # type: ignore[arg-type]
    assert parsed.rerank_results == (RerankResult(index=2, relevance_score=0.9),
                                     RerankResult(index=0, relevance_score=0.1))
    assert (parsed.prompt_tokens, parsed.usage.search_units) == (42, 3)


def test_without_billed_units_cohere_rule_stands_in() -> None:
    parsed = parse_rerank(reply(results=[{"index": 0, "relevance_score": 1.0}]), SPEC, documents=250,
                          top_n=1)  # type: ignore[arg-type]
    assert parsed.usage.search_units == 3 == search_units(250)
    assert (search_units(1), search_units(100), search_units(101)) == (1, 1, 2)


@pytest.mark.parametrize("results", [
    None,
    [{"index": 5, "relevance_score": 0.5}],  # no such document
    [{"index": 0, "relevance_score": 0.5}, {"index": 0, "relevance_score": 0.4}],  # one document twice
    [{"index": 0}],  # no score
    [{"index": 0, "relevance_score": "high"}],
])
def test_an_unusable_rerank_answer_is_malformed(results: Any) -> None:
    with pytest.raises(ProviderError) as info:
        parse_rerank(reply(results=results), SPEC, documents=2, top_n=None)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.MALFORMED_RESPONSE and "sim-rerank" in info.value.message


def spec(price: Price | None = None, litellm_model: str = "cohere/rerank-v3.5") -> ModelSpec:
    return ModelSpec(name="r", litellm_model=litellm_model, capabilities=frozenset({"rerank"}), price=price)


def test_search_units_are_priced_per_query() -> None:
    assert search_cost(spec(), 2) == pytest.approx(0.004)  # LiteLLM's input_cost_per_query for rerank-v3.5
    assert search_cost(spec(Price(input_per_mtok=1, output_per_mtok=1, per_query=0.01)), 3) == pytest.approx(0.03)
    assert search_cost(spec(litellm_model="cohere/no-such-reranker"), 2) == 0.0
    # A rerank's usage is billed by its units alone, even with tokens reported.
    assert usage_cost(spec(), TokenUsage(prompt_tokens=1000, search_units=1)) == pytest.approx(0.002)


def test_catalog_refuses_a_rerank_model_without_a_query_price(tmp_path: Any) -> None:
    from pipeline.catalog.errors import ConfigError
    from pipeline.catalog.models import load_models

    file = tmp_path / "models.yaml"
    file.write_text("models:\n  my-rerank:\n    litellm_model: openai/gpt-4o-mini\n    capabilities: [rerank]\n")
    with pytest.raises(ConfigError) as info:
        load_models(file)
    assert "models.my-rerank.price.per_query" in str(info.value)
    file.write_text("models:\n  my-rerank:\n    litellm_model: openai/gpt-4o-mini\n    capabilities: [rerank]\n"
                    "    price: {input_per_mtok: 0, output_per_mtok: 0, per_query: 0.001}\n")
    assert load_models(file)["my-rerank"].price.per_query == 0.001  # type: ignore[union-attr]


def test_cache_keys_tell_rerank_requests_apart() -> None:
    one = CompletionRequest.model_validate({**BASE, "query": "q", "documents": ["a", "b"]})
    keys = {cache_key("m", one), cache_key("m", one.model_copy(update={"documents": ["b", "a"]})),
            cache_key("m", one.model_copy(update={"query": "other"})),
            cache_key("m", one.model_copy(update={"top_n": 1}))}
    assert len(keys) == 4


def test_the_reply_carries_results() -> None:
    doc = CompletionReply(request_id="r", status="ok", results=[RerankResult(index=1, relevance_score=0.5)]).model_dump(
        mode="json")
    assert doc["results"] == [{"index": 1, "relevance_score": 0.5}]


def test_simulator_scores_by_query_word_overlap() -> None:
    assert sim_rerank.relevance("Red apple", "an APPLE that is red") == 1.0
    assert sim_rerank.ranked("red apple", ["pear", "red car", "red apple"], top_n=2) == [(2, 1.0), (1, 0.5)]
    with pytest.raises(sim_rerank.RerankRequestError, match="top_n"):
        sim_rerank.parse({"query": "q", "documents": ["a"], "top_n": True})
    assert sim_rerank.document_text({"title": "T", "body": "B"}, ["body"]) == "B"


def test_the_context_window_bounds_each_query_document_pair_not_their_sum() -> None:
    from pathlib import Path

    from pipeline.catalog import load_catalog
    from pipeline.stages.route import RoutePlan, plan_route

    catalog = load_catalog(Path(__file__).resolve().parents[2] / "config")
    page = "word " * 1500  # ~1,500 tokens: eight of them exceed sim-rerank's 4,096 together, not one by one
    fits = plan_route(CompletionRequest.model_validate({**BASE, "query": "q", "documents": [page] * 8}), catalog)
    assert isinstance(fits, RoutePlan) and fits.candidates[0].spec.name == "sim-rerank"
    long = plan_route(CompletionRequest.model_validate({**BASE, "query": "q", "documents": ["word " * 5000]}), catalog)
    assert isinstance(long, RoutePlan)  # only the larger window serves it
    assert [c.spec.name for c in long.candidates] == ["sim-rerank-fast"]
    assert [(s.model, s.reason.value) for s in long.skipped] == [("sim-rerank", "context_too_long")]


def test_a_cached_rerank_answer_keeps_its_results_and_search_units() -> None:
    from pipeline.transport.provider import ProviderResponse
    from pipeline.worker.answer_cache import decode_answer, encode_answer

    answer = ProviderResponse(content=None, prompt_tokens=7, completion_tokens=0,
                              details=TokenUsage(prompt_tokens=7, search_units=2),
                              rerank_results=(RerankResult(index=1, relevance_score=0.75),))
    assert decode_answer(encode_answer(answer, "acme")) == answer
