"""The simulator's Azure OpenAI wire format, driven through LiteLLM's real ``azure/`` provider code."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import litellm
import pytest

from pipeline.catalog.models import ModelSpec, Price
from pipeline.contracts.models import CompletionRequest, ErrorCode
from pipeline.simulator import FaultRule, ProviderSimulator, SimulatorClient, SimulatorConfig
from pipeline.transport.llm import LiteLLMProvider, classify
from pipeline.transport.provider import ProviderError

KEY = "azure-sim-SECRET-key-0123456789"
API_VERSION = "2024-10-21"
DEPLOYMENT = "gpt4o-prod-eu"


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[ProviderSimulator]:
    async with ProviderSimulator(SimulatorConfig(seed=5)) as server:
        yield server


@pytest.fixture
async def ctl(sim: ProviderSimulator) -> AsyncIterator[SimulatorClient]:
    async with SimulatorClient(sim.url) as client:
        await client.clear_rules()
        await client.clear_requests()
        await client.configure(api_keys={}, completion_tokens=16, prompt_tokens=None)
        yield client


async def complete(sim: ProviderSimulator, deployment: str = DEPLOYMENT, **kw: Any) -> Any:
    return await litellm.acompletion(
        model=f"azure/{deployment}", api_base=sim.url, api_version=API_VERSION, api_key=KEY, max_retries=0,
        num_retries=0, messages=[{"role": "user", "content": "hello azure"}], **kw,
    )


async def test_chat_reaches_the_deployment_path_with_api_version_and_api_key(
    sim: ProviderSimulator, ctl: SimulatorClient
) -> None:
    await ctl.configure(api_keys={DEPLOYMENT: [hashlib.sha256(KEY.encode()).hexdigest()]})
    response = await complete(sim, temperature=0.2, seed=7)
    (entry,) = await ctl.requests()
    assert response.model == DEPLOYMENT
    assert response.choices[0].message.content.startswith(f"sim reply from {DEPLOYMENT} to: hello azure")
    assert response.usage.completion_tokens == entry["completion_tokens"] == 16
    assert entry["path"] == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert (entry["api"], entry["deployment"], entry["api_version"]) == ("azure", DEPLOYMENT, API_VERSION)
    assert (entry["key_header"], entry["auth"]) == ("api-key", "passed")  # the key came in Azure's header
    assert entry["params"] == {"temperature": 0.2, "seed": 7}
    assert KEY not in json.dumps(entry)


async def test_wrong_key_is_azures_401(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    await ctl.configure(api_keys={DEPLOYMENT: [hashlib.sha256(b"another key").hexdigest()]})
    with pytest.raises(litellm.AuthenticationError) as info:
        await complete(sim)
    assert classify(info.value, (KEY,)).code is ErrorCode.AUTH_ERROR
    assert KEY not in str(info.value)
    (entry,) = await ctl.requests()
    assert (entry["auth"], entry["status"]) == ("rejected", 401)


async def test_streamed_chat(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    stream = await complete(sim, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith(f"sim reply from {DEPLOYMENT} to: hello azure") and len(text.split()) == 16
    assert [c.usage.completion_tokens for c in chunks if getattr(c, "usage", None)][-1] == 16
    (entry,) = await ctl.requests()
    assert (entry["api"], entry["stream"], entry["api_version"]) == ("azure", True, API_VERSION)


async def test_embeddings(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    response = await litellm.aembedding(model="azure/emb-small", api_base=sim.url, api_version=API_VERSION,
                                        api_key=KEY, input=["one", "two"], max_retries=0)
    assert [len(item["embedding"]) for item in response.data] == [8, 8]
    (entry,) = await ctl.requests()
    assert (entry["api"], entry["kind"], entry["deployment"]) == ("azure", "embedding", "emb-small")
    assert entry["path"] == "/openai/deployments/emb-small/embeddings"


async def test_missing_api_version_is_refused_in_azures_shape(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as http:
        missing = await http.post(f"/openai/deployments/{DEPLOYMENT}/chat/completions", headers={"api-key": KEY},
                                  json={"messages": [{"role": "user", "content": "hi"}]})
        bearer = await http.post(f"/openai/deployments/{DEPLOYMENT}/chat/completions",
                                 params={"api-version": API_VERSION}, headers={"authorization": f"Bearer {KEY}"},
                                 json={"messages": [{"role": "user", "content": "hi"}]})
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "MissingApiVersionParameter"
    assert "api-version" in missing.json()["error"]["message"]
    assert bearer.status_code == 200 and bearer.json()["model"] == DEPLOYMENT  # an Entra ID token works too
    (entry,) = await ctl.requests()  # the refused call never reached the deployment
    assert entry["key_header"] == "authorization"


E = ErrorCode
FAULTS: dict[str, tuple[type[Exception], ErrorCode]] = {
    "rate_limit": (litellm.RateLimitError, E.RATE_LIMITED),
    "auth": (litellm.AuthenticationError, E.AUTH_ERROR),
    "server_error": (litellm.InternalServerError, E.SERVER_ERROR),
    "context_length": (litellm.ContextWindowExceededError, E.CONTEXT_WINDOW_EXCEEDED),
    "content_policy": (litellm.ContentPolicyViolationError, E.CONTENT_POLICY),
    "bad_request": (litellm.BadRequestError, E.BAD_REQUEST),
}


@pytest.mark.parametrize("fault", FAULTS)
async def test_azure_fault_rule_gives_litellms_exception_class(
    sim: ProviderSimulator, ctl: SimulatorClient, fault: str
) -> None:
    exc_type, code = FAULTS[fault]
    await ctl.set_rules([FaultRule(api="azure", model=DEPLOYMENT, fault=fault, retry_after_s=3)])  # type: ignore[arg-type]
    with pytest.raises(exc_type) as info:
        await complete(sim)
    error = classify(info.value, (KEY,))
    assert error.code is code, f"{type(info.value).__name__}: {info.value}"
    assert KEY not in error.message
    (entry,) = await ctl.requests()
    assert (entry["outcome"], entry["status"]) == (fault, error.status)
    if fault == "rate_limit":
        assert error.retry_after_s == 3


async def test_an_azure_rule_leaves_openai_alone(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    await ctl.set_rules([FaultRule(api="azure", fault="server_error")])
    openai = await litellm.acompletion(model=f"openai/{DEPLOYMENT}", api_base=sim.url + "/v1", api_key=KEY,
                                       messages=[{"role": "user", "content": "hi"}], max_retries=0)
    assert openai.choices[0].message.content
    with pytest.raises(litellm.InternalServerError):
        await complete(sim)
    assert [e["outcome"] for e in await ctl.requests()] == ["ok", "server_error"]


# --------------------------------------------------------------------------- through the provider seam


def azure_spec(monkeypatch: pytest.MonkeyPatch, sim: ProviderSimulator, litellm_model: str, **params: Any) -> Any:
    """A catalog model on an Azure deployment: the api_version rides in litellm_params."""
    monkeypatch.setenv("AZURE_SIM_TEST_KEY", KEY)
    return ModelSpec(name="azure-gpt", litellm_model=litellm_model, api_base=sim.url, api_key_env="AZURE_SIM_TEST_KEY",
                     price=Price(input_per_mtok=1, output_per_mtok=2), litellm_params=params)


async def test_a_catalog_azure_deployment_through_the_provider_seam(
    sim: ProviderSimulator, ctl: SimulatorClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = azure_spec(monkeypatch, sim, f"azure/{DEPLOYMENT}", api_version=API_VERSION)
    await ctl.configure(api_keys={DEPLOYMENT: [hashlib.sha256(KEY.encode()).hexdigest()]})
    provider = LiteLLMProvider()
    try:
        chat = CompletionRequest.model_validate({"request_id": "az-1", "task_type": "t", "seed": 3,
                                                 "messages": [{"role": "user", "content": "hello azure"}]})
        plain = await provider.complete(spec.deployments[0], chat, timeout_s=5)
        deltas: list[str] = []

        async def sink(delta: str) -> None:
            deltas.append(delta)

        streamed = await provider.complete(spec.deployments[0], chat, timeout_s=5, on_delta=sink)
    finally:
        await provider.aclose()
    assert plain.content is not None and plain.content.startswith(f"sim reply from {DEPLOYMENT} to: hello azure")
    assert plain.completion_tokens == 16 and "".join(deltas) == streamed.content == plain.content
    log = await ctl.requests()
    assert [(e["api"], e["api_version"], e["key_header"], e["auth"], e["stream"]) for e in log] == [
        ("azure", API_VERSION, "api-key", "passed", False), ("azure", API_VERSION, "api-key", "passed", True)]
    assert log[0]["params"]["seed"] == 3 and log[0]["headers_subset"]["x-pipeline-request-id"] == "az-1"
    assert KEY not in json.dumps(log)


async def test_an_azure_fault_through_the_seam_is_classified_without_the_key(
    sim: ProviderSimulator, ctl: SimulatorClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = azure_spec(monkeypatch, sim, f"azure/{DEPLOYMENT}", api_version=API_VERSION)
    await ctl.set_rules([FaultRule(api="azure", fault="rate_limit", retry_after_s=4)])
    provider = LiteLLMProvider()
    chat = CompletionRequest.model_validate({"request_id": "az-2", "task_type": "t",
                                             "messages": [{"role": "user", "content": "hi"}]})
    try:
        with pytest.raises(ProviderError) as info:
            await provider.complete(spec.deployments[0], chat, timeout_s=5)
    finally:
        await provider.aclose()
    assert (info.value.code, info.value.status, info.value.retry_after_s) == (ErrorCode.RATE_LIMITED, 429, 4)
    assert KEY not in info.value.message and API_VERSION in info.value.message  # Azure's own text, quoted


async def test_the_v1_api_takes_the_deployment_from_the_body(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    response = await litellm.acompletion(model=f"azure/{DEPLOYMENT}", api_base=sim.url, api_version="v1", api_key=KEY,
                                         messages=[{"role": "user", "content": "hello v1"}], max_retries=0)
    assert response.choices[0].message.content.startswith(f"sim reply from {DEPLOYMENT} to: hello v1")
    (entry,) = await ctl.requests()
    assert (entry["path"], entry["api"], entry["deployment"], entry["api_version"]) == (
        "/openai/v1/chat/completions", "azure", DEPLOYMENT, None)
