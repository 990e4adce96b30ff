"""Exact cost: what the pipeline records for a call, priced from the usage details the provider
returned, against the providers' published per-token prices computed by hand here (never
against LiteLLM's own price map).

Each case is a real LiteLLM call (its OpenAI or Anthropic provider code) to the provider
simulator, which reports the case's usage details (cached input, cache writes, reasoning, `n`
choices); the call stage prices it and `usage_events` records it. The table in
docs/analytics.md ("Exact cost") is these cases: `python -m tests.unit.test_cost_accuracy --write`
rewrites it, and `test_the_docs_table_is_these_cases` fails when it is stale.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline.catalog import Catalog, ModelSpec, Price, RoutingPolicy
from pipeline.contracts.models import CompletionRequest, UsageEvent
from pipeline.simulator import ProviderSimulator, SimulatorClient, SimulatorConfig, wire
from pipeline.stages.call import CallContext, call_with_fallback
from pipeline.stages.cost import price_cost, usage_cost
from pipeline.stages.reply import usage_events
from pipeline.stages.route import RoutePlan, plan_route
from pipeline.transport.llm import LiteLLMProvider, token_usage
from pipeline.transport.provider import PartialUsage, ProviderResponse, TokenUsage

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
BEGIN, END = "<!-- cost-accuracy-table:begin -->", "<!-- cost-accuracy-table:end -->"

#: Published list prices, USD per million tokens, copied by hand from openai.com/api/pricing and
#: anthropic.com/pricing (Anthropic: a 5-minute cache write is 1.25x input, a cache read 0.1x).
PUBLISHED: dict[str, dict[str, float]] = {
    "gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output": 0.60},
    "gpt-4o": {"input": 2.50, "cached_input": 1.25, "output": 10.00},
    "o3-mini": {"input": 1.10, "cached_input": 0.55, "output": 4.40},
    "claude-sonnet-4-5": {"input": 3.00, "cache_write": 3.75, "cache_read": 0.30, "output": 15.00},
    "claude-haiku-4-5": {"input": 1.00, "cache_write": 1.25, "cache_read": 0.10, "output": 5.00},
    "text-embedding-3-small": {"input": 0.02},
}
OPENAI, ANTHROPIC = "OpenAI", "Anthropic"
#: A catalog price override (config/models.yaml `price:`), every optional rate set.
OVERRIDE = Price(input_per_mtok=2.0, output_per_mtok=8.0, cache_read_per_mtok=0.5, cache_write_per_mtok=2.5,
                 reasoning_per_mtok=12.0)
#: An override with only the plain rates: cache reads and reasoning are billed at them.
PLAIN_OVERRIDE = Price(input_per_mtok=2.0, output_per_mtok=8.0)


def usd(model: str, **tokens: int) -> float:
    """Hand arithmetic: tokens of each class times the published rate of that class."""
    rates = PUBLISHED[model]
    return sum(count * rates[cls] for cls, count in tokens.items()) / 1e6


@dataclass(frozen=True)
class Case:
    """One call: what the simulator reports, what the request asks, and the USD expected by hand."""

    label: str
    provider: str
    litellm_model: str
    usage: str  # the usage details, as the docs table shows them
    expected: float
    sim: dict[str, int] = field(default_factory=dict)  # SimulatorConfig fields
    request: dict[str, Any] = field(default_factory=dict)
    price: Price | None = None

    @property
    def api_base_suffix(self) -> str:
        return "/v1" if self.provider == OPENAI else ""


CASES: tuple[Case, ...] = (
    Case("gpt-4o-mini, plain", OPENAI, "openai/gpt-4o-mini", "1200 in, 300 out",
         usd("gpt-4o-mini", input=1200, output=300), sim={"prompt_tokens": 1200, "completion_tokens": 300}),
    Case("gpt-4o, cached input", OPENAI, "openai/gpt-4o", "2048 in of which 1536 cached, 400 out",
         usd("gpt-4o", input=512, cached_input=1536, output=400),
         sim={"prompt_tokens": 2048, "cached_tokens": 1536, "completion_tokens": 400}),
    Case("gpt-4o-mini, n=3 choices", OPENAI, "openai/gpt-4o-mini", "500 in, 3 choices x 100 out",
         usd("gpt-4o-mini", input=500, output=300), sim={"prompt_tokens": 500, "completion_tokens": 100},
         request={"n": 3}),
    Case("o3-mini, reasoning + cached", OPENAI, "openai/o3-mini",
         "1000 in of which 512 cached, 800 out of which 600 reasoning",
         usd("o3-mini", input=488, cached_input=512, output=800),  # reasoning tokens bill as output
         sim={"prompt_tokens": 1000, "cached_tokens": 512, "completion_tokens": 800, "reasoning_tokens": 600}),
    Case("gpt-4o, cached input, streamed", OPENAI, "openai/gpt-4o", "2048 in of which 1024 cached, 64 out",
         usd("gpt-4o", input=1024, cached_input=1024, output=64),
         sim={"prompt_tokens": 2048, "cached_tokens": 1024, "completion_tokens": 64}, request={"stream": True}),
    Case("claude-sonnet-4-5, cache write", ANTHROPIC, "anthropic/claude-sonnet-4-5",
         "5000 in: 1000 + 4000 written to the cache, 200 out",
         usd("claude-sonnet-4-5", input=1000, cache_write=4000, output=200),
         sim={"prompt_tokens": 5000, "cache_write_tokens": 4000, "completion_tokens": 200}),
    Case("claude-sonnet-4-5, cache read", ANTHROPIC, "anthropic/claude-sonnet-4-5",
         "5000 in: 1000 + 4000 read from the cache, 200 out",
         usd("claude-sonnet-4-5", input=1000, cache_read=4000, output=200),
         sim={"prompt_tokens": 5000, "cached_tokens": 4000, "completion_tokens": 200}),
    Case("claude-haiku-4-5, cache read + write", ANTHROPIC, "anthropic/claude-haiku-4-5",
         "3000 in: 500 + 2000 read + 500 written, 150 out",
         usd("claude-haiku-4-5", input=500, cache_read=2000, cache_write=500, output=150),
         sim={"prompt_tokens": 3000, "cached_tokens": 2000, "cache_write_tokens": 500, "completion_tokens": 150}),
    Case("claude-haiku-4-5, cache read, streamed", ANTHROPIC, "anthropic/claude-haiku-4-5",
         "3000 in: 1000 + 2000 read from the cache, 40 out",
         usd("claude-haiku-4-5", input=1000, cache_read=2000, output=40),
         sim={"prompt_tokens": 3000, "cached_tokens": 2000, "completion_tokens": 40}, request={"stream": True}),
    Case("text-embedding-3-small", OPENAI, "openai/text-embedding-3-small", "3 inputs, 1500 in",
         usd("text-embedding-3-small", input=1500), sim={"prompt_tokens": 1500},
         request={"kind": "embedding", "input": ["one", "two", "three"]}),
    Case("catalog price, every rate set", ANTHROPIC, "anthropic/claude-haiku-4-5",
         "3000 in: 500 + 2000 read + 500 written, 150 out; price 2 / 8, read 0.5, write 2.5",
         (500 * 2.0 + 2000 * 0.5 + 500 * 2.5 + 150 * 8.0) / 1e6,
         sim={"prompt_tokens": 3000, "cached_tokens": 2000, "cache_write_tokens": 500, "completion_tokens": 150},
         price=OVERRIDE),
    Case("catalog price, reasoning rate", OPENAI, "openai/o3-mini",
         "1000 in of which 512 cached, 800 out of which 600 reasoning; price 2 / 8, read 0.5, reasoning 12",
         (488 * 2.0 + 512 * 0.5 + 200 * 8.0 + 600 * 12.0) / 1e6,
         sim={"prompt_tokens": 1000, "cached_tokens": 512, "completion_tokens": 800, "reasoning_tokens": 600},
         price=OVERRIDE),
    Case("catalog price, plain rates only", OPENAI, "openai/gpt-4o", "2048 in of which 1536 cached, 400 out; "
         "price 2 / 8", (2048 * 2.0 + 400 * 8.0) / 1e6,  # no cache rate: cached tokens bill as input
         sim={"prompt_tokens": 2048, "cached_tokens": 1536, "completion_tokens": 400}, price=PLAIN_OVERRIDE),
)
#: The simulator's usage settings a case does not set.
SIM_DEFAULTS = {"prompt_tokens": None, "completion_tokens": 16, "cached_tokens": 0, "cache_write_tokens": 0,
                "reasoning_tokens": 0}


async def record(case: Case, sim_url: str, control: SimulatorClient, provider: LiteLLMProvider) -> UsageEvent:
    """The case through the call stage and the usage-row builder: the row the pipeline stores."""
    await control.configure(**{**SIM_DEFAULTS, **case.sim})
    embedding = case.request.get("kind") == "embedding"
    spec = ModelSpec(name="priced", litellm_model=case.litellm_model, api_base=sim_url + case.api_base_suffix,
                     price=case.price, capabilities=frozenset({"embeddings"} if embedding else ()))
    catalog = Catalog(models={"priced": spec}, routing=RoutingPolicy())
    body = {"request_id": "cost-" + re.sub(r"[^a-z0-9]+", "-", case.label.lower()), "task_type": "cost",
            "model": "priced", "cache": False, **case.request}
    if not embedding:
        body["messages"] = [{"role": "user", "content": "price me"}]
    request = CompletionRequest.model_validate(body)
    plan = plan_route(request, catalog)
    assert isinstance(plan, RoutePlan), plan

    async def sink(model: str, delta: str) -> None:
        return None

    outcome = await call_with_fallback(request, plan, CallContext(provider, 10, on_delta=sink if request.stream
                                                                  else None))
    (event,) = usage_events(request, plan, outcome)
    assert event.status.value == "ok", (event.error_code, outcome.attempts[0].error)
    return event


@pytest.fixture(scope="module")
async def simulator() -> AsyncIterator[ProviderSimulator]:
    async with ProviderSimulator(SimulatorConfig()) as server:
        yield server


@pytest.fixture
async def recorder(simulator: ProviderSimulator) -> AsyncIterator[Callable[[Case], Any]]:
    provider = LiteLLMProvider()
    async with SimulatorClient(simulator.url) as control:
        yield lambda case: record(case, simulator.url, control, provider)
    await provider.aclose()


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
async def test_recorded_cost_is_within_one_percent_of_the_published_price(
    case: Case, recorder: Callable[[Case], Any],
) -> None:
    event = await recorder(case)
    assert event.cost_usd == pytest.approx(case.expected, rel=0.01)


async def test_the_usage_row_carries_the_details_it_was_priced_from(recorder: Callable[[Case], Any]) -> None:
    """Anthropic's input_tokens excludes the cache tokens; the row's prompt_tokens includes them."""
    haiku = next(c for c in CASES if c.label == "claude-haiku-4-5, cache read + write")
    event = await recorder(haiku)
    assert (event.prompt_tokens, event.cached_tokens, event.cache_write_tokens) == (3000, 2000, 500)
    assert event.completion_tokens == 150 and event.total_tokens == 3150
    o3 = next(c for c in CASES if c.label == "o3-mini, reasoning + cached")
    event = await recorder(o3)
    assert (event.prompt_tokens, event.cached_tokens, event.completion_tokens, event.reasoning_tokens) == (
        1000, 512, 800, 600)


async def test_n_choices_are_all_priced(recorder: Callable[[Case], Any]) -> None:
    """Three choices cost three completions: the usage LiteLLM returns covers every choice."""
    one = await recorder(Case("n=1", OPENAI, "openai/gpt-4o-mini", "", 0.0,
                              sim={"prompt_tokens": 500, "completion_tokens": 100}))
    three = await recorder(next(c for c in CASES if c.request.get("n") == 3))
    assert three.completion_tokens == 3 * one.completion_tokens == 300
    assert three.cost_usd - one.cost_usd == pytest.approx(200 * PUBLISHED["gpt-4o-mini"]["output"] / 1e6, rel=0.01)


@pytest.mark.chdb
async def test_the_details_reach_clickhouse(chdb_dir: Path, recorder: Callable[[Case], Any]) -> None:
    """Migration 0008's columns hold what the row was priced from (the same DDL as a server's)."""
    from pipeline.transport.clickhouse import ClickHouseUsageStore, StoredUsage

    event = await recorder(next(c for c in CASES if c.label == "claude-haiku-4-5, cache read + write"))
    store = ClickHouseUsageStore(f"chdb://{chdb_dir}", f"cost_{uuid.uuid4().hex[:10]}")
    try:
        await store.migrate()
        await store.insert([StoredUsage(event, kafka_partition=0, kafka_offset=0, kafka_topic="llm.usage")])
        rows = await store.query(f"SELECT prompt_tokens, cached_tokens, cache_write_tokens, audio_input_tokens, "
                                 f"toFloat64(cost_usd) FROM {store.database}.llm_usage FINAL")
    finally:
        store.close()
    assert len(rows) == 1 and rows[0][:4] == (3000, 2000, 500, 0)
    assert rows[0][4] == pytest.approx(usd("claude-haiku-4-5", input=500, cache_read=2000, cache_write=500,
                                           output=150), rel=0.01)


# --------------------------------------------------------------------------- pure pricing


def test_each_token_class_is_billed_once_at_its_own_rate() -> None:
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=500, cache_read_tokens=300, cache_write_tokens=200,
                       reasoning_tokens=100, audio_input_tokens=50, audio_output_tokens=40, image_input_tokens=10)
    price = Price(input_per_mtok=1, output_per_mtok=10, cache_read_per_mtok=0.1, cache_write_per_mtok=1.25,
                  reasoning_per_mtok=20, audio_input_per_mtok=5, audio_output_per_mtok=50, image_input_per_mtok=3)
    by_hand = (440 * 1 + 300 * 0.1 + 200 * 1.25 + 50 * 5 + 10 * 3 + 360 * 10 + 100 * 20 + 40 * 50) / 1e6
    assert price_cost(price, usage) == pytest.approx(by_hand, rel=1e-12)
    # Unset optional rates: input classes at the input rate, output classes at the output rate.
    assert price_cost(Price(input_per_mtok=1, output_per_mtok=10), usage) == pytest.approx(
        (1000 * 1 + 500 * 10) / 1e6, rel=1e-12)


def test_inconsistent_details_never_price_negative_tokens() -> None:
    """A provider claiming more cached tokens than prompt tokens: no negative plain-input count."""
    usage = TokenUsage(prompt_tokens=100, completion_tokens=10, cache_read_tokens=150, reasoning_tokens=30)
    assert usage.text_input_tokens == 0 and usage.text_output_tokens == 0
    assert price_cost(Price(input_per_mtok=1, output_per_mtok=1), usage) == pytest.approx((150 + 30) / 1e6)


def test_litellm_anthropic_usage_is_read_with_its_cache_tokens() -> None:
    """LiteLLM's Anthropic usage: prompt_tokens = input + cache read + cache write; both are captured."""
    from litellm.llms.anthropic.chat.transformation import AnthropicConfig

    raw = {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 900, "cache_creation_input_tokens": 50}
    usage = token_usage(AnthropicConfig().calculate_usage(raw, reasoning_content=None))
    assert usage == TokenUsage(prompt_tokens=1050, completion_tokens=20, cache_read_tokens=900,
                               cache_write_tokens=50)
    spec = ModelSpec(name="s", litellm_model="anthropic/claude-sonnet-4-5")
    assert usage_cost(spec, usage) == pytest.approx(usd("claude-sonnet-4-5", input=100, cache_read=900,
                                                        cache_write=50, output=20), rel=0.01)


