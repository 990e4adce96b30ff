"""The provider seam: one call to one catalog model through LiteLLM, with typed errors.

Everything LiteLLM-specific (model strings, exception classes, secrets) stays in transport/: this
module builds and makes the call and parses the answer, `llm_errors.py` turns LiteLLM's exceptions
into `ProviderError`s, `llm_stream.py` reads a streamed answer. The call stage sees only
`ProviderClient`, `ProviderResponse` and `ProviderError`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pipeline.contracts.models import (
    CompletionRequest,
    ErrorCode,
    ReplyChoice,
    RequestKind,
    ToolCall,
    ToolCallFunction,
)
from pipeline.transport.llm_errors import classify, rejected_before_sending
from pipeline.transport.provider import (
    DeltaSink,
    Endpoint,
    ProviderError,
    ProviderResponse,
    SecretLookup,
    StreamLimits,
    TokenUsage,
)

#: `classify` and `rejected_before_sending` live in `llm_errors.py`; importers of this module keep them.
__all__ = ["NO_KEY_PLACEHOLDER", "LiteLLMProvider", "classify", "parse_response", "rejected_before_sending"]

#: Sent when a catalog entry names no key (Ollama, vLLM, the simulator): some client
#: libraries refuse to send a request without one. It is not a secret.
NO_KEY_PLACEHOLDER = "no-key-configured"


class LiteLLMProvider:
    """Calls providers through `litellm.acompletion`, one attempt per call (retries are ours)."""

    def __init__(self, secrets: SecretLookup | None = None) -> None:
        self._secrets = secrets  # where `{secret_name}` key references are read, at every call
        # A worker never fetches LiteLLM's price map or Anthropic beta-header table from GitHub at
        # run time: the bundled copies serve (set either variable to False to change that).
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True")
        import litellm  # imported here: it is slow, and the rest of the package must not pay for it

        litellm.suppress_debug_info = True
        # A parameter the provider lacks fails the attempt (bad_request) unless the catalog model sets
        # drop_params, which is passed per call: LiteLLM's global switch stays off.
        litellm.drop_params = False
        # Retries are ours (stages/retry.py). LiteLLM's OpenAI embedding path reads
        # `max_retries or DEFAULT_MAX_RETRIES`, so max_retries=0 alone still retried twice.
        litellm.DEFAULT_MAX_RETRIES = 0  # type: ignore[misc]  # Final in LiteLLM's stubs, read at call time
        self._acompletion = litellm.acompletion
        self._stream_clients: dict[tuple[str, str | None, str | None], Any] = {}

    async def complete(
        self, spec: Endpoint, request: CompletionRequest, *, timeout_s: float, on_delta: DeltaSink | None = None,
        stream_limits: StreamLimits | None = None,
    ) -> ProviderResponse:
        try:
            key = spec.api_key(self._secrets)  # read now: a rotated key is used without a restart
        except LookupError as exc:  # names the reference, never a value
            raise ProviderError(ErrorCode.AUTH_ERROR, f"API key of {spec.name}: {exc.args[0]}") from None
        if spec.key_source() and not key:
            raise ProviderError(ErrorCode.AUTH_ERROR, f"API key ({spec.key_source()}) is not set for {spec.name}")
        try:
            # The deployment's pass-through parameters (api_version, organization, ...), credentials
            # resolved now; the ones the pipeline sets below win (the catalog refuses them anyway).
            params, credentials = spec.call_params(self._secrets)
        except LookupError as exc:
            raise ProviderError(ErrorCode.AUTH_ERROR, f"litellm_params of {spec.name}: {exc.args[0]}") from None
        secrets = ((key,) if key else ()) + credentials
        kwargs: dict[str, Any] = {
            **params,
            "model": spec.litellm_model,
            "api_key": key or NO_KEY_PLACEHOLDER,
            "timeout": timeout_s,
            "max_retries": 0,
            "num_retries": 0,
            "drop_params": spec.drop_params,
        }
        if spec.api_base:
            kwargs["api_base"] = spec.api_base
        if request.kind is RequestKind.EMBEDDING:
            return await self._embed(spec, request, kwargs, secrets)
        if request.kind is RequestKind.RERANK:
            return await self._rerank(spec, request, kwargs, secrets, timeout_s)
        configured_headers = kwargs.get("extra_headers")
        kwargs.update(_chat_parameters(request))
        if isinstance(configured_headers, dict):  # the deployment's headers, then ours
            kwargs["extra_headers"] = {**configured_headers, **kwargs["extra_headers"]}
        if request.extra_body:
            kwargs.update(_extra_body(spec, request.extra_body, kwargs))
        if on_delta is not None:
            # A client-level pass-through setting (organization) would be lost on our shared client.
            client = None if "organization" in params else self._stream_client(spec, key)
            if client is not None:
                kwargs["client"] = client
            limits = stream_limits or StreamLimits(timeout_s, timeout_s)
            from pipeline.transport.llm_stream import stream_completion  # it imports this module

            return await stream_completion(self._acompletion, spec, kwargs, on_delta, secrets, limits, timeout_s)
        try:
            # The HTTP client's timeout bounds each read, not the call (nor LiteLLM's own setup):
            # the attempt's limit is kept here.
            async with asyncio.timeout(timeout_s):
                response = await self._acompletion(**kwargs)
        except TimeoutError:
            raise ProviderError(ErrorCode.TIMEOUT, f"{spec.name}: no answer within {timeout_s:g} s") from None
        except Exception as exc:
            raise classify(exc, secrets) from None
        return parse_response(response, spec)

    async def aclose(self) -> None:
        """Close the streaming clients this provider opened (LiteLLM's own are LiteLLM's)."""
        clients, self._stream_clients = list(self._stream_clients.values()), {}
        for client in clients:
            await client.close()

    def _stream_client(self, spec: Endpoint, key: str | None) -> Any:
        """A client whose transport drops undecodable stream events (see stream_filter), for the
        wire formats whose LiteLLM path takes one; None leaves LiteLLM's own client."""
        provider = spec.litellm_model.partition("/")[0]
        if provider not in ("openai", "anthropic", "ollama", "ollama_chat"):
            return None
        cache_key = (provider, spec.api_base, key) if provider == "openai" else ("http", None, None)
        client = self._stream_clients.get(cache_key)
        if client is None:
            import httpx
            from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

            from pipeline.transport.stream_filter import EventFilteringTransport

            transport = EventFilteringTransport(httpx.AsyncHTTPTransport())
            if provider == "openai":
                import openai

                client = openai.AsyncOpenAI(api_key=key or NO_KEY_PLACEHOLDER, base_url=spec.api_base, max_retries=0,
                                            http_client=httpx.AsyncClient(transport=transport))
            else:
                client = AsyncHTTPHandler(transport=transport)
            self._stream_clients[cache_key] = client
        return client

    async def _embed(
        self, spec: Endpoint, request: CompletionRequest, kwargs: dict[str, Any], secrets: tuple[str, ...]
    ) -> ProviderResponse:
        import litellm

        try:
            response = await litellm.aembedding(**kwargs, input=list(request.input or ()))
        except Exception as exc:
            raise classify(exc, secrets) from None
        try:
            rows = sorted(response.data, key=lambda d: d["index"] if isinstance(d, dict) else d.index)
            vectors = tuple(tuple(float(x) for x in (d["embedding"] if isinstance(d, dict) else d.embedding))
                            for d in rows)
            usage = getattr(response, "usage", None)
            prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ProviderError(
                ErrorCode.MALFORMED_RESPONSE, f"{spec.name}: unusable embedding response: {exc}"
            ) from None
        if len(vectors) != len(request.input or ()):
            raise ProviderError(ErrorCode.MALFORMED_RESPONSE,
                                f"{spec.name}: {len(vectors)} vectors for {len(request.input or ())} inputs")
        return ProviderResponse(content=None, prompt_tokens=prompt, completion_tokens=0, embeddings=vectors)


    @staticmethod
    async def _rerank(
        spec: Endpoint, request: CompletionRequest, kwargs: dict[str, Any], secrets: tuple[str, ...], timeout_s: float
    ) -> ProviderResponse:
        """`litellm.arerank` (Cohere's wire format and its kin); the call and parsing live in `llm_rerank.py`."""
        from pipeline.transport.llm_rerank import rerank

        return await rerank(spec, request, kwargs, secrets, timeout_s)


