"""Integration: the simulator on a real port, driven through LiteLLM's real provider code."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import litellm
import pytest

import pipeline  # noqa: F401  (sets LITELLM_LOCAL_MODEL_COST_MAP before litellm is imported)
from pipeline.simulator import (
    FaultBook,
    FaultRule,
    ProviderSimulator,
    SimulatorClient,
    SimulatorConfig,
)
from pipeline.simulator.client import SyncSimulatorClient

KEY = "sk-sim-SECRET-do-not-log"
SEED = 11
# provider -> (LiteLLM model string, api_base suffix, model name on the wire)
PROVIDERS: dict[str, tuple[str, str, str]] = {
    "openai": ("openai/gpt-4o-mini", "/v1", "gpt-4o-mini"),
    "anthropic": ("anthropic/claude-3-5-haiku-20241022", "", "claude-3-5-haiku-20241022"),
    "ollama": ("ollama/llama3.1", "", "llama3.1"),
    "ollama_chat": ("ollama_chat/llama3.1", "", "llama3.1"),
}
ALL = tuple(PROVIDERS)


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[ProviderSimulator]:
    async with ProviderSimulator(SimulatorConfig(seed=SEED)) as server:
        yield server


@pytest.fixture
async def ctl(sim: ProviderSimulator) -> AsyncIterator[SimulatorClient]:
    async with SimulatorClient(sim.url) as client:
        await client.clear_rules()
        await client.clear_requests()
        await client.configure(latency_ms=0, latency_jitter_ms=0, completion_tokens=16, prompt_tokens=None)
        yield client


async def complete(sim: ProviderSimulator, provider: str, text: str = "hello simulator", **kw: Any) -> Any:
    model, suffix, _ = PROVIDERS[provider]
    return await litellm.acompletion(
        model=model, api_base=sim.url + suffix, api_key=KEY, max_retries=0, num_retries=0,
        messages=[{"role": "user", "content": text}], **kw,
    )


@pytest.mark.parametrize("provider", ALL)
async def test_success_content_and_usage(sim: ProviderSimulator, ctl: SimulatorClient, provider: str) -> None:
    response = await complete(sim, provider, text="what is two plus two")
    (entry,) = await ctl.requests()
    content = response.choices[0].message.content
    assert content.startswith(f"sim reply from {PROVIDERS[provider][2]} to:") and "two plus two" in content
    assert len(content.split()) == 16
    assert response.usage.prompt_tokens == entry["prompt_tokens"] >= 1
    assert response.usage.completion_tokens == entry["completion_tokens"] == 16
    assert (entry["outcome"], entry["status"], entry["model"]) == ("ok", 200, PROVIDERS[provider][2])


@pytest.mark.parametrize("provider", ALL)
async def test_configured_token_counts(sim: ProviderSimulator, ctl: SimulatorClient, provider: str) -> None:
    await ctl.configure(prompt_tokens=123, completion_tokens=7)
    response = await complete(sim, provider)
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (123, 7)


R, I, S, B, CW, AU, BR, CP, AC = (
    litellm.RateLimitError, litellm.InternalServerError, litellm.ServiceUnavailableError, litellm.BadGatewayError,
    litellm.ContextWindowExceededError, litellm.AuthenticationError, litellm.BadRequestError,
    litellm.ContentPolicyViolationError, litellm.APIConnectionError,
)
# fault spec -> exception per provider (openai, anthropic, ollama, ollama_chat), as observed with LiteLLM 1.106.
# Ollama: LiteLLM has no context-window / content-policy mapping, so those surface as plain BadRequestError.
# Malformed JSON: the OpenAI SDK path reports InternalServerError, the httpx-based providers APIConnectionError.
EXPECTED: dict[str, tuple[type[Exception], ...]] = {
    "rate_limit": (R, R, R, R),
    "server_error": (I, I, I, I),
    "server_error:503": (S, S, S, S),
    "server_error:502": (B, B, B, B),
    "malformed": (I, AC, AC, AC),
    "context_length": (CW, CW, BR, BR),
    "auth": (AU, AU, AU, AU),
    "bad_request": (BR, BR, BR, BR),
    "content_policy": (CP, CP, BR, BR),
}
CASES = [(spec, p, exc) for spec, excs in EXPECTED.items() for p, exc in zip(ALL, excs, strict=True)]


@pytest.mark.parametrize(("spec", "provider", "expected"), CASES, ids=[f"{s}-{p}" for s, p, _ in CASES])
async def test_fault_maps_to_litellm_exception(
    sim: ProviderSimulator, ctl: SimulatorClient, spec: str, provider: str, expected: type[Exception]
) -> None:
    fault, _, status = spec.partition(":")
    rule = FaultRule(fault=fault, status=int(status or 500), retry_after_s=2.5)  # type: ignore[arg-type]
    await ctl.set_rules([rule])
    with pytest.raises(Exception) as info:
        await complete(sim, provider)
    assert type(info.value) is expected, repr(info.value)
    (entry,) = await ctl.requests()
    assert entry["outcome"] == fault
    if fault == "rate_limit":
        assert info.value.litellm_response_headers["retry-after"] == "2.5"  # type: ignore[attr-defined]


@pytest.mark.parametrize("provider", ALL)
async def test_timeout_fault(sim: ProviderSimulator, ctl: SimulatorClient, provider: str) -> None:
    await ctl.set_rules([FaultRule(fault="timeout", hang_s=5)])
    started = time.perf_counter()
    with pytest.raises(litellm.Timeout):
        await complete(sim, provider, timeout=0.5)
    assert time.perf_counter() - started < 2
    (entry,) = await ctl.requests()
    assert entry["outcome"] == "timeout" and entry["latency_ms"] >= 5000


async def test_timeout_fault_answers_after_hang(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    await ctl.set_rules([FaultRule(fault="timeout", hang_s=0.2)])
    response = await complete(sim, "ollama_chat", timeout=5)
    assert response.usage.completion_tokens == 16


async def test_times_budget(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    await ctl.set_rules([FaultRule(model="gpt-*", fault="server_error", times=2)])
    for _ in range(2):
        with pytest.raises(litellm.InternalServerError):
            await complete(sim, "openai")
    await complete(sim, "openai")
    await complete(sim, "anthropic")  # glob does not match: never faulted
    assert [e["outcome"] for e in await ctl.requests()] == ["server_error", "server_error", "ok", "ok"]
    assert (await ctl.rules())[0]["fired"] == 2


async def test_probability_is_reproducible(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    rule = FaultRule(fault="server_error", probability=0.5)
    await ctl.set_rules([rule])  # replacing rules re-seeds the server's RNG
    observed = []
    for _ in range(16):
        try:
            await complete(sim, "ollama_chat")
            observed.append("ok")
        except litellm.InternalServerError:
            observed.append("server_error")
    book = FaultBook([rule], seed=SEED)
    assert observed == [book.decide("llama3.1", "ollama").outcome for _ in range(16)]
    assert 0 < observed.count("server_error") < 16


async def test_latency_config_and_latency_only_rule(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    await ctl.configure(latency_ms=100, latency_jitter_ms=50)
    await ctl.add_rule(FaultRule(model="llama*", latency_ms=100))
    started = time.perf_counter()
    await complete(sim, "ollama_chat")
    assert time.perf_counter() - started >= 0.2
    (entry,) = await ctl.requests()
    assert entry["outcome"] == "ok" and 200 <= entry["latency_ms"] <= 250


async def test_request_log_headers_user_and_no_secrets(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    headers = {"x-pipeline-request-id": "req-42"}
    await complete(sim, "openai", user="u-1", extra_headers=headers)
    await complete(sim, "anthropic", extra_headers=headers)
    await ctl.set_rules([FaultRule(fault="auth")])
    with pytest.raises(litellm.AuthenticationError):
        await complete(sim, "ollama_chat", extra_headers=headers)
    log = await ctl.requests()
    assert [e["seq"] for e in log] == sorted(e["seq"] for e in log) and len(log) == 3
    assert all(e["headers_subset"]["x-pipeline-request-id"] == "req-42" for e in log)
    assert all(e["key_present"] for e in log)
    assert log[0]["user"] == "u-1"
    assert log[1]["headers_subset"]["anthropic-version"]
    assert KEY not in json.dumps(log)
    assert await ctl.requests(since=log[1]["seq"]) == log[2:]
    stats = await ctl.stats()
    assert stats["total"] == 3 and stats["by_model"]["llama3.1"] == {"auth": 1}


async def test_control_api_validation_and_listing(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as http:
        assert (await http.get("/health")).json()["status"] == "ok"
        assert "gpt-4o-mini" in [m["id"] for m in (await http.get("/v1/models")).json()["data"]]
        assert "llama3.1" in [m["name"] for m in (await http.get("/api/tags")).json()["models"]]
        assert (await http.put("/_sim/rules", json={"rules": [{"fault": "nope"}]})).status_code == 400
        assert (await http.get("/_sim/requests", params={"since": "x"})).status_code == 400
    with pytest.raises(httpx.HTTPStatusError):
        await ctl.configure(seed=3)
    with pytest.raises(httpx.HTTPStatusError):
        await ctl.configure(completion_tokens=0)


def _sync_roundtrip(url: str) -> list[dict[str, Any]]:
    with SyncSimulatorClient(url) as client:
        client.set_rules([{"model": "x*", "fault": "auth", "times": 1}])
        client.add_rule(FaultRule(fault="rate_limit"))
        client.configure(latency_ms=0)
        assert client.stats()["total"] == 0
        rules = client.rules()
        client.clear_rules()
        return rules


async def test_sync_client(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    rules = await asyncio.to_thread(_sync_roundtrip, sim.url)
    assert [r["fault"] for r in rules] == ["auth", "rate_limit"]
    assert await ctl.rules() == []


async def test_serve_prints_url_and_stops_on_sigterm() -> None:
    code = "from pipeline.simulator import serve, SimulatorConfig; serve('127.0.0.1', 0, SimulatorConfig())"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        async with httpx.AsyncClient() as http:
            assert (await http.get(line.rsplit(" ", 1)[1] + "/health")).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