def test_a_broken_streams_partial_usage_keeps_its_details() -> None:
    details = TokenUsage(prompt_tokens=2048, completion_tokens=30, cache_read_tokens=1024)
    partial = PartialUsage(2048, 30, estimated=False, details=details)
    spec = ModelSpec(name="g", litellm_model="openai/gpt-4o")
    assert usage_cost(spec, partial.usage) == pytest.approx(usd("gpt-4o", input=1024, cached_input=1024, output=30))
    assert PartialUsage(10, 5, estimated=True).usage == TokenUsage(10, 5)
    assert ProviderResponse("hi", 2048, 30, details=details).usage == details
    assert ProviderResponse("hi", 2048, 30).usage == TokenUsage(2048, 30)  # no breakdown: plain text
    with pytest.raises(ValueError, match="same prompt and completion"):
        ProviderResponse("hi", 2048, 31, details=details)


def test_the_simulator_reports_details_in_each_wire_format() -> None:
    """Parts of the totals on OpenAI's wire; beside input_tokens on Anthropic's; none unless configured."""
    details = wire.UsageDetails(cache_read=600, cache_write=300, reasoning=40)
    assert wire.openai_usage(1000, 100, details, choices=2) == {
        "prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
        "prompt_tokens_details": {"cached_tokens": 600, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 80, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0}}
    assert wire.anthropic_usage(1000, 100, details) == {
        "input_tokens": 100, "output_tokens": 100, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 600}
    assert wire.anthropic_usage(1000, 100) == {"input_tokens": 1000, "output_tokens": 100}
    assert wire.anthropic_usage(500, 1, details)["input_tokens"] == 0  # never negative


