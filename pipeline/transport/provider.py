"""The provider seam: what the call stage sends a provider and what comes back (no vendor imports).

One call to one deployment: `ProviderClient.complete()` returns a `ProviderResponse` or raises a
`ProviderError` whose `code` is one of ours, never a vendor's exception. `LiteLLMProvider`
(`transport/llm.py`) is the implementation; `MockProvider` is the shipped test double, built from
a function the way httpx's `MockTransport` is.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pipeline.contracts.models import CompletionRequest, ErrorCode, ReplyChoice, RerankResult, ToolCall


class SecretLookup(Protocol):
    """Where `{secret_name}` key references are read (the catalog's `SecretSources`)."""

    def secret(self, name: str) -> str: ...


class Endpoint(Protocol):
    """Where a call goes: what the seam reads of a catalog `Deployment` (which satisfies it)."""

    @property
    def name(self) -> str: ...
    @property
    def litellm_model(self) -> str: ...
    @property
    def api_base(self) -> str | None: ...
    @property
    def api_key_env(self) -> str | None: ...
    @property
    def drop_params(self) -> bool:
        """Let LiteLLM drop the request parameters this provider does not support (else: bad_request)."""
        ...
    @property
    def provider(self) -> str:
        """The provider this deployment calls (custom_llm_provider, else the litellm_model prefix)."""
        ...
    def call_params(self, secrets: SecretLookup | None = None) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Pass-through LiteLLM parameters with credentials resolved now, and those credentials (to
        scrub from messages); raises LookupError naming a missing reference, never a value."""
        ...
    def key_source(self) -> str | None:
        """How the key is named (`env NAME`, `file PATH`, `secret NAME`), never its value."""
        ...
    def api_key(self, secrets: SecretLookup | None = None) -> str | None:
        """The key, read now; raises LookupError naming the reference (never a value) if it is missing."""
        ...


#: Cohere bills one search unit per rerank query of up to this many documents.
DOCUMENTS_PER_SEARCH_UNIT = 100


def search_units(documents: int) -> int:
    """Search units a rerank of `documents` is billed by Cohere's rule: one per started 100, at least one."""
    return max(1, -(-documents // DOCUMENTS_PER_SEARCH_UNIT))


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """What one call is billed for, by token class, the same way for every provider.

    `prompt_tokens` is every input token billed (cache reads and writes, audio, image included,
    as OpenAI counts them; Anthropic's own `input_tokens` excludes its cache tokens, LiteLLM adds
    them back); `completion_tokens` every output token of every choice (reasoning and audio
    included). The other counts are parts of those two; what is left is plain text."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0  # OpenAI cached_tokens, Anthropic cache_read_input_tokens
    cache_write_tokens: int = 0  # Anthropic cache_creation_input_tokens
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    image_input_tokens: int = 0
    search_units: int = 0  # rerank: queries billed (Cohere: one per query of up to 100 documents)

    @property
    def text_input_tokens(self) -> int:
        """Input billed at the plain input rate (never negative, even for inconsistent counts)."""
        special = self.cache_read_tokens + self.cache_write_tokens + self.audio_input_tokens + self.image_input_tokens
        return max(self.prompt_tokens - special, 0)

    @property
    def text_output_tokens(self) -> int:
        """Output billed at the plain output rate."""
        return max(self.completion_tokens - self.reasoning_tokens - self.audio_output_tokens, 0)


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    content: str | None
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    details: TokenUsage | None = None  # the provider's breakdown of those counts, when it sent one
    tool_calls: tuple[ToolCall, ...] = ()
    embeddings: tuple[tuple[float, ...], ...] | None = None
    rerank_results: tuple[RerankResult, ...] | None = None  # rerank: documents by relevance, best first
    streamed_chunks: int = 0  # deltas handed to the caller's sink (streaming only)
    ttft_ms: float = 0.0  # time to the first delta (streaming only)
    tokens_estimated: bool = False  # counted from the text with LiteLLM's tokenizer: the provider sent none
    skipped_events: int = 0  # undecodable stream events dropped (streaming only)
    choices: tuple[ReplyChoice, ...] = ()  # every choice when the provider returned several (n > 1)
    logprobs: Any = None  # the answer's token log probabilities (JSON data), when asked for and sent

    def __post_init__(self) -> None:
        if self.details is not None and (self.details.prompt_tokens, self.details.completion_tokens) != (
                self.prompt_tokens, self.completion_tokens):
            raise ValueError("ProviderResponse: details must break down the same prompt and completion counts")

    @property
    def usage(self) -> TokenUsage:
        """The call's billed tokens by class (what `stages/cost.py` prices); plain text when the
        provider sent no breakdown."""
        return self.details or TokenUsage(self.prompt_tokens, self.completion_tokens)


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Our own time limits on a stream, on top of the HTTP client's (which only bounds each read)."""

    first_token_timeout_s: float
    idle_timeout_s: float


@dataclass(frozen=True, slots=True)
class PartialUsage:
    """What a broken stream generated before it broke: the provider bills these tokens."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool  # counted with LiteLLM's tokenizer: the provider's usage never came
    details: TokenUsage | None = None  # the provider's own breakdown, when its usage came

    @property
    def usage(self) -> TokenUsage:
        """The billed tokens by class (plain text when only counts are known)."""
        return self.details or TokenUsage(self.prompt_tokens, self.completion_tokens)


#: Receives each text delta of a streamed answer, in order; returns once it is safely handed on.
DeltaSink = Callable[[str], Awaitable[None]]


class ProviderError(Exception):
    """A failed provider call, classified. `message` never contains a secret.

    `after_output`: the stream broke after deltas were handed on: the caller has seen part of
    an answer, so whatever follows must start a new stream. `partial`: the tokens such a stream
    generated (billed by the provider although the answer is unusable)."""

    def __init__(
        self, code: ErrorCode, message: str, *, status: int | None = None, retry_after_s: float | None = None,
        after_output: bool = False, partial: PartialUsage | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        self.after_output = after_output
        self.partial = partial


class ProviderClient(Protocol):
    async def complete(
        self, spec: Endpoint, request: CompletionRequest, *, timeout_s: float, on_delta: DeltaSink | None = None,
        stream_limits: StreamLimits | None = None,
    ) -> ProviderResponse:
        """Call `spec` once. Raises ProviderError; never retries on its own. With `on_delta` (a
        streaming request) the answer's text deltas go to it as they arrive, within `stream_limits`."""
        ...


@dataclass(frozen=True, slots=True)
class MockCall:
    """What a `MockProvider` was asked: the deployment, the request, the attempt's time limit."""

    spec: Endpoint
    request: CompletionRequest
    timeout_s: float
    streamed: bool


#: Decides one call: returns the response or raises a ProviderError (may be async).
MockHandler = Callable[[MockCall], "ProviderResponse | Awaitable[ProviderResponse]"]


@dataclass
class MockProvider:
    """A provider built from a function: `MockProvider(lambda call: ProviderResponse("hi", 5, 2))`.

    Every call is recorded in `calls`. For a streamed request the answer's content goes to the
    sink as one delta (a handler that wants to stream several deltas, or to break part way, can
    read `call.streamed` and raise `ProviderError(..., after_output=True)` itself)."""

    handler: MockHandler
    calls: list[MockCall] = field(default_factory=list)

    @classmethod
    def scripted(cls, script: dict[str, list[ProviderResponse | ProviderError]]) -> MockProvider:
        """Per deployment name, outcomes used in turn (the last one repeats)."""
        def answer(call: MockCall) -> ProviderResponse:
            outcomes = script[call.spec.name]
            outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
            if isinstance(outcome, ProviderError):
                raise outcome
            return outcome

        return cls(answer)

    @property
    def called(self) -> list[str]:
        """The deployment names called, in order."""
        return [c.spec.name for c in self.calls]

    async def complete(
        self, spec: Endpoint, request: CompletionRequest, *, timeout_s: float, on_delta: DeltaSink | None = None,
        stream_limits: StreamLimits | None = None,
    ) -> ProviderResponse:
        call = MockCall(spec, request, timeout_s, on_delta is not None)
        self.calls.append(call)
        result = self.handler(call)
        response = await result if inspect.isawaitable(result) else result
        if on_delta is not None and response.content:
            await on_delta(response.content)
            response = replace(response, streamed_chunks=1)
        return response
