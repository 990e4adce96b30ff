"""Streams that break, stall or misbehave, on all three wire formats the simulator speaks.

Real Apache Kafka, the worker, LiteLLM's provider code against the simulator, and the SDK's
`PipelineClient.stream()`: whatever goes wrong after the first chunk, the caller ends with one
complete answer (the text after the last `StreamRestart` is exactly the reply's content), and
the broken attempts' delivered tokens are billed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from pipeline.catalog import load_catalog
from pipeline.client import PipelineClient, StreamRestart
from pipeline.contracts.models import CompletionChunk, CompletionReply, CompletionRequest, ErrorCode
from tests.integration.kafka_helpers import eventually

pytestmark = pytest.mark.kafka

SIM = "${PIPELINE_SIMULATOR_URL}"
MODELS = f"""
defaults: {{first_token_timeout_s: 3.0, stream_idle_timeout_s: 1.0, allowed_fails: 1000}}
models:
  via-openai:    {{litellm_model: openai/gpt-4o-mini, api_base: "{SIM}/v1", context_window: 128000}}
  via-anthropic: {{litellm_model: anthropic/claude-haiku-4-5, api_base: "{SIM}", context_window: 200000}}
  via-ollama:    {{litellm_model: ollama_chat/llama3.1, api_base: "{SIM}", context_window: 128000,
                   price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
  fallback:      {{litellm_model: openai/gpt-4o, api_base: "{SIM}/v1", context_window: 128000}}
"""
ROUTES = "routes:\n" + "".join(f"  {api}: {{candidates: [via-{api}, fallback]}}\n"
                               for api in ("openai", "anthropic", "ollama"))
#: The model name each primary sends on the wire (what the simulator's fault rules match).
WIRE_MODEL = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "ollama": "llama3.1"}
APIS = pytest.mark.parametrize("api", list(WIRE_MODEL))


@pytest.fixture
async def worker(settings, start_worker, sim, tmp_path: Path) -> Any:
    await sim.configure(stream_chunk_words=2, stream_chunk_delay_ms=5)
    (tmp_path / "models.yaml").write_text(MODELS)
    (tmp_path / "routing.yaml").write_text(ROUTES)
    return await start_worker(catalog=load_catalog(tmp_path))


async def streamed(settings: Any, api: str, request_id: str) -> tuple[CompletionReply, str, int, float]:
    """(reply, text after the last restart, restarts seen, seconds) of one streamed request."""
    request = CompletionRequest(request_id=request_id, task_type=api,
                                messages=[{"role": "user", "content": "tell me a story"}])
    t0 = time.perf_counter()
    async with PipelineClient(settings) as client:
        events = [event async for event in client.stream(request, timeout=30)]
    elapsed = time.perf_counter() - t0
    reply = events[-1]
    assert isinstance(reply, CompletionReply)
    restarts = [i for i, e in enumerate(events) if isinstance(e, StreamRestart)]
    after = events[restarts[-1] + 1:] if restarts else events
    text = "".join(e.delta for e in after if isinstance(e, CompletionChunk))
    assert not [e for e in after if isinstance(e, CompletionChunk) and e.stream_id != reply.stream_id]
    return reply, text, len(restarts), elapsed


async def usage_rows(worker: Any, request_id: str, count: int) -> list[tuple]:
    db = worker.settings.clickhouse_database

    async def rows() -> list[tuple] | None:
        found = await worker.store.query(
            f"SELECT model, status, error_code, completion_tokens, cost_usd, tokens_estimated "
            f"FROM {db}.llm_usage FINAL WHERE request_id = %(r)s ORDER BY attempt", {"r": request_id})
        return found if len(found) >= count else None

    return await eventually(rows, timeout_s=30)


@APIS
async def test_a_cut_stream_restarts_and_the_sdk_returns_exactly_the_fallbacks_answer(
        settings, worker, sim, api) -> None:
    await sim.set_rules([{"model": WIRE_MODEL[api], "fault": "stream_cut"}])
    reply, text, restarts, _ = await streamed(settings, api, f"cut-{api}")
    assert reply.status == "ok" and reply.model == "fallback", reply.error
    assert text == reply.content and "gpt-4o to" in text  # the fallback's whole answer, nothing of the cut one
    assert restarts == reply.stream_restarts == 2  # each primary attempt streamed part of an answer
    assert [(a.model, a.error_code) for a in reply.attempts] == [
        (f"via-{api}", ErrorCode.STREAM_INTERRUPTED), (f"via-{api}", ErrorCode.STREAM_INTERRUPTED), ("fallback", None)]
    rows = await usage_rows(worker, f"cut-{api}", 3)
    for model, status, code, completion, cost, estimated in rows[:2]:  # paid for, although it failed
        assert (model, status, code, estimated) == (f"via-{api}", "error", "stream_interrupted", True)
        assert completion > 0 and cost > 0
    assert reply.cost_usd == pytest.approx(sum(float(r[4]) for r in rows), rel=1e-6)


@APIS
async def test_a_stalled_stream_fails_over_after_the_idle_timeout(settings, worker, sim, api) -> None:
    await sim.set_rules([{"model": WIRE_MODEL[api], "fault": "stream_stall", "hang_s": 20}])
    reply, text, restarts, elapsed = await streamed(settings, api, f"stall-{api}")
    assert reply.status == "ok" and reply.model == "fallback" and text == reply.content
    assert restarts == 1
    assert [(a.model, a.error_code) for a in reply.attempts] == [(f"via-{api}", ErrorCode.TIMEOUT),
                                                                   ("fallback", None)]  # a timeout is not retried
    assert elapsed < 10  # 1 s of silence, not the 20 s stall
    rows = await usage_rows(worker, f"stall-{api}", 2)
    assert rows[0][3] > 0 and rows[0][4] > 0  # the half answer it streamed is billed


@APIS
async def test_a_slow_first_token_fails_over_after_first_token_timeout(settings, worker, sim, api) -> None:
    await sim.set_rules([{"model": WIRE_MODEL[api], "fault": "slow_first_token", "hang_s": 20}])
    reply, text, restarts, elapsed = await streamed(settings, api, f"slow-{api}")
    assert reply.status == "ok" and reply.model == "fallback" and text == reply.content
    assert restarts == 0 and elapsed < 10  # nothing was streamed before the failover
    assert [(a.model, a.error_code) for a in reply.attempts] == [(f"via-{api}", ErrorCode.TIMEOUT),
                                                                   ("fallback", None)]
    # One silent call cools the deployment down: the next request goes straight to the fallback.
    again, _, _, _ = await streamed(settings, api, f"slow-{api}-2")
    assert [a.model for a in again.attempts] == ["fallback"]
    assert any(s.model == f"via-{api}" and s.reason == "cooling_down" for s in again.routing.skipped)


@APIS
async def test_a_stream_without_its_terminator_finishes_promptly_with_usage(settings, worker, sim, api) -> None:
    await sim.set_rules([{"model": WIRE_MODEL[api], "fault": "stream_no_done", "hang_s": 20}])
    reply, text, restarts, elapsed = await streamed(settings, api, f"nodone-{api}")
    assert reply.status == "ok" and reply.model == f"via-{api}" and text == reply.content and restarts == 0
    assert elapsed < 8  # not the 20 s the connection stays open
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0 and reply.cost_usd > 0


async def complete_answer(settings: Any, api: str) -> str:
    reply, _, _, _ = await streamed(settings, api, f"clean-{api}")
    assert reply.status == "ok" and reply.model == f"via-{api}" and reply.content
    return reply.content


@APIS
async def test_one_malformed_chunk_is_skipped_counted_and_the_whole_answer_kept(settings, worker, sim, api) -> None:
    whole = await complete_answer(settings, api)
    skipped_before = REGISTRY.get_sample_value("llm_stream_events_skipped_total", {"deployment": f"via-{api}"}) or 0
    await sim.set_rules([{"model": WIRE_MODEL[api], "fault": "stream_malformed_chunk"}])
    reply, text, restarts, _ = await streamed(settings, api, f"bad-chunk-{api}")
    assert reply.status == "ok" and reply.model == f"via-{api}" and text == reply.content == whole
    assert restarts == 0 and len(reply.attempts) == 1  # skipped, not retried
    skipped = REGISTRY.get_sample_value("llm_stream_events_skipped_total", {"deployment": f"via-{api}"})
    assert skipped == skipped_before + 1