# --------------------------------------------------------------------------- the docs table


def render(rows: list[tuple[Case, float]]) -> str:
    lines = ["| Provider | Case | Usage details | Expected USD (by hand) | Recorded USD | Deviation |",
             "|---|---|---|---:|---:|---:|"]
    for case, recorded in rows:
        deviation = round((recorded - case.expected) / case.expected * 100, 2) + 0.0  # + 0.0: no "-0.00"
        lines.append(f"| {case.provider} | {case.label} | {case.usage} | {case.expected:.8f} | {recorded:.8f} "
                     f"| {deviation:+.2f}% |")
    return "\n".join([BEGIN, *lines, END])


async def all_rows(recorder: Callable[[Case], Any]) -> list[tuple[Case, float]]:
    return [(case, (await recorder(case)).cost_usd) for case in CASES]


async def test_the_docs_table_is_these_cases(recorder: Callable[[Case], Any]) -> None:
    table = render(await all_rows(recorder))
    text = DOC.read_text(encoding="utf-8")
    assert table in text, "docs/analytics.md's cost table is stale: python -m tests.unit.test_cost_accuracy --write"


async def _write() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    async with ProviderSimulator(SimulatorConfig()) as server:
        provider = LiteLLMProvider()
        async with SimulatorClient(server.url) as control:
            rows = await all_rows(lambda case: record(case, server.url, control, provider))
        await provider.aclose()
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    DOC.write_text(text[:start] + render(rows) + text[end:], encoding="utf-8")