def _chat_parameters(request: CompletionRequest) -> dict[str, Any]:
    """A chat request's part of `litellm.acompletion`'s arguments: the messages and the options
    the request set (an unset option is left to the provider's default, not sent as null)."""
    params: dict[str, Any] = {
        "messages": [m.model_dump(exclude_none=True) for m in request.messages or ()],
        "extra_headers": {"x-pipeline-request-id": request.request_id},
    }
    if request.max_tokens is not None:
        params["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.tools:
        params["tools"] = [t.model_dump(exclude_none=True) for t in request.tools]
        if request.tool_choice is not None:
            params["tool_choice"] = request.tool_choice
    if request.response_format is not None:
        params["response_format"] = request.response_format.model_dump(by_alias=True, exclude_none=True)
    params.update(sampling_parameters(request))
    return params


#: The request's OpenAI chat parameters that go to LiteLLM under their own names, when set.
SAMPLING_PARAMETERS = ("top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
                       "top_logprobs", "user", "reasoning_effort", "service_tier", "n")


def sampling_parameters(request: CompletionRequest) -> dict[str, Any]:
    """The OpenAI chat parameters the request set (none sent as null), `parallel_tool_calls` only
    with tools (`extra_body` goes by the provider: `_extra_body`)."""
    params: dict[str, Any] = {}
    for name in SAMPLING_PARAMETERS:
        value = getattr(request, name)
        if value is not None:
            params[name] = dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value
    if request.tools and request.parallel_tool_calls is not None:
        params["parallel_tool_calls"] = request.parallel_tool_calls
    return params


def _extra_body(spec: Endpoint, extra: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request's `extra_body`, as LiteLLM passes extra fields to the provider: OpenAI-compatible
    providers take it as `extra_body` (the OpenAI SDK merges it into the JSON body); for the others
    LiteLLM puts extra keyword arguments in the body, so the keys go as such, except any that
    LiteLLM reads as call settings (api_base, api_key, headers, ...): those are refused, so a
    request can never redirect the call or its key."""
    import inspect

    import litellm
    from litellm.types.utils import all_litellm_params

    provider = spec.litellm_model.partition("/")[0]
    if provider in ("openai", "azure", "text-completion-openai", *litellm.openai_compatible_providers):
        return {"extra_body": dict(extra)}
    settings = set(all_litellm_params) | set(inspect.signature(litellm.acompletion).parameters) | set(kwargs)
    refused = sorted(k for k in extra if k in settings)
    if refused:
        raise ProviderError(ErrorCode.BAD_REQUEST, f"{spec.name}: extra_body may not set {', '.join(refused)} "
                                                   f"(call settings or fields the pipeline sets itself)")
    return dict(extra)


def _tool_calls(choice: Any) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(id=str(c.id), function=ToolCallFunction(name=c.function.name, arguments=c.function.arguments or "{}"))
        for c in (getattr(choice.message, "tool_calls", None) or ())
    )


def _logprobs(choice: Any) -> Any:
    """A choice's log probabilities as JSON data, or None when the provider sent none."""
    found = getattr(choice, "logprobs", None)
    if found is None:
        return None
    dump = getattr(found, "model_dump", None)
    return dump(mode="json", exclude_none=True) if dump is not None else found


def _choices(response: Any) -> tuple[ReplyChoice, ...]:
    """Every choice, when the provider returned several (a request with n > 1); else none."""
    if len(response.choices) < 2:
        return ()
    return tuple(ReplyChoice(index=i, content=c.message.content, tool_calls=list(_tool_calls(c)) or None,
                             finish_reason=c.finish_reason, logprobs=_logprobs(c))
                 for i, c in enumerate(response.choices))


def _count(source: Any, *names: str) -> int:
    """The first of `names` that `source` sets to a positive count (LiteLLM's usage objects leave
    unreported details as None or 0; a negative or non-number count is treated as unreported)."""
    for name in names:
        value = getattr(source, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return int(value)
    return 0


def token_usage(usage: Any) -> TokenUsage:
    """LiteLLM's `Usage` by token class. LiteLLM normalises the providers: its `prompt_tokens`
    includes cached tokens (OpenAI's do; for Anthropic it adds `cache_read_input_tokens` and
    `cache_creation_input_tokens` to `input_tokens`), and its `completion_tokens` covers every
    choice, reasoning included."""
    prompt = getattr(usage, "prompt_tokens_details", None)
    completion = getattr(usage, "completion_tokens_details", None)
    return TokenUsage(
        prompt_tokens=_count(usage, "prompt_tokens"),
        completion_tokens=_count(usage, "completion_tokens"),
        cache_read_tokens=_count(prompt, "cached_tokens") or _count(usage, "cache_read_input_tokens"),
        cache_write_tokens=(_count(prompt, "cache_write_tokens", "cache_creation_tokens")
                            or _count(usage, "cache_creation_input_tokens")),
        reasoning_tokens=_count(completion, "reasoning_tokens"),
        audio_input_tokens=_count(prompt, "audio_tokens"),
        audio_output_tokens=_count(completion, "audio_tokens"),
        image_input_tokens=_count(prompt, "image_tokens"),
    )


def parse_response(response: Any, spec: Endpoint) -> ProviderResponse:
    """The first choice as the answer (all of them in `choices` when there are several), and the
    usage, which covers every choice."""
    try:
        choice = response.choices[0]
        if response.usage is None:  # billed, but by how much is unknown: not an answer to book at 0
            raise ValueError("no usage")
        usage = token_usage(response.usage)
        return ProviderResponse(
            content=choice.message.content,
            tool_calls=_tool_calls(choice),
            choices=_choices(response),
            logprobs=_logprobs(choice),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            finish_reason=choice.finish_reason,
            details=usage,
        )
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        raise ProviderError(ErrorCode.MALFORMED_RESPONSE, f"{spec.name}: unusable response: {exc}") from None
