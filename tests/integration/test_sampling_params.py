"""OpenAI chat parameters end to end: a request with `top_p`, `stop`, `seed` and `n: 2` through
real Apache Kafka and the worker reaches the provider simulator (OpenAI wire format) with those
parameters, and its reply, usage event and usage row are priced for both choices. An unsupported
parameter ends as one bad_request attempt."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.catalog import load_catalog
from pipeline.contracts.models import CompletionReply, ErrorCode, UsageEvent
from pipeline.stages.cost import call_cost
from tests.integration.kafka_helpers import encode, eventually, produce, read_topic, request_doc

pytestmark = pytest.mark.kafka

COMPLETION_TOKENS = 10


async def replies(settings: Any, count: int) -> dict[str, CompletionReply]:
    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=count, timeout_s=30)
    return {r.request_id: r for r in (CompletionReply.model_validate(json.loads(x.value)) for x in records)}


async def test_sampling_parameters_reach_the_provider_and_n_choices_are_priced(settings, start_worker, sim) -> None:
    await sim.configure(completion_tokens=COMPLETION_TOKENS)
    worker = await start_worker()
    doc = request_doc("sampling-n2", "summarize", model="sim-gpt-4o-mini", top_p=0.7, stop=["END", "STOP"],
                      seed=1234, n=2, max_tokens=50)
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests, [(b"sampling-n2", encode(doc))])
    reply = (await replies(settings, 1))["sampling-n2"]
    assert reply.status == "ok", reply.error

    (entry,) = [e for e in await sim.requests() if e["headers_subset"].get("x-pipeline-request-id") == "sampling-n2"]
    assert entry["api"] == "openai" and entry["model"] == "gpt-4o-mini"
    assert {k: entry["params"].get(k) for k in ("top_p", "stop", "seed", "n", "max_tokens")} == {
        "top_p": 0.7, "stop": ["END", "STOP"], "seed": 1234, "n": 2, "max_tokens": 50}
    assert entry["completion_tokens"] == 2 * COMPLETION_TOKENS

    assert reply.choices is not None and [c.index for c in reply.choices] == [0, 1]
    assert reply.content == reply.choices[0].content and reply.choices[1].content != reply.content
    assert reply.usage.completion_tokens == 2 * COMPLETION_TOKENS
    spec = load_catalog(settings.config_dir).models["sim-gpt-4o-mini"]
    priced = call_cost(spec, reply.usage.prompt_tokens, 2 * COMPLETION_TOKENS)
    assert priced > 0 and reply.cost_usd == pytest.approx(priced)

    usage = await read_topic(settings.kafka_bootstrap_servers, settings.topic_usage, count=1, timeout_s=30)
    (event,) = [e for e in (UsageEvent.model_validate(json.loads(r.value)) for r in usage)
                if e.request_id == "sampling-n2"]
    assert event.completion_tokens == 2 * COMPLETION_TOKENS and event.cost_usd == pytest.approx(reply.cost_usd)

    db = worker.settings.clickhouse_database
    rows = await eventually(lambda: worker.store.query(
        f"SELECT completion_tokens, cost_usd FROM {db}.llm_usage FINAL WHERE request_id = %(r)s",
        {"r": "sampling-n2"}), timeout_s=30)
    ((completion, cost),) = rows
    assert completion == 2 * COMPLETION_TOKENS and float(cost) == pytest.approx(reply.cost_usd, rel=1e-6)


async def test_an_unsupported_parameter_is_one_bad_request_attempt(settings, start_worker, sim) -> None:
    """Anthropic has no `seed` and the catalog's sim-claude-haiku does not set drop_params."""
    await start_worker()
    doc = request_doc("sampling-unsupported", "extract", model="sim-claude-haiku", seed=5)
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests, [(b"sampling-unsupported", encode(doc))])
    reply = (await replies(settings, 1))["sampling-unsupported"]
    assert reply.status == "error" and reply.error is not None and reply.error.code is ErrorCode.BAD_REQUEST
    assert "seed" in reply.error.message and "drop_params" in reply.error.message
    assert len(reply.attempts) == 1
    assert not [e for e in await sim.requests() if e["model"] == "claude-haiku-4-5"]  # nothing was sent