if __name__ == "__main__" and "--write" in sys.argv:
    asyncio.run(_write())


def test_a_cached_answer_keeps_its_usage_details_so_a_shared_hit_costs_what_the_call_did() -> None:
    from pipeline.worker.answer_cache import decode_answer, encode_answer

    details = TokenUsage(prompt_tokens=2048, completion_tokens=30, cache_read_tokens=1024)
    answer = decode_answer(encode_answer(ProviderResponse("hi", 2048, 30, details=details), "acme"))
    assert answer is not None and answer.usage == details
    spec = ModelSpec(name="g", litellm_model="openai/gpt-4o")
    assert usage_cost(spec, answer.usage) == pytest.approx(usd("gpt-4o", input=1024, cached_input=1024, output=30))
    plain = decode_answer(encode_answer(ProviderResponse("hi", 10, 5), "acme"))
    assert plain is not None and plain.details is None and plain.usage == TokenUsage(10, 5)


@pytest.mark.parametrize("litellm_model", ["openai/gpt-4o", "openai/gpt-4o-mini", "openai/o3-mini",
                                           "anthropic/claude-haiku-4-5", "anthropic/claude-sonnet-4-5",
                                           "openai/text-embedding-3-small", "azure/gpt-4o"])
def test_a_flat_priced_model_costs_what_litellms_calculator_says(litellm_model: str) -> None:
    """The fast path (LiteLLM's rates, our arithmetic) is the calculator's answer, to the micro-cent."""
    from pipeline.stages.cost import _map_price
    from pipeline.transport.model_info import litellm_cost

    assert _map_price(litellm_model) is not None
    spec = ModelSpec(name="m", litellm_model=litellm_model)
    for usage in (TokenUsage(1200, 300), TokenUsage(5000, 200, cache_read_tokens=4000),
                  TokenUsage(3000, 150, cache_read_tokens=2000, cache_write_tokens=500),
                  TokenUsage(1000, 800, cache_read_tokens=512, reasoning_tokens=600)):
        assert usage_cost(spec, usage) == pytest.approx(litellm_cost(litellm_model, usage), rel=1e-9, abs=1e-12)


def test_a_model_with_long_context_tiers_is_priced_by_litellms_calculator() -> None:
    from pipeline.stages.cost import _map_price
    from pipeline.transport.model_info import litellm_cost

    model = "gemini/gemini-2.5-pro"  # its map entry has *_above_200k_tokens rates
    assert _map_price(model) is None
    spec = ModelSpec(name="g", litellm_model=model)
    long, short = TokenUsage(250_000, 100), TokenUsage(1_000, 100)
    assert usage_cost(spec, long) == litellm_cost(model, long)
    # the tier applies: a long prompt costs more per token than a short one
    assert usage_cost(spec, long) / 250_000 > usage_cost(spec, TokenUsage(1_000, 0)) / 1_000
    assert usage_cost(spec, short) == litellm_cost(model, short)
